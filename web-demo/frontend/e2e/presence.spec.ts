// Presence in the demo (issue 15) in Chromium: family members looking at the same list see
// each other's avatars, on the list itself (the viewer joins `list:{id}`) and in the sidebar
// beside each list (only watched: the sidebar makes nobody present).
import { expect, test, type Browser, type BrowserContext, type Page } from "@playwright/test";
import { join } from "node:path";
import { Backend, removeTempDir, tempDir } from "./backend";

let dir: string;
let backend: Backend;

test.beforeAll(async () => {
  dir = tempDir();
  backend = await Backend.start(join(dir, "demo.sqlite"));
});

test.afterAll(async () => {
  await backend?.stop();
  if (dir) removeTempDir(dir);
});

/** A fresh browser context logged in as `name`, with list `listId` open and live. */
async function openList(browser: Browser, name: string, listId: number): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${backend.url}/#/lists/${listId}`);
  await page.getByTestId(`login-${name}`).click();
  await expect(page.getByTestId("current-member")).toContainText(name);
  await expect(page.getByTestId("connection-status")).toHaveAttribute("data-state", "open", { timeout: 15_000 });
  await expect(page.getByTestId("list-view")).toHaveAttribute("data-list-id", String(listId));
  return { context, page };
}

/** The member ids of the demo's seed (web-demo/backend: Mom 1, Dad 2). */
const MOM = 1;
const DAD = 2;

test("Mom opens list 1, Dad sees her avatar within 1 s; Mom closes the tab, it disappears", async ({ browser }) => {
  // Dad is on list 2: he is present there, and watches list 1 from the sidebar.
  const dad = await openList(browser, "Dad", 2);
  const inSidebar = dad.page.getByTestId(`nav-presence-1-${MOM}`);
  await expect(inSidebar).toHaveCount(0);

  const mom = await openList(browser, "Mom", 1);
  // Mom's list view joined list:1 once it rendered; Dad's sidebar shows her within 1 s.
  const shown = Date.now();
  await expect(inSidebar).toBeVisible({ timeout: 1_000 });
  console.log(`presence: Dad saw Mom ${Date.now() - shown} ms after her list was shown`);
  await expect(inSidebar.locator(".avatar")).toHaveAttribute("title", "Mom");
  // Her name comes from her login token's `name` claim (the presence info).
  await expect(dad.page.getByTestId("nav-presence-1")).toHaveAttribute("title", "Mom is looking at this list");
  // And Mom sees Dad beside list 2 (his list view), not beside list 1 (his sidebar only watches).
  await expect(mom.page.getByTestId(`nav-presence-2-${DAD}`)).toBeVisible({ timeout: 1_000 });
  await expect(mom.page.getByTestId(`nav-presence-1-${DAD}`)).toHaveCount(0);
  // Nobody sees themselves.
  await expect(mom.page.getByTestId(`nav-presence-1-${MOM}`)).toHaveCount(0);
  await expect(mom.page.getByTestId("presence-list")).toHaveCount(0);

  // Dad opens list 1 too: both see each other on the list itself.
  await dad.page.getByTestId("nav-list-1").click();
  await expect(dad.page.getByTestId(`presence-list-${MOM}`)).toBeVisible({ timeout: 1_000 });
  await expect(mom.page.getByTestId(`presence-list-${DAD}`)).toBeVisible({ timeout: 1_000 });
  // He left list 2.
  await expect(mom.page.getByTestId(`nav-presence-2-${DAD}`)).toHaveCount(0, { timeout: 1_000 });

  // Mom closes her tab: her avatar disappears from Dad's list and sidebar.
  const closed = Date.now();
  await mom.page.close();
  await expect(dad.page.getByTestId(`presence-list-${MOM}`)).toHaveCount(0, { timeout: 2_000 });
  console.log(`presence: Mom's avatar gone ${Date.now() - closed} ms after her tab closed`);
  await expect(dad.page.getByTestId("presence-list")).toHaveCount(0);
  await expect(inSidebar).toHaveCount(0);

  await mom.context.close();
  await dad.context.close();
});

test("two tabs of Mom are one avatar for Dad; it goes with the last tab", async ({ browser }) => {
  const dad = await openList(browser, "Dad", 1);
  const mom = await openList(browser, "Mom", 1);
  // A second tab of the same session (sessionStorage is per tab: log in again as Mom).
  const momTab2 = await mom.context.newPage();
  await momTab2.goto(`${backend.url}/#/lists/1`);
  await momTab2.getByTestId("login-Mom").click();
  await expect(momTab2.getByTestId("list-view")).toHaveAttribute("data-list-id", "1");
  await expect(momTab2.getByTestId("connection-status")).toHaveAttribute("data-state", "open", { timeout: 15_000 });

  const avatars = dad.page.getByTestId("presence-list").locator(".presence-member");
  await expect(avatars).toHaveCount(1);
  await expect(dad.page.getByTestId(`presence-list-${MOM}`)).toBeVisible();
  await mom.page.close();
  // One tab left: still there (give a leave time to arrive, were it wrongly sent).
  await dad.page.waitForTimeout(500);
  await expect(dad.page.getByTestId(`presence-list-${MOM}`)).toBeVisible();
  await momTab2.close();
  await expect(dad.page.getByTestId(`presence-list-${MOM}`)).toHaveCount(0, { timeout: 2_000 });

  await mom.context.close();
  await dad.context.close();
});
