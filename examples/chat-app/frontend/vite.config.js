import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// `npm run dev` proxies /chat to the backend, like nginx does in production.
const backend = process.env.BACKEND_URL || "http://127.0.0.1:8000";

export default defineConfig({
  plugins: [react()],
  server: {
    proxy: { "/chat": backend, "/health": backend },
  },
  build: { outDir: "dist", sourcemap: false },
});
