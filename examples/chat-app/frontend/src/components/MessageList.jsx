import { useEffect, useRef } from "react";

export default function MessageList({ messages, loading }) {
  const end = useRef(null);
  useEffect(() => {
    end.current?.scrollIntoView?.({ behavior: "smooth" });
  }, [messages, loading]);

  return (
    <ol className="messages" data-testid="messages" aria-live="polite">
      {messages.length === 0 && !loading && <li className="empty">Say hello to start the conversation.</li>}
      {messages.map((m, i) => (
        <li key={i} className={`message ${m.role}`} data-role={m.role}>
          <span className="who">{m.role === "user" ? "You" : "Assistant"}</span>
          <p>{m.text}</p>
        </li>
      ))}
      {loading && (
        <li className="message assistant loading" data-testid="loading" aria-busy="true">
          <span className="who">Assistant</span>
          <p>
            <span className="dots" aria-label="Waiting for the answer">
              <span>.</span>
              <span>.</span>
              <span>.</span>
            </span>
          </p>
        </li>
      )}
      <li ref={end} aria-hidden="true" className="end" />
    </ol>
  );
}
