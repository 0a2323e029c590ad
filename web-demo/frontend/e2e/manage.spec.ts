// Occasions and lists are created, renamed and deleted in the UI, live in every open tab, the
// creator's included (issue 16); a new occasion is whole after a reload.
import { expect, test, type Page } from "@playwright/test";
import { join } from "node:path";
import { Backend, removeTempDir, tempDir } from "./backend";
import { openTab } from "./members";

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

const section = (page: Page, name: string) => page.locator("nav .occasion").filter({ hasText: name });

test("two tabs: occasions and lists created, renamed and deleted show up live in both", async ({ browser }) => {
  const mom = await openTab(browser, backend.url, "Mom");
  const dad = await openTab(browser, backend.url, "Dad");
  for (const t of [mom, dad]) t.page.on("dialog", (d) => void d.accept());

  // Mom creates an occasion.
  await mom.page.getByTestId("new-occasion").click();
  await mom.page.getByTestId("new-occasion-name").fill("Easter");
  await mom.page.getByTestId("new-occasion-date").fill("2027-03-28");
  await mom.page.getByTestId("create-occasion").click();
  for (const t of [mom, dad]) {
    await expect(section(t.page, "Easter")).toBeVisible({ timeout: 3_000 });
    await expect(section(t.page, "Easter")).toContainText("No lists yet");
  }

  // A list in it, for Alex: Mom's tab opens it, Dad's sidebar shows it.
  await section(mom.page, "Easter").getByRole("button", { name: "+ New list" }).click();
  await mom.page.getByTestId("new-list-name").fill("Chocolate eggs");
  await mom.page.getByTestId("new-list-recipient").selectOption({ label: "Alex" });
  await mom.page.getByTestId("create-list").click();
  await expect(mom.page.getByTestId("list-title")).toHaveText("Chocolate eggs");
  await expect(section(dad.page, "Easter").getByRole("link", { name: /Chocolate eggs/ })).toBeVisible({ timeout: 3_000 });
  await section(dad.page, "Easter").getByRole("link", { name: /Chocolate eggs/ }).click();
  await expect(dad.page.getByTestId("list-title")).toHaveText("Chocolate eggs");

  // Renamed by Mom: Dad's sidebar and open list follow.
  await mom.page.getByTestId("rename-list").click();
  await mom.page.getByTestId("rename-list-input").fill("Easter eggs");
  await mom.page.getByTestId("rename-list-save").click();
  for (const t of [mom, dad]) {
    await expect(t.page.getByTestId("list-title")).toHaveText("Easter eggs", { timeout: 3_000 });
    await expect(section(t.page, "Easter").getByRole("link", { name: /Easter eggs/ })).toBeVisible();
  }
  // Dad adds a wish, then Mom deletes the list (confirmed): Dad is told, the sidebar drops it.
  await dad.page.getByTestId("new-item-name").fill("Bunny");
  await dad.page.getByTestId("add-item").click();
  await expect(mom.page.locator('[data-item-name="Bunny"]')).toBeVisible();
  await mom.page.getByTestId("delete-list").click();
  await expect(dad.page.getByTestId("list-gone")).toBeVisible({ timeout: 3_000 });
  for (const t of [mom, dad]) await expect(section(t.page, "Easter").getByRole("link")).toHaveCount(0);

  // The occasion renamed by Dad: Mom's tab follows; after a reload it is whole.
  await section(dad.page, "Easter").getByRole("button", { name: "Rename Easter" }).click();
  await dad.page.getByTestId("rename-occasion-input").fill("Easter 2027");
  await dad.page.getByTestId("rename-occasion-save").click();
  await expect(section(mom.page, "Easter 2027")).toBeVisible({ timeout: 3_000 });
  await mom.page.reload();
  await expect(section(mom.page, "Easter 2027")).toContainText("No lists yet");
  await expect(section(mom.page, "Easter 2027")).toContainText("2027");

  // Deleted by Mom: gone from both.
  await section(mom.page, "Easter 2027").getByRole("button", { name: "Delete Easter 2027" }).click();
  for (const t of [mom, dad]) await expect(section(t.page, "Easter 2027")).toHaveCount(0, { timeout: 3_000 });
  await mom.context.close();
  await dad.context.close();
});
