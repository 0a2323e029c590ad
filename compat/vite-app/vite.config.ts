import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// No tidings-specific settings: the package must work with a stock config.
export default defineConfig({
  plugins: [react()],
});
