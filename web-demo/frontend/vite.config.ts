import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

// `npm run dev` serves the UI with hot reload and forwards the API and the WebSocket to a
// backend started separately (`tidings-demo --bind 127.0.0.1:8080`).
const backend = process.env.DEMO_BACKEND ?? "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [react()],
  build: { target: "es2022" },
  // Unit tests only; the Playwright specs in e2e/ run through scripts/test-e2e.
  test: { include: ["src/**/*.test.{ts,tsx}"] },
  resolve: {
    // `@tidings/client` is a linked folder outside this package: make its imports of React
    // and TanStack Query resolve to our single copies.
    dedupe: ["react", "react-dom", "@tanstack/react-query"],
  },
  server: {
    // The linked packages live outside this folder; let the dev server read them (the .wasm).
    fs: { allow: [".", "../../client-wasm/pkg", "../../bindings"] },
    proxy: {
      "/api": backend,
      "/ws": { target: backend.replace(/^http/, "ws"), ws: true },
    },
  },
});
