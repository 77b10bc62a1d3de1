import ChatContainer from "./components/ChatContainer.jsx";

export default function App() {
  return (
    <main className="app">
      <header className="app-header">
        <h1>LiteLLM Chat</h1>
      </header>
      <ChatContainer />
    </main>
  );
}
