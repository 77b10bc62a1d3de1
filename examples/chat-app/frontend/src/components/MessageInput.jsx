import { useState } from "react";

export default function MessageInput({ onSend, disabled }) {
  const [text, setText] = useState("");

  function submit(event) {
    event.preventDefault();
    const message = text.trim();
    if (!message || disabled) return;
    onSend(message);
    setText("");
  }

  return (
    <form className="input" onSubmit={submit}>
      <input
        type="text"
        aria-label="Message"
        placeholder="Type a message…"
        value={text}
        onChange={(e) => setText(e.target.value)}
        maxLength={8000}
        autoFocus
      />
      <button type="submit" disabled={disabled || !text.trim()}>
        {disabled ? "Sending…" : "Send"}
      </button>
    </form>
  );
}
