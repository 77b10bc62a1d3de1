// The one call to the backend. Same origin by default (nginx proxies /chat); VITE_BACKEND_URL at build
// time points the UI at another origin instead (the backend's CORS must then allow this one).
const BACKEND_URL = (import.meta.env.VITE_BACKEND_URL || "").replace(/\/$/, "");

export class ChatError extends Error {}

export async function sendMessage(message, { signal } = {}) {
  let response;
  try {
    response = await fetch(`${BACKEND_URL}/chat`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ message }),
      signal,
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ChatError("The chat service is unreachable. Check your connection and try again.");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null; // a proxy's HTML error page, or nothing at all
  }
  if (!response.ok) {
    const detail = body && typeof body.error === "string" ? body.error : null;
    if (detail) throw new ChatError(detail);
    throw new ChatError(`The chat service is unavailable (HTTP ${response.status}). Please try again later.`);
  }
  if (!body || typeof body.response !== "string") {
    throw new ChatError("The chat service sent an answer this page does not understand.");
  }
  return body.response;
}
