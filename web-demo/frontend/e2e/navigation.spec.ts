// Addresses and words (issue 16): an address with no page says "Not found" (never another
// list), an unknown list id says so at once, and failures and statuses read as the UI's own
// words ("Can't reach the server", "Purchased"), never "Failed to fetch" or `PURCHASED`.
import { expect, test } from "@playwright/test";
import { join } from "node:path";
import { Backend, removeTempDir, tempDir } from "./backend";
import { itemCard, loginAs } from "./helpers";

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

test("an address with no page shows a not-found page, not the first list", async ({ browser }) => {
  const mom = await loginAs(browser, backend, "Mom", { hash: "#/lists/abc" });
  const page = mom.page;
  await expect(page.getByTestId("not-found")).toContainText("Not found");
  await expect(page.getByTestId("list-view")).toHaveCount(0);
  // Another unknown route, reached by a hash change.
  await page.evaluate(() => (location.hash = "#/nope"));
  await expect(page.getByTestId("not-found")).toBeVisible();
  await expect(page.getByTestId("list-view")).toHaveCount(0);
  // The page's link leads back.
  await page.getByTestId("not-found-home").click();
  await expect(page.getByTestId("list-title")).toHaveText("Sam's Christmas wishes");
  await mom.context.close();
});

test("a list id that does not exist is not found at once (the API's 404, no retry)", async ({ browser }) => {
  const mom = await loginAs(browser, backend, "Mom");
  const page = mom.page;
  await expect(page.getByTestId("list-view")).toBeVisible();
  let listRequests = 0;
  page.on("request", (r) => {
    if (r.url().endsWith("/api/lists/99999")) listRequests++;
  });
  const started = Date.now();
  await page.evaluate(() => (location.hash = "#/lists/99999"));
  await expect(page.getByTestId("not-found")).toContainText("There is no list 99999", { timeout: 1_500 });
  const ms = Date.now() - started;
  console.log(`#/lists/99999: not-found page after ${ms} ms`);
  expect(ms).toBeLessThan(1_500);
  expect(listRequests).toBe(1);
  await expect(page.getByTestId("list-view")).toHaveCount(0);

  // A fresh load of the same address too.
  await page.reload();
  await expect(page.getByTestId("not-found")).toContainText("There is no list 99999", { timeout: 3_000 });
  await mom.context.close();
});

test("network failures read as words, and the page recovers when the server is back", async ({ browser }) => {
  const mom = await loginAs(browser, backend, "Mom", { topics: ["list:1"] });
  const page = mom.page;
  await expect(page.getByTestId("list-view")).toBeVisible();

  // The API becomes unreachable (the request fails in the browser: "Failed to fetch").
  let offline = true;
  await page.route("**/api/**", (route) => (offline ? route.abort("internetdisconnected") : route.fallback()));
  await page.getByTestId("new-item-name").fill("Marbles");
  await page.getByTestId("add-item").click();
  const error = page.getByRole("alert").filter({ hasText: "Can't reach the server" });
  await expect(error).toBeVisible();
  await expect(page.locator("body")).not.toContainText("Failed to fetch");

  // Opening another list while offline: it says it retries, in words.
  await page.getByTestId("nav-list-2").click();
  await expect(page.getByRole("status").filter({ hasText: "Can't reach the server" })).toContainText("Retrying");
  await expect(page.locator("body")).not.toContainText("Failed to fetch");
  offline = false;
  await expect(page.getByTestId("list-title")).toHaveText("Alex's Christmas wishes", { timeout: 15_000 });
  await mom.context.close();
});

test("statuses carry the same names in the pills and in the activity feed", async ({ browser }) => {
  const mom = await loginAs(browser, backend, "Mom", { topics: ["list:1"] });
  const dad = await loginAs(browser, backend, "Dad", { topics: ["list:1"] });
  await itemCard(dad.page, "Lego set").getByTestId("item-status").selectOption({ label: "Purchased" });
  const feed = mom.page.getByTestId("activity-feed");
  await expect(feed).toContainText("Dad marked 'Lego set' Purchased");
  await expect(feed).not.toContainText("PURCHASED");
  // The pill's options are the same words.
  const options = await itemCard(mom.page, "Lego set").getByTestId("item-status").locator("option").allTextContents();
  expect(options).toEqual(["Idea", "Selected", "Purchased", "Received"]);
  // Dad's own feed says it the same way.
  await expect(dad.page.getByTestId("activity-feed")).toContainText("Dad marked 'Lego set' Purchased");
  await mom.context.close();
  await dad.context.close();
});
