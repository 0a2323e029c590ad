import { defineConfig } from "@playwright/test";

// Debian's Chromium, driven by playwright-core (`npx playwright install` cannot download
// browsers here). The specs start and stop the demo backend themselves (e2e/backend.ts).
export default defineConfig({
  testDir: "./e2e",
  workers: 1,
  fullyParallel: false,
  retries: 0,
  timeout: 120_000,
  expect: { timeout: 10_000 },
  reporter: [["list"]],
  outputDir: "test-results",
  use: {
    viewport: { width: 1280, height: 820 },
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        // The nginx run (E2E_NGINX=1) serves a self-signed certificate made for the test.
        ...(process.env.E2E_NGINX === "1" ? ["--ignore-certificate-errors"] : []),
      ],
    },
    trace: "off",
    screenshot: "only-on-failure",
  },
});
