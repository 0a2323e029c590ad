// Requests per change, counted in both tabs (issue 12): the initiator makes none beyond its own
// mutation, the observer at most one per affected query, none where the event updates the
// cache (every item event carries the item). The initiator's mutations name its connection
// (`tidings-connection-id`), so it gets `skipped` frames instead of its own events and applies
// the change from the response. And the read/subscribe gap: an event committed between a
// tab's read and its subscription's ack still reaches the tab (read stamps).
import { expect, test, type Browser, type Page, type WebSocketRoute } from "@playwright/test";
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

/** A frame the server sent a tab: an event (`event`, `topic`) or a reply (`action`). */
interface Frame {
  action?: string;
  event?: string;
  topic?: string;
}

interface Tab {
  page: Page;
  reads: string[];
  /** Frames from the server since the last `settle`. */
  frames: Frame[];
  /** The `tidings-connection-id` header of each of the tab's API mutations. */
  connectionIds: (string | undefined)[];
  /** Closes the tab's WebSocket from the network's side (the client reconnects). */
  drop(): Promise<void>;
}

/** A tab logged in as `name` on the first list, counting its API reads (GETs). */
async function tab(browser: Browser, name: string): Promise<Tab> {
  const context = await browser.newContext();
  const page = await context.newPage();
  const reads: string[] = [];
  const frames: Frame[] = [];
  const connectionIds: (string | undefined)[] = [];
  let socket: WebSocketRoute | null = null;
  await page.routeWebSocket(/\/ws/, (ws) => {
    socket = ws;
    const server = ws.connectToServer();
    server.onMessage((message) => {
      frames.push(JSON.parse(String(message)) as Frame);
      ws.send(message);
    });
  });
  page.on("request", (r) => {
    const url = new URL(r.url());
    if (!url.pathname.startsWith("/api/")) return;
    if (r.method() === "GET") reads.push(url.pathname);
    else if (url.pathname !== "/api/login") connectionIds.push(r.headers()["tidings-connection-id"]);
  });
  page.on("dialog", (d) => void d.accept());
  await page.goto(backend.url);
  await page.getByTestId(`login-${name}`).click();
  await expect(page.getByTestId("connection-status")).toHaveAttribute("data-state", "open", { timeout: 15_000 });
  await expect(page.getByTestId("list-view")).toBeVisible();
  return { page, reads, frames, connectionIds, drop: async () => void (await socket?.close({ code: 1012, reason: "test" })) };
}

const item = (page: Page, name: string) => page.locator(`[data-testid="item"][data-item-name="${name}"]`);

/** Waits out the coalescing windows, then returns the reads made since the last call and
 * clears them (and the frames). */
async function settle(...tabs: { reads: string[]; frames: Frame[] }[]): Promise<string[][]> {
  await new Promise((r) => setTimeout(r, 1_500));
  return tabs.map((t) => {
    t.frames.splice(0);
    return t.reads.splice(0);
  });
}

/** The topics of the events (`event`) and of the `skipped` frames (`skipped`) among `frames`. */
function received(frames: Frame[]): { event: string[]; skipped: string[] } {
  const topics = (f: Frame[]) => [...new Set(f.map((x) => x.topic ?? ""))].sort();
  return {
    event: topics(frames.filter((f) => f.event !== undefined && f.action === undefined)),
    skipped: topics(frames.filter((f) => f.action === "skipped")),
  };
}

/** What a tab shows: each list item's name and status, the sidebar counts, the activity feed. */
async function shown(page: Page) {
  const items = await page
    .getByTestId("item")
    .evaluateAll((els) =>
      els.map((el) => `${el.getAttribute("data-item-name")}=${(el.querySelector("[data-testid=item-status]") as HTMLSelectElement | null)?.value}`),
    );
  const counts = await page.locator('[data-testid^="nav-list-count-"]').allTextContents();
  const feed = await page.getByTestId("activity-feed").locator(".feed-text").allTextContents();
  return { items: items.sort(), counts, feed: feed.sort() };
}

test("requests per change: none for the initiator, none for an observer whose cache the event updates", async ({
  browser,
}) => {
  const mom = await tab(browser, "Mom"); // the initiator
  const dad = await tab(browser, "Dad"); // the observer
  await settle(mom, dad); // the initial load (and its read/ack gap check)
  const rows: string[] = [];
  // The initiator's frames per change: `skipped` instead of the events of its own mutations.
  let frames = received([]);
  const count = async (change: string, done: () => Promise<void>) => {
    await done();
    await new Promise((r) => setTimeout(r, 1_500));
    frames = received(mom.frames);
    const [initiator, observer] = await settle(mom, dad);
    rows.push(`| ${change} | ${initiator.length} | ${observer.length} | ${[...initiator, ...observer].join(" ") || "-"} |`);
    return { initiator, observer };
  };
  const itemTopics = ["list-items:all", "list:1"];
  const ownChange = { event: [], skipped: itemTopics };

  let r = await count("add an item", async () => {
    await mom.page.getByTestId("new-item-name").fill("Kite");
    await mom.page.getByTestId("add-item").click();
    await expect(item(dad.page, "Kite")).toBeVisible();
    await expect(dad.page.getByTestId("nav-list-count-1")).toHaveText("1/4");
  });
  expect(r).toEqual({ initiator: [], observer: [] });
  expect(frames).toEqual(ownChange);

  r = await count("status change", async () => {
    await item(mom.page, "Kite").getByTestId("item-status").selectOption("PURCHASED");
    await expect(mom.page.getByTestId("nav-list-count-1")).toHaveText("2/4");
    await expect(mom.page.getByTestId("activity-feed")).toContainText("Mom marked 'Kite' Purchased");
    await expect(item(dad.page, "Kite").getByTestId("item-status")).toHaveValue("PURCHASED");
    await expect(dad.page.getByTestId("nav-list-count-1")).toHaveText("2/4");
  });
  expect(r).toEqual({ initiator: [], observer: [] });
  expect(frames).toEqual(ownChange);

  r = await count("comment", async () => {
    await item(mom.page, "Kite").getByTestId("toggle-comments").click();
    await item(mom.page, "Kite").getByTestId("comment-input").fill("Red one");
    await item(mom.page, "Kite").getByTestId("send-comment").click();
    await expect(item(dad.page, "Kite").getByTestId("toggle-comments")).toContainText("1");
    await expect(item(mom.page, "Kite").getByTestId("toggle-comments")).toContainText("1");
    await expect(mom.page.getByTestId("activity-feed")).toContainText("Mom commented on 'Kite': “Red one”");
  });
  expect(r).toEqual({ initiator: [], observer: [] });
  expect(frames).toEqual(ownChange);

  r = await count("delete", async () => {
    await item(mom.page, "Kite").getByTestId("delete-item").click();
    await expect(item(dad.page, "Kite")).toHaveCount(0);
    await expect(item(mom.page, "Kite")).toHaveCount(0);
    await expect(mom.page.getByTestId("nav-list-count-1")).toHaveText("1/3");
    await expect(dad.page.getByTestId("nav-list-count-1")).toHaveText("1/3");
  });
  expect(r).toEqual({ initiator: [], observer: [] });
  expect(frames).toEqual(ownChange);

  r = await count("burst of 10 adds", async () => {
    // Ten mutations at once from a script in the initiator's tab, without its connection id:
    // the tab gets their events like any other (its own requests: POSTs, not reads).
    await mom.page.evaluate(async () => {
      const { token } = JSON.parse(sessionStorage.getItem("tidings-demo.session")!) as { token: string };
      await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          fetch("/api/lists/1/items", {
            method: "POST",
            headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
            body: JSON.stringify({ name: `Burst ${i}` }),
          }),
        ),
      );
    });
    await expect(dad.page.locator('[data-testid="item"][data-item-name^="Burst "]')).toHaveCount(10);
    await expect(dad.page.getByTestId("nav-list-count-1")).toHaveText("1/13");
    await expect(mom.page.getByTestId("nav-list-count-1")).toHaveText("1/13");
  });
  expect(r).toEqual({ initiator: [], observer: [] });
  // List 1 is Sam's: each change also went out as Sam's redacted copy (only_users), which
  // takes a position every other tab skips (see web-demo/backend/src/surprise.rs).
  expect(frames).toEqual({ event: itemTopics, skipped: itemTopics });

  // The observer's socket drops; a change happens while it is away. On reconnect every topic
  // resumes from its position (the list's missed event replayed, the occasions' "no event
  // yet" known from their acks): nothing is refetched.
  r = await count("observer reconnects after missing a change", async () => {
    await dad.drop();
    await expect(dad.page.getByTestId("connection-status")).not.toHaveAttribute("data-state", "open");
    await item(mom.page, "Burst 0").getByTestId("item-status").selectOption("SELECTED");
    await expect(dad.page.getByTestId("connection-status")).toHaveAttribute("data-state", "open", { timeout: 15_000 });
    await expect(item(dad.page, "Burst 0").getByTestId("item-status")).toHaveValue("SELECTED");
  });
  expect(r).toEqual({ initiator: [], observer: [] });
  expect(frames).toEqual(ownChange);

  // A list the observer does not hold: its sidebar counts are refetched, once per burst.
  r = await count("burst of 10 adds on a list not open", async () => {
    const token = await backend.token(1);
    await Promise.all(
      Array.from({ length: 10 }, (_, i) => backend.call(token, "POST", "/lists/2/items", { name: `Other ${i}` })),
    );
    await expect(dad.page.getByTestId("nav-list-count-2")).toHaveText(/\/1[0-9]$/);
  });
  // The backend commits the ten one after the other, so their events are spread over its
  // write time: refetches are gathered per burst of events that arrive together (a refetch
  // in flight gets exactly one follow-up), far fewer than one per event.
  expect(r.observer.filter((p) => p === "/api/lists").length).toBeLessThan(10);
  expect(r.observer.filter((p) => p !== "/api/lists")).toEqual([]);

  // Every mutation the UI made named the initiator's connection; both tabs end up the same.
  expect(mom.connectionIds.filter((id) => id === undefined)).toHaveLength(10); // the burst
  expect(new Set(mom.connectionIds.filter((id) => id !== undefined)).size).toBe(1);
  expect(mom.connectionIds.find((id) => id !== undefined)).toMatch(/^[A-Za-z0-9_-]{1,64}$/);
  await expect.poll(async () => shown(dad.page)).toEqual(await shown(mom.page));

  console.log(["| change | initiator GETs | observer GETs | which |", "|---|---|---|---|", ...rows].join("\n"));
});

test("an event between a tab's read and its subscription's ack is not lost", async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  // Hold the tab's subscribe to list:1 back for 1.5 s on its way to the server.
  let held = 0;
  const sent: string[] = [];
  const reads: string[] = [];
  page.on("request", (r) => {
    if (r.method() === "GET") reads.push(new URL(r.url()).pathname);
  });
  await page.routeWebSocket(/\/ws/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((message) => {
      const text = String(message);
      sent.push(text);
      if (text.includes('"subscribe"') && text.includes('"list:1"') && held++ === 0) {
        setTimeout(() => server.send(message), 1_500);
      } else {
        server.send(message);
      }
    });
  });
  const token = await backend.token(1);
  const list = (await backend.call(token, "GET", "/lists/1")) as { items: { id: number; name: string; status: string }[] };
  const target = list.items.find((i) => i.status !== "RECEIVED")!;
  const read = page.waitForResponse((r) => new URL(r.url()).pathname === "/api/lists/1");
  await page.goto(backend.url);
  await page.getByTestId("login-Dad").click();
  await read;
  // The tab has read the list; its subscription is not acknowledged yet. Commit a change now.
  await backend.call(token, "PUT", `/items/${target.id}/status`, { status: "RECEIVED" });
  await expect(item(page, target.name).getByTestId("item-status")).toHaveValue("RECEIVED", { timeout: 10_000 });
  expect(held).toBeGreaterThan(0);
  // Through the read stamp: list:1 resumed from the read's position (the event replayed),
  // the list not read again.
  const resumed = sent
    .map((t) => JSON.parse(t) as { action: string; topic?: string; since?: unknown })
    .filter((m) => m.action === "subscribe" && m.topic === "list:1" && m.since);
  expect(resumed.length).toBeGreaterThan(0);
  expect(reads.filter((p) => p === "/api/lists/1")).toHaveLength(1);
  await context.close();
});
