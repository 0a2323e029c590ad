// The demo end to end in Chromium: two members in two browser contexts see each other's
// changes live, survive a backend restart (catching up on what they missed) and an invalid
// token shows "unauthorized" instead of a retry storm.
import { expect, test, type Browser, type BrowserContext, type Page } from "@playwright/test";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { Backend, removeTempDir, tempDir } from "./backend";
import { Nginx } from "./nginx";

// E2E_NGINX=1: the browsers reach the demo through a real nginx with TLS (https://, wss://),
// configured as docs/DEPLOYMENT.md says (scripts/test-e2e runs the first test so).
const THROUGH_NGINX = process.env.E2E_NGINX === "1";

// docs/demo.png is rewritten only on request (`UPDATE_SCREENSHOT=1 ./scripts/test-e2e`): a test
// run must leave the tracked files as they were. Otherwise the picture goes to the run's temp dir.
const SCREENSHOT = process.env.UPDATE_SCREENSHOT
  ? fileURLToPath(new URL("../../../docs/demo.png", import.meta.url))
  : undefined;

let dir: string;
let backend: Backend;
let nginx: Nginx | undefined;

test.beforeAll(async () => {
  dir = tempDir();
  backend = await Backend.start(join(dir, "demo.sqlite"));
  if (THROUGH_NGINX) nginx = await Nginx.start(dir, backend.port);
});

test.afterAll(async () => {
  await nginx?.stop();
  await backend?.stop();
  if (dir) removeTempDir(dir);
});

/** Where the browsers open the demo: the backend, or nginx in front of it. */
const siteUrl = () => nginx?.url ?? backend.url;

/** Every WebSocket URL the pages opened (checked: wss:// through nginx, never a token). */
const socketUrls: string[] = [];

interface Member {
  context: BrowserContext;
  page: Page;
}

/**
 * Resolves once the server has acknowledged a subscription to each of `topics` on one of the
 * page's WebSockets (read from the frames, so no guessing how long a subscribe takes).
 */
function subscribed(page: Page, topics: string[]): Promise<void> {
  const missing = new Set(topics);
  return new Promise((ok) => {
    page.on("websocket", (ws) => {
      socketUrls.push(ws.url());
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

/** A fresh browser context logged in as `name`, with the first list open and live. */
async function loginAs(browser: Browser, name: string): Promise<Member> {
  // The self-signed certificate of the nginx run is accepted (pages and WebSockets).
  const context = await browser.newContext({ ignoreHTTPSErrors: THROUGH_NGINX });
  const page = await context.newPage();
  const ready = subscribed(page, ["list:1", "list-items:all"]);
  await page.goto(siteUrl());
  await page.getByTestId(`login-${name}`).click();
  await expect(page.getByTestId("current-member")).toContainText(name);
  await expectState(page, "open");
  await expect(page.getByTestId("list-view")).toBeVisible();
  await ready;
  // Marks this document: if it is still there later, the page was never reloaded.
  await page.evaluate(() => ((window as unknown as { e2eMarker: string }).e2eMarker = "same-page"));
  return { context, page };
}

async function expectState(page: Page, state: string, timeout = 15_000) {
  await expect(page.getByTestId("connection-status")).toHaveAttribute("data-state", state, { timeout });
}

async function expectNotReloaded(page: Page) {
  expect(await page.evaluate(() => (window as unknown as { e2eMarker?: string }).e2eMarker)).toBe("same-page");
}

const item = (page: Page, name: string) => page.locator(`[data-testid="item"][data-item-name="${name}"]`);

test("changes by one member show up live for another", async ({ browser }) => {
  const mom = await loginAs(browser, "Mom");
  const dad = await loginAs(browser, "Dad");

  // Mom adds an item: Dad sees it within 2 s, without a reload.
  await mom.page.getByTestId("new-item-name").fill("Telescope");
  await mom.page.getByTestId("new-item-notes").fill("for stargazing");
  await mom.page.getByTestId("add-item").click();
  await expect(item(dad.page, "Telescope")).toBeVisible({ timeout: 2_000 });
  await expect(item(mom.page, "Telescope")).toBeVisible();
  await expect(dad.page.getByTestId("activity-feed")).toContainText("Mom added 'Telescope'");

  // Dad moves it to PURCHASED: Mom sees it.
  await item(dad.page, "Telescope").getByTestId("item-status").selectOption("PURCHASED");
  await expect(item(mom.page, "Telescope").getByTestId("item-status")).toHaveValue("PURCHASED", { timeout: 2_000 });
  await expect(mom.page.getByTestId("activity-feed")).toContainText("Dad marked 'Telescope' Purchased");
  // The sidebar's bought/wished counts follow through list-items:all.
  await expect(mom.page.getByTestId("nav-list-count-1")).toHaveText("2/4");

  // Assign and comment travel the same way.
  await item(mom.page, "Telescope").getByTestId("item-assignee").selectOption({ label: "Alex" });
  await expect(item(dad.page, "Telescope").getByTestId("item-assignee")).toHaveValue("3");
  await item(dad.page, "Telescope").getByTestId("toggle-comments").click();
  await item(dad.page, "Telescope").getByTestId("comment-input").fill("Got it on sale!");
  await item(dad.page, "Telescope").getByTestId("send-comment").click();
  await expect(item(mom.page, "Telescope").getByTestId("toggle-comments")).toContainText("1");
  await expect(mom.page.getByTestId("activity-feed")).toContainText("Dad commented on 'Telescope'");

  await expectNotReloaded(mom.page);
  await expectNotReloaded(dad.page);

  // docs/demo.png: the two members side by side.
  const shots = await Promise.all([mom.page, dad.page].map((p) => p.screenshot({ animations: "disabled" })));
  const canvas = await browser.newPage({ viewport: { width: 2 * 1280 + 24, height: 820 + 52 } });
  const img = (b: Buffer, who: string) =>
    `<figure><figcaption>${who}'s browser</figcaption><img src="data:image/png;base64,${b.toString("base64")}"></figure>`;
  await canvas.setContent(
    `<style>body{margin:0;background:#2b2a33;display:flex;gap:24px;font:600 16px system-ui;color:#fff}
     figure{margin:0}figcaption{height:52px;line-height:52px;padding-left:16px}img{display:block;width:1280px}</style>` +
      img(shots[0], "Mom") +
      img(shots[1], "Dad"),
  );
  await canvas.screenshot({ path: SCREENSHOT ?? join(dir, "demo.png") });
  await canvas.close();

  // Edit and delete travel too.
  const mine = item(mom.page, "Telescope");
  await mine.getByTestId("edit-item").click();
  await mine.getByTestId("edit-name").fill("Big telescope");
  await mine.getByTestId("save-edit").click();
  await expect(item(dad.page, "Big telescope")).toBeVisible();
  dad.page.once("dialog", (d) => void d.accept());
  await item(dad.page, "Big telescope").getByTestId("delete-item").click();
  await expect(item(mom.page, "Big telescope")).toHaveCount(0);
  await expect(mom.page.getByTestId("activity-feed")).toContainText("Dad removed 'Big telescope'");
  await expect(mom.page.getByTestId("nav-list-count-1")).toHaveText("1/3");

  await mom.context.close();
  await dad.context.close();

  // The token travelled in the Sec-WebSocket-Protocol header: no WebSocket URL and no proxy
  // access log line carries one.
  expect(socketUrls.length).toBeGreaterThan(0);
  for (const url of socketUrls) {
    expect(url.startsWith(THROUGH_NGINX ? "wss://" : "ws://")).toBe(true);
    expect(url).not.toContain("token=");
  }
  if (nginx) {
    const log = nginx.accessLog();
    // The URL carries only the client's connection id (`cid`), never a token.
    expect(log).toMatch(/GET \/ws\?cid=[A-Za-z0-9_-]+ HTTP\/1\.1" 101/);
    expect(log).not.toContain("token=");
    expect(log).not.toContain("tidings.token");
  }
});

test("both reconnect after a backend restart and catch up on what they missed", async ({ browser }) => {
  const mom = await loginAs(browser, "Mom");
  const dad = await loginAs(browser, "Dad");
  // While `dadAway` is set, Dad's connection attempts fail as if his network were down.
  let dadAway = false;
  await dad.page.routeWebSocket(/\/ws/, (ws) => {
    if (dadAway) ws.close({ code: 1013, reason: "Try again later" });
    else ws.connectToServer();
  });
  const dadReady = subscribed(dad.page, ["list:1", "list-items:all"]);
  await dad.page.reload();
  await expectState(dad.page, "open");
  await dadReady;
  // The list's read done too (the ack of list:1 can come first): a read still in flight when
  // the backend stops would be retried after the restart and show the item Dad must miss.
  await expect(dad.page.getByTestId("list-view")).toBeVisible();
  await dad.page.evaluate(() => ((window as unknown as { e2eMarker: string }).e2eMarker = "same-page"));

  // Kill the backend (SIGTERM: close 1012) and restart it on the same port and database.
  const port = backend.port;
  await backend.stop();
  await expectState(mom.page, "reconnecting");
  await expectState(dad.page, "reconnecting");
  dadAway = true;
  backend = await Backend.start(backend.db, port);
  await expectState(mom.page, "open", 30_000);

  // A change while Dad is away, made through the API.
  const token = await backend.token(4);
  await backend.call(token, "POST", "/lists/1/items", { name: "Star map", notes: "added while Dad was away" });
  await expect(item(mom.page, "Star map")).toBeVisible();
  await expect(item(dad.page, "Star map")).toHaveCount(0);
  await expectState(dad.page, "reconnecting");

  // Dad comes back: live again, and the missed item is there.
  dadAway = false;
  await expectState(dad.page, "open", 30_000);
  await expect(item(dad.page, "Star map")).toBeVisible();
  // And live updates flow again both ways.
  await item(dad.page, "Star map").getByTestId("item-status").selectOption("SELECTED");
  await expect(item(mom.page, "Star map").getByTestId("item-status")).toHaveValue("SELECTED");

  await expectNotReloaded(mom.page);
  await expectNotReloaded(dad.page);
  await mom.context.close();
  await dad.context.close();
});

test("an invalid token shows the unauthorized state without a retry storm", async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  // A session whose token the server never signed.
  await page.addInitScript(() => {
    sessionStorage.setItem(
      "tidings-demo.session",
      JSON.stringify({ token: "not-a-valid-token", member: { id: 1, name: "Mom", color: "#e0607e" } }),
    );
  });
  let attempts = 0;
  page.on("websocket", () => attempts++);
  await page.goto(backend.url);
  await expectState(page, "unauthorized");
  await expect(page.getByTestId("unauthorized-banner")).toBeVisible();
  // Long enough for several retries if the client did retry.
  await page.waitForTimeout(5_000);
  await expectState(page, "unauthorized");
  expect(attempts).toBeGreaterThanOrEqual(1);
  expect(attempts).toBeLessThanOrEqual(2);

  // Signing in again recovers.
  await page.getByTestId("unauthorized-banner").getByRole("button").click();
  await page.getByTestId("login-Mom").click();
  await expectState(page, "open");
  await context.close();
});
