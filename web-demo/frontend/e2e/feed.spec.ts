// The activity feed survives a reload (issue 16): it starts from the events the backend kept
// in its database (GET /api/activity), then goes on live; the recipient's feed keeps their
// surprises.
import { expect, test } from "@playwright/test";
import { join } from "node:path";
import { Backend, removeTempDir, tempDir } from "./backend";
import { itemCard, openTab } from "./members";

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

test("the activity feed is still there after a reload, and after a backend restart", async ({ browser }) => {
  const mom = await openTab(browser, backend.url, "Mom", { hash: "#/lists/1" });
  await mom.page.getByTestId("new-item-name").fill("Kite");
  await mom.page.getByTestId("add-item").click();
  await itemCard(mom.page, "Kite").getByTestId("item-status").selectOption("PURCHASED");
  const feed = mom.page.getByTestId("activity-feed");
  await expect(feed).toContainText("Mom added 'Kite'");
  await expect(feed).toContainText(/Mom marked 'Kite' purchased/i);

  await mom.page.reload();
  await expect(feed).toContainText("Mom added 'Kite'");
  await expect(feed).toContainText(/Mom marked 'Kite' purchased/i);
  await expect(feed.locator("li")).toHaveCount(2);
  // Live entries join the kept ones, once each.
  const token = await backend.token(2);
  await backend.call(token, "POST", "/lists/2/items", { name: "Yo-yo" });
  await expect(feed).toContainText("Dad added 'Yo-yo'");
  await expect(feed.locator("li")).toHaveCount(3);
  expect(await feed.locator(".feed-text").first().textContent()).toContain("Yo-yo");

  // Sam, whose list it is: the wish was added, the purchase is not his to know.
  const sam = await openTab(browser, backend.url, "Sam");
  await expect(sam.page.getByTestId("activity-feed")).toContainText("Mom added 'Kite'");
  await expect(sam.page.getByTestId("activity-feed")).toContainText("Dad added 'Yo-yo'");
  await expect(sam.page.getByTestId("activity-feed")).not.toContainText("marked");

  // The backend restarts on the same database: the feed is read back from it.
  const port = backend.port;
  await backend.stop();
  backend = await Backend.start(backend.db, port);
  await expect(mom.page.getByTestId("connection-status")).toHaveAttribute("data-state", "open", { timeout: 30_000 });
  await mom.page.reload();
  await expect(feed.locator("li")).toHaveCount(3);
  await mom.context.close();
  await sam.context.close();
});
