import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

// The hooks import the wasm-bindgen module as "../tidings_client.js" (its place in the built
// package); in the source tree it lives in ../pkg, built by ./scripts/build-wasm.
export default defineConfig({
  resolve: {
    alias: [
      {
        find: /^\.\.\/tidings_client\.js$/,
        replacement: fileURLToPath(new URL("../pkg/tidings_client.js", import.meta.url)),
      },
    ],
  },
  test: {
    environment: "jsdom",
    include: ["test/**/*.test.{ts,tsx}"],
    testTimeout: 30_000,
  },
});
