// Logged-in browser tabs for the specs of issue 16 (surprises, managing lists and occasions,
// the feed): a fresh context per member, every WebSocket frame and every API answer the page
// receives recorded, so a spec can check what reached the browser, not only what it shows.
import { expect, type Browser, type BrowserContext, type Page } from "@playwright/test";

export interface Tab {
  context: BrowserContext;
  page: Page;
  /** Every text frame received on any of the page's WebSockets, in order. */
  frames: string[];
  /** Every `/api/` answer body the page received (path → body), in order. */
  answers: { path: string; body: string }[];
  /** Resolves once the server acknowledged each of `topics` (on any socket, from now). */
  subscribed(topics: string[]): Promise<void>;
}

/** A new context logged in as `name` at `url` (with `hash` opened), connected and live. */
export async function openTab(
  browser: Browser,
  url: string,
  name: string,
  opts: { hash?: string; viewport?: { width: number; height: number } } = {},
): Promise<Tab> {
  const context = await browser.newContext(opts.viewport ? { viewport: opts.viewport } : {});
  const page = await context.newPage();
  const frames: string[] = [];
  const answers: { path: string; body: string }[] = [];
  const waiters: { missing: Set<string>; ok: () => void }[] = [];
  page.on("websocket", (ws) => {
    ws.on("framereceived", ({ payload }) => {
      const text = String(payload);
      frames.push(text);
      try {
        const msg = JSON.parse(text) as { action?: string; topic?: string };
        if (msg.action === "subscribed" && msg.topic)
          for (const w of waiters) {
            w.missing.delete(msg.topic);
            if (w.missing.size === 0) w.ok();
          }
      } catch {
        // not JSON: recorded anyway
      }
    });
  });
  page.on("response", async (res) => {
    const path = new URL(res.url()).pathname;
    if (!path.startsWith("/api/")) return;
    try {
      answers.push({ path, body: await res.text() });
    } catch {
      // the page navigated away before the body was read
    }
  });
  const subscribed = (topics: string[]) =>
    new Promise<void>((ok) => {
      const missing = new Set(topics);
      if (missing.size === 0) ok();
      else waiters.push({ missing, ok });
    });
  const ready = subscribed(["list-items:all", "lists:all", "occasions:all"]);
  await page.goto(url + (opts.hash ?? ""));
  await page.getByTestId(`login-${name}`).click();
  await expect(page.getByTestId("current-member")).toContainText(name);
  await expect(page.getByTestId("connection-status")).toHaveAttribute("data-state", "open", { timeout: 15_000 });
  await ready;
  return { context, page, frames, answers, subscribed };
}

/** The item card named `name`. */
export const itemCard = (page: Page, name: string) => page.locator(`[data-testid="item"][data-item-name="${name}"]`);
