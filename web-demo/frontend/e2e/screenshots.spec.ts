// The phone screenshot of the README (docs/demo-phone.png, 390 px wide), made only on request:
// `./scripts/screenshots` (UPDATE_SCREENSHOT=1) runs this and the live test that makes the
// desktop one (docs/demo.png). A plain test run skips it and leaves the tracked files as they were.
import { expect, test } from "@playwright/test";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { Backend, removeTempDir, tempDir } from "./backend";
import { itemCard, openTab } from "./members";

const PHONE = process.env.UPDATE_SCREENSHOT
  ? fileURLToPath(new URL("../../../docs/demo-phone.png", import.meta.url))
  : undefined;

test("screenshot: the demo on a phone", async ({ browser }) => {
  test.skip(!PHONE, "only with UPDATE_SCREENSHOT=1 (./scripts/screenshots)");
  const dir = tempDir();
  const backend = await Backend.start(join(dir, "demo.sqlite"));
  try {
    const mom = await openTab(browser, backend.url, "Mom", {
      hash: "#/lists/1",
      viewport: { width: 390, height: 844 },
    });
    const dad = await openTab(browser, backend.url, "Dad", { hash: "#/lists/1" });
    await dad.page.getByTestId("new-item-name").fill("Telescope");
    await dad.page.getByTestId("add-item").click();
    await expect(itemCard(mom.page, "Telescope")).toBeVisible();
    await itemCard(dad.page, "Telescope").getByTestId("item-status").selectOption("SELECTED");
    await expect(itemCard(mom.page, "Telescope").getByTestId("item-status")).toHaveValue("SELECTED");
    await mom.page.screenshot({ path: PHONE, animations: "disabled" });
    await mom.context.close();
    await dad.context.close();
  } finally {
    await backend.stop();
    removeTempDir(dir);
  }
});
