// The demo on a phone (390 px wide, issue 16): no page scrolls sideways, the sidebar folds
// behind a menu button instead of pushing or hiding the gift planner, and long names (200
// characters, with and without spaces) wrap inside their cards.
import { expect, test, type Page } from "@playwright/test";
import { join } from "node:path";
import { Backend, removeTempDir, tempDir } from "./backend";
import { expectNoSidewaysScroll, giftCard, itemCard, loginAs, PHONE } from "./helpers";

let dir: string;
let backend: Backend;

const LONG_WORD = "W".repeat(200);
// 200 characters in short words (ending in a letter: the API trims names).
const LONG_WORDS = "wish ".repeat(40).slice(0, 199) + "s";

test.beforeAll(async () => {
  dir = tempDir();
  backend = await Backend.start(join(dir, "demo.sqlite"));
  const token = await backend.token(1);
  for (const name of [LONG_WORD, LONG_WORDS]) {
    await backend.call(token, "POST", "/lists/1/items", { name, notes: name });
    await backend.call(token, "POST", "/gifts", { name, notes: name, occasion_id: 1, recipient_id: 3, giver_id: 2 });
  }
});

test.afterAll(async () => {
  await backend?.stop();
  if (dir) removeTempDir(dir);
});

test.use({ actionTimeout: 15_000 });

/** Every card on the page lies within the window (nothing cut off on the right). */
async function expectCardsInside(page: Page, selector: string) {
  const width = page.viewportSize()!.width;
  const boxes = await page.locator(selector).evaluateAll((els) =>
    els.map((e) => {
      const r = e.getBoundingClientRect();
      return { right: r.right, scroll: e.scrollWidth, client: e.clientWidth };
    }),
  );
  expect(boxes.length).toBeGreaterThan(0);
  for (const b of boxes) {
    expect(b.right).toBeLessThanOrEqual(width);
    // The card's own content does not overflow it either.
    expect(b.scroll).toBeLessThanOrEqual(b.client + 1);
  }
}

test("login, list, gift planner and not-found fit a 390 px phone without scrolling sideways", async ({ browser }) => {
  const context = await browser.newContext({ viewport: PHONE });
  const page = await context.newPage();
  await page.goto(backend.url);
  await expect(page.getByTestId("login-Mom")).toBeVisible();
  await expectNoSidewaysScroll(page, "login");
  await context.close();

  const mom = await loginAs(browser, backend, "Mom", { viewport: PHONE, topics: ["list:1"] });
  const p = mom.page;
  await expect(p.getByTestId("list-view")).toBeVisible();
  await expect(itemCard(p, LONG_WORD)).toBeVisible();
  await expectNoSidewaysScroll(p, "list");
  await expectCardsInside(p, '[data-testid="item"]');

  // An open edit form and comments fit too.
  await itemCard(p, LONG_WORDS).getByTestId("edit-item").click();
  await itemCard(p, LONG_WORDS).getByTestId("toggle-comments").click();
  await expectNoSidewaysScroll(p, "list with an edit form");

  // The sidebar is folded away: the list comes first, the gift planner is one tap away.
  const nav = p.getByRole("navigation", { name: "Lists" });
  await expect(nav).toBeHidden();
  const toggle = p.getByTestId("menu-toggle");
  await expect(toggle).toHaveAttribute("aria-expanded", "false");
  await toggle.click();
  await expect(toggle).toHaveAttribute("aria-expanded", "true");
  await expect(p.getByTestId("nav-gifts")).toBeInViewport();
  await expectNoSidewaysScroll(p, "open menu");
  await p.getByTestId("nav-gifts").click();
  await expect(p.getByRole("heading", { name: "Gift planner" })).toBeInViewport();
  await expect(nav).toBeHidden();
  await expect(giftCard(p, LONG_WORD)).toBeVisible();
  await expectNoSidewaysScroll(p, "gift planner");
  await expectCardsInside(p, '[data-testid="gift"]');
  await giftCard(p, LONG_WORD).getByTestId("gift-edit").click();
  await giftCard(p, LONG_WORDS).getByTestId("gift-delete").click();
  await expectNoSidewaysScroll(p, "gift planner with an edit form and a delete question");

  // The activity feed with long names.
  await expect(p.getByTestId("activity-feed")).toBeAttached();
  await backend.call(await backend.token(2), "PUT", "/items/1/status", { status: "RECEIVED" });
  await expect(p.getByTestId("activity-feed")).toContainText("Received");

  // Picking the page already shown closes the menu too.
  await toggle.click();
  await p.getByTestId("nav-gifts").click();
  await expect(nav).toBeHidden();
  await expect(toggle).toHaveAttribute("aria-expanded", "false");

  await p.evaluate(() => (location.hash = "#/lists/abc"));
  await expect(p.getByTestId("not-found")).toBeVisible();
  await expectNoSidewaysScroll(p, "not found");
  await mom.context.close();
});

test("long names wrap inside their cards on a wide screen too", async ({ browser }) => {
  const mom = await loginAs(browser, backend, "Mom", { topics: ["list:1"] });
  await expect(itemCard(mom.page, LONG_WORD)).toBeVisible();
  await expectNoSidewaysScroll(mom.page, "desktop list");
  await expectCardsInside(mom.page, '[data-testid="item"]');
  // The name is shown whole (wrapped over several lines, not cut).
  const name = itemCard(mom.page, LONG_WORD).getByTestId("item-name");
  await expect(name).toHaveText(LONG_WORD);
  expect((await name.boundingBox())!.height).toBeGreaterThan(40);
  await mom.page.evaluate(() => (location.hash = "#/gifts"));
  await expect(giftCard(mom.page, LONG_WORDS)).toBeVisible();
  await expectNoSidewaysScroll(mom.page, "desktop gift planner");
  await expectCardsInside(mom.page, '[data-testid="gift"]');
  await mom.context.close();
});
