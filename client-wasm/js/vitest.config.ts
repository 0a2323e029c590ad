import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

// src/index.ts imports the wasm-bindgen module as "./tidings_client.js" and the inlined wasm as
// "./wasm-inline.js" (their places in the built package); in the source tree they live in
// ../pkg, built by ./scripts/build-wasm.
export default defineConfig({
  resolve: {
    alias: [
      {
        find: /^\.\/(tidings_client|wasm-inline)\.js$/,
        replacement: `${fileURLToPath(new URL("../pkg/", import.meta.url))}$1.js`,
      },
    ],
  },
  test: {
    environment: "jsdom",
    include: ["test/**/*.test.{ts,tsx}"],
    testTimeout: 30_000,
  },
});
