// Accessibility (issue 16): axe-core checks every page of the demo, on a desktop and on a
// 390 px phone, and finds no `serious` or `critical` violation (missing labels, contrast,
// names of buttons and links, ...). A page is checked in its states that add controls: an
// open edit form, a delete question, the phone's open menu, a deleted-while-editing notice.
import AxeBuilder from "@axe-core/playwright";
import { expect, test, type Page } from "@playwright/test";
import { join } from "node:path";
import { Backend, removeTempDir, tempDir } from "./backend";
import { giftCard, itemCard, loginAs, PHONE } from "./helpers";

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

test.use({ actionTimeout: 15_000 });

/** Runs axe on the page as it is now and fails on any serious or critical violation. */
async function expectAccessible(page: Page, where: string): Promise<number> {
  // Let the cards' appear animation finish: axe measures contrast on the final colours.
  await page.waitForTimeout(600);
  const result = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]).analyze();
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  const report = bad.map((v) => `${v.impact} ${v.id}: ${v.help}\n  ${v.nodes.map((n) => n.target.join(" ")).join("\n  ")}`);
  expect(report, `${where}: axe violations`).toEqual([]);
  // The milder findings are listed, not failed on.
  const mild = result.violations.filter((v) => !bad.includes(v)).map((v) => `${v.impact} ${v.id} (${v.nodes.length})`);
  if (mild.length) console.log(`axe, ${where}: ${mild.join(", ")}`);
  return result.passes.length;
}

for (const [device, viewport] of [
  ["desktop", { width: 1280, height: 820 }],
  ["phone", PHONE],
] as const) {
  test(`no serious accessibility violation on any page (${device})`, async ({ browser }) => {
    const context = await browser.newContext({ viewport });
    const login = await context.newPage();
    await login.goto(backend.url);
    await expect(login.getByTestId("login-Mom")).toBeVisible();
    await expectAccessible(login, "login");
    await context.close();

    const mom = await loginAs(browser, backend, "Mom", { viewport, topics: ["list:1"] });
    const page = mom.page;
    await expect(page.getByTestId("list-view")).toBeVisible();
    await expectAccessible(page, "dashboard with the first list");

    // A list with an edit form, comments and a feed entry.
    const lego = itemCard(page, "Lego set");
    await lego.getByTestId("edit-item").click();
    await lego.getByTestId("toggle-comments").click();
    await backend.call(await backend.token(2), "PUT", "/items/2/status", { status: "SELECTED" });
    await expect(page.getByTestId("activity-feed")).toContainText("Selected");
    await expectAccessible(page, "list view with an edit form and comments");

    if (device === "phone") {
      await page.getByTestId("menu-toggle").click();
      await expectAccessible(page, "open menu");
      await page.getByTestId("nav-gifts").click();
    } else {
      await page.getByTestId("nav-gifts").click();
    }
    await expect(page.getByRole("heading", { name: "Gift planner" })).toBeVisible();
    await expectAccessible(page, "gift planner");
    // (Gifts for someone else than Mom: the recipient of a gift may not see it.)
    await giftCard(page, "Skateboard").getByTestId("gift-edit").click();
    await giftCard(page, "Watch").getByTestId("gift-delete").click();
    await expectAccessible(page, "gift planner with an edit form and a delete question");

    // The notice of an edit whose gift someone else deleted.
    const gift = (await backend.call(await backend.token(2), "POST", "/gifts", {
      name: `Puzzle ${device}`,
      occasion_id: 2,
      recipient_id: 4,
    })) as { id: number };
    await giftCard(page, `Puzzle ${device}`).getByTestId("gift-edit").click();
    await backend.call(await backend.token(2), "DELETE", `/gifts/${gift.id}`);
    await expect(page.getByTestId("deleted-while-editing")).toBeVisible();
    await expectAccessible(page, "deleted-while-editing notice");

    await page.evaluate(() => (location.hash = "#/lists/abc"));
    await expect(page.getByTestId("not-found")).toBeVisible();
    await expectAccessible(page, "not found");
    await mom.context.close();
  });
}

test("every form control has a name a screen reader announces", async ({ browser }) => {
  const mom = await loginAs(browser, backend, "Mom", { topics: ["list:1"] });
  const page = mom.page;
  // The assignee select of an item is named after the item (it had no label at all).
  await expect(page.getByRole("combobox", { name: "Who buys 'Lego set'" })).toBeVisible();
  await expect(page.getByRole("combobox", { name: "Status of 'Lego set'" })).toBeVisible();
  await page.getByTestId("nav-gifts").click();
  for (const name of ["Gift", "Occasion", "For", "From"])
    await expect(page.getByLabel(name, { exact: true })).toBeVisible();
  await expect(page.getByRole("combobox", { name: "Status of gift 'Skateboard'" })).toBeVisible();
  await mom.context.close();
});
