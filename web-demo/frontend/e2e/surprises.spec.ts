// Surprises kept by the server, seen from the recipient's browser (issue 16): Sam has his own
// wish list (list 1) open while Mom adds a wish to it, Dad buys it, takes it and comments, and
// Mom plans a gift for him. Sam sees the wish appear, never its status, buyer or comment, nor
// the gift; and nothing of it reached his browser at all: every WebSocket frame and every API
// answer his page received is checked, before and after a reload.
import { expect, test } from "@playwright/test";
import { join } from "node:path";
import { Backend, removeTempDir, tempDir } from "./backend";
import { itemCard, openTab, type Tab } from "./members";

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

const SAM = 4;
const SECRETS = ["Got it at the shop", "Secret drone"];

/** Every item in `value` that is on one of Sam's lists: without status, assignee, comments. */
function assertKept(what: string, text: string) {
  for (const secret of SECRETS) expect(text, `${what} leaks ${secret}`).not.toContain(secret);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return;
  }
  const visit = (v: unknown) => {
    if (Array.isArray(v)) return v.forEach(visit);
    if (!v || typeof v !== "object") return;
    const o = v as Record<string, unknown>;
    if ("list_id" in o && "status" in o && o.recipient_id === SAM) {
      expect(o.status, `${what}: ${JSON.stringify(o)}`).toBe("HIDDEN");
      expect(o.assignee_id ?? null).toBeNull();
      expect(o.comments).toEqual([]);
    }
    if ("done_count" in o && o.recipient_id === SAM) expect(o.done_count, what).toBeNull();
    if ("giver_id" in o) expect(o.recipient_id, `${what}: a gift for Sam`).not.toBe(SAM);
    Object.values(o).forEach(visit);
  };
  visit(value);
}

function assertAllKept(sam: Tab) {
  // Recorded: the wish's events and the reads did reach the page.
  expect(sam.frames.some((f) => f.includes('"event"') && f.includes('"Kite"'))).toBe(true);
  expect(sam.answers.some((a) => a.path === "/api/lists/1")).toBe(true);
  for (const frame of sam.frames) assertKept("a frame to Sam", frame);
  for (const { path, body } of sam.answers) assertKept(path, body);
}

test("the recipient's browser never receives the status, buyer, comments or gifts for him", async ({ browser }) => {
  const sam = await openTab(browser, backend.url, "Sam", { hash: "#/lists/1" });
  const mom = await openTab(browser, backend.url, "Mom", { hash: "#/lists/1" });
  const dad = await openTab(browser, backend.url, "Dad", { hash: "#/lists/1" });
  await expect(sam.page.getByTestId("list-surprise")).toBeVisible();
  // The seed's bike helmet was bought by Dad: Sam sees the wish, not that.
  await expect(itemCard(sam.page, "Bike helmet").getByTestId("item-surprise")).toBeVisible();
  await expect(itemCard(sam.page, "Bike helmet").getByTestId("item-status")).toHaveCount(0);
  await expect(sam.page.getByTestId("nav-list-count-1")).toHaveText("3");

  // Mom adds a wish to Sam's list: Sam sees it live, as a surprise.
  await mom.page.getByTestId("new-item-name").fill("Kite");
  await mom.page.getByTestId("add-item").click();
  await expect(itemCard(sam.page, "Kite").getByTestId("item-surprise")).toBeVisible();
  await expect(sam.page.getByTestId("nav-list-count-1")).toHaveText("4");

  // Dad buys it, takes it and comments.
  const kite = itemCard(dad.page, "Kite");
  await kite.getByTestId("item-status").selectOption("PURCHASED");
  await kite.getByTestId("item-assignee").selectOption({ label: "Dad" });
  await kite.getByTestId("toggle-comments").click();
  await kite.getByTestId("comment-input").fill("Got it at the shop");
  await kite.getByTestId("send-comment").click();
  await expect(itemCard(mom.page, "Kite").getByTestId("toggle-comments")).toContainText("1");
  await expect(itemCard(mom.page, "Kite").getByTestId("item-status")).toHaveValue("PURCHASED");
  // Mom plans a gift for Sam (and one for Alex that Sam may see).
  const token = await backend.token(1);
  await backend.call(token, "POST", "/gifts", { occasion_id: 1, recipient_id: SAM, giver_id: 2, name: "Secret drone" });
  await backend.call(token, "POST", "/gifts", { occasion_id: 1, recipient_id: 3, name: "Scarf" });
  await expect(mom.page.getByTestId("activity-feed")).toContainText("Secret drone");
  // Sam's feed hears of the scarf (the last change): everything before it has reached him.
  await expect(sam.page.getByTestId("activity-feed")).toContainText("Scarf");
  await expect(sam.page.getByTestId("activity-feed")).toContainText("Mom added 'Kite'");
  await expect(sam.page.getByTestId("activity-feed")).not.toContainText("marked 'Kite'");
  await expect(sam.page.getByTestId("activity-feed")).not.toContainText("'Kite' to Dad");
  await expect(sam.page.getByTestId("nav-list-count-1")).toHaveText("4");
  await expect(itemCard(sam.page, "Kite").getByTestId("item-surprise")).toBeVisible();

  // Sam may still edit his wish: the others see it, and still see that it was bought.
  await itemCard(sam.page, "Kite").getByTestId("edit-item").click();
  await itemCard(sam.page, "Kite").getByTestId("edit-notes").fill("any colour");
  await itemCard(sam.page, "Kite").getByTestId("save-edit").click();
  await expect(itemCard(sam.page, "Kite")).toContainText("any colour");
  await expect(itemCard(sam.page, "Kite").getByTestId("item-surprise")).toBeVisible();
  await expect(itemCard(mom.page, "Kite")).toContainText("any colour");
  await expect(itemCard(mom.page, "Kite").getByTestId("item-status")).toHaveValue("PURCHASED");
  await expect(itemCard(mom.page, "Kite").getByTestId("toggle-comments")).toContainText("1");

  // The gift planner: the scarf for Alex, nothing for Sam.
  await sam.page.getByTestId("nav-gifts").click();
  await expect(sam.page.getByTestId("gift").filter({ hasText: "Scarf" })).toBeVisible();
  await expect(sam.page.getByText("Secret drone")).toHaveCount(0);
  assertAllKept(sam);
  // The events did go out: Mom's browser received them.
  expect(mom.frames.join("\n")).toContain("Got it at the shop");

  // A reload reads everything again (lists, gifts, the feed from the database).
  const before = sam.frames.length;
  await sam.page.goto(`${backend.url}/#/lists/1`);
  await sam.page.reload();
  await expect(itemCard(sam.page, "Kite").getByTestId("item-surprise")).toBeVisible();
  await expect(sam.page.getByTestId("activity-feed")).toContainText("Mom added 'Kite'");
  expect(sam.frames.length).toBeGreaterThan(before);
  assertAllKept(sam);

  for (const t of [sam, mom, dad]) await t.context.close();
});
