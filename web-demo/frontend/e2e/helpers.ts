// Shared steps of the UI specs (gifts, mobile, a11y, navigation): each spec file starts its
// own backend over a throwaway database (backend.ts) and logs members in through the UI.
import { expect, type Browser, type BrowserContext, type Page } from "@playwright/test";
import { Backend } from "./backend";

export const PHONE = { width: 390, height: 844 };

export interface Member {
  context: BrowserContext;
  page: Page;
}

/**
 * Resolves once the server has acknowledged a subscription to each of `topics` on one of the
 * page's WebSockets (read from the frames).
 */
export function subscribed(page: Page, topics: string[]): Promise<void> {
  const missing = new Set(topics);
  return new Promise((ok) => {
    page.on("websocket", (ws) => {
      ws.on("framereceived", ({ payload }) => {
        try {
          const msg = JSON.parse(String(payload)) as { action?: string; topic?: string };
          if (msg.action === "subscribed" && msg.topic) missing.delete(msg.topic);
        } catch {
          return;
        }
        if (missing.size === 0) ok();
      });
    });
  });
}

/**
 * A fresh browser context logged in as `name` at `hash` (default: the first list), live on
 * `topics` before this returns.
 */
export async function loginAs(
  browser: Browser,
  backend: Backend,
  name: string,
  opts: { hash?: string; topics?: string[]; viewport?: { width: number; height: number } } = {},
): Promise<Member> {
  const context = await browser.newContext(opts.viewport ? { viewport: opts.viewport } : {});
  const page = await context.newPage();
  const ready = subscribed(page, opts.topics ?? ["list-items:all"]);
  await page.goto(backend.url + "/" + (opts.hash ?? ""));
  await page.getByTestId(`login-${name}`).click();
  await expect(page.getByTestId("current-member")).toContainText(name);
  await expect(page.getByTestId("connection-status")).toHaveAttribute("data-state", "open", { timeout: 15_000 });
  await ready;
  return { context, page };
}

/** The page scrolls sideways: its content is wider than the window. */
export async function expectNoSidewaysScroll(page: Page, where: string): Promise<void> {
  const { scrollWidth, innerWidth } = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
  }));
  expect(scrollWidth, `${where}: page is ${scrollWidth}px wide in a ${innerWidth}px window`).toBeLessThanOrEqual(innerWidth);
}

export const itemCard = (page: Page, name: string) => page.locator(`[data-testid="item"][data-item-name="${name}"]`);
export const giftCard = (page: Page, name: string) => page.locator(`[data-testid="gift"][data-gift-name="${name}"]`);
