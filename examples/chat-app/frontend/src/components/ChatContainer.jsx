import { useState } from "react";
import { sendMessage } from "../api.js";
import MessageInput from "./MessageInput.jsx";
import MessageList from "./MessageList.jsx";

export default function ChatContainer() {
  const [messages, setMessages] = useState([]);
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState(null);

  async function handleSend(text) {
    setError(null);
    setMessages((m) => [...m, { role: "user", text }]);
    setLoading(true);
    try {
      const answer = await sendMessage(text);
      setMessages((m) => [...m, { role: "assistant", text: answer }]);
    } catch (err) {
      setError(err.message || "Something went wrong.");
    } finally {
      setLoading(false);
    }
  }

  return (
    <section className="chat" aria-label="Chat">
      <MessageList messages={messages} loading={loading} />
      {error && (
        <div className="error" role="alert" data-testid="error">
          {error}
        </div>
      )}
      <MessageInput onSend={handleSend} disabled={loading} />
    </section>
  );
}
