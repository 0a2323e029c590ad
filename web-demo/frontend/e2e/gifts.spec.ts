// The gift planner (issue 16): who gives a gift is chosen from a labelled list of the family,
// a gift can be edited, a delete asks first, and an edit whose gift or item someone else
// deletes turns into a notice that keeps what was typed.
import { expect, test } from "@playwright/test";
import { join } from "node:path";
import { Backend, removeTempDir, tempDir } from "./backend";
import { giftCard, itemCard, loginAs } from "./helpers";

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

const GIFTS = { hash: "#/gifts", topics: ["gifts:all"] };

test("plan a gift with its giver, edit it, and delete it only after confirming", async ({ browser }) => {
  const mom = await loginAs(browser, backend, "Mom", GIFTS);
  const dad = await loginAs(browser, backend, "Dad", GIFTS);
  const page = mom.page;

  // The planner's controls are found by their visible labels.
  await page.getByLabel("Gift", { exact: true }).fill("Kite");
  await page.getByLabel("Occasion").selectOption({ label: "Sam's birthday" });
  await page.getByLabel("For", { exact: true }).selectOption({ label: "Sam" });
  await page.getByLabel("From", { exact: true }).selectOption({ label: "Alex" });
  await page.getByTestId("add-gift").click();
  await expect(giftCard(page, "Kite").getByTestId("gift-meta")).toHaveText("Sam's birthday · for Sam · from Alex");
  await expect(giftCard(dad.page, "Kite").getByTestId("gift-meta")).toContainText("from Alex");

  // Edit: name, notes and giver; Dad sees the change live.
  const kite = giftCard(page, "Kite");
  await kite.getByTestId("gift-edit").click();
  await kite.getByLabel("Gift", { exact: true }).fill("Red kite");
  await kite.getByLabel("Notes").fill("The stunt one");
  await kite.getByLabel("From").selectOption({ label: "Dad" });
  await kite.getByTestId("gift-save").click();
  const red = giftCard(dad.page, "Red kite");
  await expect(red.getByTestId("gift-meta")).toContainText("from Dad");
  await expect(red).toContainText("The stunt one");
  await expect(giftCard(page, "Red kite").getByTestId("gift-meta")).toContainText("from Dad");
  await expect(dad.page.getByTestId("activity-feed")).toContainText("Mom updated gift 'Red kite'");

  // Status names in the UI's words, in the pill and in the feed.
  await giftCard(dad.page, "Red kite").getByTestId("gift-status").selectOption({ label: "Wrapped" });
  await expect(giftCard(page, "Red kite").getByTestId("gift-status")).toHaveValue("WRAPPED");
  await expect(page.getByTestId("activity-feed")).toContainText("Dad marked gift 'Red kite' Wrapped");
  await expect(page.getByTestId("activity-feed")).not.toContainText("WRAPPED");

  // Delete asks first; "Keep it" keeps it (no request at all).
  let deletes = 0;
  page.on("request", (r) => {
    if (r.method() === "DELETE") deletes++;
  });
  const mine = giftCard(page, "Red kite");
  await mine.getByTestId("gift-delete").click();
  await expect(mine.getByTestId("gift-confirm-delete")).toContainText("Delete 'Red kite' for everyone?");
  // The safe answer has the focus: Enter keeps the gift, and so does Escape.
  await expect(mine.getByTestId("gift-delete-no")).toBeFocused();
  await page.keyboard.press("Enter");
  await expect(mine.getByTestId("gift-confirm-delete")).toHaveCount(0);
  await expect(mine.getByTestId("gift-delete")).toBeFocused();
  await page.keyboard.press("Enter");
  await expect(mine.getByTestId("gift-confirm-delete")).toBeVisible();
  await page.keyboard.press("Escape");
  await expect(mine.getByTestId("gift-confirm-delete")).toHaveCount(0);
  await mine.getByTestId("gift-delete").click();
  await mine.getByTestId("gift-delete-no").click();
  await expect(mine.getByTestId("gift-confirm-delete")).toHaveCount(0);
  expect(deletes).toBe(0);
  await mine.getByTestId("gift-delete").click();
  await mine.getByTestId("gift-delete-yes").click();
  await expect(giftCard(page, "Red kite")).toHaveCount(0);
  await expect(giftCard(dad.page, "Red kite")).toHaveCount(0);
  expect(deletes).toBe(1);
  await expect(dad.page.getByTestId("activity-feed")).toContainText("Mom dropped gift 'Red kite'");
  // Deleting one's own gift is no "deleted by someone else" notice.
  await expect(page.getByTestId("deleted-while-editing")).toHaveCount(0);

  await mom.context.close();
  await dad.context.close();
});

test("a gift deleted by someone else while it is being edited keeps the typing, with who deleted it", async ({
  browser,
}) => {
  const token = await backend.token(1);
  const gift = (await backend.call(token, "POST", "/gifts", { name: "Scooter", occasion_id: 2, recipient_id: 4 })) as {
    id: number;
  };
  const mom = await loginAs(browser, backend, "Mom", GIFTS);
  const card = giftCard(mom.page, "Scooter");
  await card.getByTestId("gift-edit").click();
  await card.getByTestId("gift-edit-name").fill("Scooter with lights");
  await card.getByTestId("gift-edit-notes").fill("Ask the shop about a helmet discount");

  // Dad deletes it (through the API, as another tab would).
  await backend.call(await backend.token(2), "DELETE", `/gifts/${gift.id}`);

  const notice = mom.page.getByTestId("deleted-while-editing");
  await expect(notice).toContainText("'Scooter' was deleted by Dad while you were editing it");
  await expect(notice.getByTestId("draft-name")).toHaveValue("Scooter with lights");
  await expect(notice.getByTestId("draft-notes")).toHaveValue("Ask the shop about a helmet discount");
  await expect(giftCard(mom.page, "Scooter")).toHaveCount(0);
  // The text can be selected and copied (read-only, not disabled).
  await expect(notice.getByTestId("draft-notes")).toBeEditable({ editable: false });
  await expect(notice.getByTestId("draft-notes")).toBeEnabled();
  await notice.getByTestId("dismiss-draft").click();
  await expect(notice).toHaveCount(0);
  await mom.context.close();
});

test("an item deleted by someone else while it is being edited keeps the typing and can be added again", async ({
  browser,
}) => {
  const token = await backend.token(1);
  const item = (await backend.call(token, "POST", "/lists/1/items", { name: "Kite", notes: "" })) as { id: number };
  const mom = await loginAs(browser, backend, "Mom", { topics: ["list:1"] });
  const card = itemCard(mom.page, "Kite");
  await card.getByTestId("edit-item").click();
  await card.getByTestId("edit-name").fill("Diamond kite");
  await card.getByTestId("edit-notes").fill("Two strings, please");

  await backend.call(await backend.token(2), "DELETE", `/items/${item.id}`);

  const notice = mom.page.getByTestId("deleted-while-editing");
  await expect(notice).toContainText("'Kite' was deleted by Dad while you were editing it");
  await expect(notice.getByTestId("draft-name")).toHaveValue("Diamond kite");
  await expect(notice.getByTestId("draft-notes")).toHaveValue("Two strings, please");
  await expect(itemCard(mom.page, "Kite")).toHaveCount(0);

  // Another change to the list does not lose the notice.
  await backend.call(token, "POST", "/lists/1/items", { name: "Yo-yo", notes: "" });
  await expect(itemCard(mom.page, "Yo-yo")).toBeVisible();
  await expect(notice).toBeVisible();

  // The draft can come back as a new item.
  await notice.getByTestId("restore-draft").click();
  await expect(itemCard(mom.page, "Diamond kite")).toContainText("Two strings, please");
  await expect(notice).toHaveCount(0);
  await mom.context.close();
});
