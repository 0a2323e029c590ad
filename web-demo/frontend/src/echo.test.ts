import { describe as suite, expect, test } from "vitest";
import { QueryClient, QueryObserver } from "@tanstack/react-query";
import { applyOwnEvents, onOwnEvent, ownEvents } from "./echo";
import type { Gift, Item, ListDetail, ListSummary, Member } from "./types";

const mom: Member = { id: 1, name: "Mom", color: "#000" };

function item(id: number, status: Item["status"], comments: Item["comments"] = []): Item {
  return {
    id,
    list_id: 3,
    list_name: "Sam's wishes",
    recipient_id: null,
    name: `Item ${id}`,
    notes: "",
    status,
    assignee_id: null,
    assignee_name: null,
    created_by: 1,
    created_by_name: "Mom",
    created_at: "t",
    updated_at: "t",
    comments,
  };
}

const gift = { id: 9, name: "Scarf", status: "PLANNED" } as Gift;

suite("the events of this tab's own mutations", () => {
  test("an item change goes to its list and list-items:all, with the actor", () => {
    const events = ownEvents("PUT", "/items/7/status", { status: "PURCHASED" }, item(7, "PURCHASED"), mom);
    expect(events.map((e) => [e.topic, e.event])).toEqual([
      ["list:3", "STATUS_CHANGED"],
      ["list-items:all", "STATUS_CHANGED"],
    ]);
    expect(events[0].data).toMatchObject({ entity_id: "7", user_id: "1" });
    expect(events[0].data.payload).toMatchObject({ id: 7, status: "PURCHASED", actor_id: 1, actor_name: "Mom" });
    expect(ownEvents("POST", "/lists/3/items", { name: "x" }, item(8, "IDEA"), mom)[0].event).toBe("ADDED");
    expect(ownEvents("DELETE", "/items/8", undefined, item(8, "IDEA"), mom)[0].event).toBe("DELETED");
  });

  test("a comment event carries the newest comment", () => {
    const c = (id: number, body: string) => ({ id, item_id: 7, member_id: 1, member_name: "Mom", body, created_at: "t" });
    const [event] = ownEvents("POST", "/items/7/comments", { body: "new" }, item(7, "IDEA", [c(4, "new"), c(2, "old")]), mom);
    expect(event.event).toBe("COMMENT_ADDED");
    expect((event.data.payload as { comment: { body: string } }).comment.body).toBe("new");
  });

  test("a gift edit is STATUS_CHANGED only when it changes the status alone", () => {
    expect(ownEvents("PATCH", "/gifts/9", { status: "GIVEN" }, gift, mom).map((e) => [e.topic, e.event])).toEqual([
      ["gifts:all", "STATUS_CHANGED"],
    ]);
    expect(ownEvents("PATCH", "/gifts/9", { status: "GIVEN", name: "Hat" }, gift, mom)[0].event).toBe("UPDATED");
  });

  test("a request that publishes nothing has no events", () => {
    expect(ownEvents("POST", "/login", { member_id: 1 }, {}, mom)).toEqual([]);
  });
});

suite("applying them", () => {
  test("updates the list, then the sidebar counts from it, and tells the feed", () => {
    const queryClient = new QueryClient();
    const list: ListDetail = {
      id: 3,
      name: "Sam's wishes",
      occasion_id: 1,
      occasion_name: "Christmas",
      recipient_id: 4,
      recipient_name: "Sam",
      item_count: 1,
      done_count: 0,
      items: [item(7, "IDEA")],
    };
    const { items: _, ...summary } = list;
    queryClient.setQueryData(["lists", "3"], list);
    queryClient.setQueryData<ListSummary[]>(["list-items", "summary"], [summary]);
    // The list is on screen (observed), as it is when its item's controls are used.
    const stop = new QueryObserver(queryClient, { queryKey: ["lists", "3"], staleTime: Infinity }).subscribe(() => {});
    const heard: string[] = [];
    const unlisten = onOwnEvent((e) => heard.push(`${e.topic} ${e.event}`));

    applyOwnEvents(queryClient, ownEvents("PUT", "/items/7/status", { status: "PURCHASED" }, item(7, "PURCHASED"), mom));

    expect(queryClient.getQueryData<ListDetail>(["lists", "3"])?.items[0].status).toBe("PURCHASED");
    expect(queryClient.getQueryData<ListSummary[]>(["list-items", "summary"])?.[0]).toMatchObject({
      item_count: 1,
      done_count: 1,
    });
    expect(heard).toEqual(["list:3 STATUS_CHANGED", "list-items:all STATUS_CHANGED"]);
    expect(queryClient.isFetching()).toBe(0);
    unlisten();
    stop();
  });
});

suite("a response overtaken by someone else's event", () => {
  test("does not undo a later change or bring back a deleted item", () => {
    const queryClient = new QueryClient();
    const later = { ...item(7, "RECEIVED"), updated_at: "2026-12-01T10:00:02.000Z" };
    const list = { id: 3, item_count: 1, done_count: 1, items: [later] } as ListDetail;
    queryClient.setQueryData(["lists", "3"], list);
    const mine = { ...item(7, "PURCHASED"), updated_at: "2026-12-01T10:00:01.000Z" };
    applyOwnEvents(queryClient, ownEvents("PUT", "/items/7/status", { status: "PURCHASED" }, mine, mom));
    expect(queryClient.getQueryData<ListDetail>(["lists", "3"])?.items[0].status).toBe("RECEIVED");

    queryClient.setQueryData(["lists", "3"], { ...list, items: [] });
    applyOwnEvents(queryClient, ownEvents("PATCH", "/items/7", { name: "x" }, mine, mom));
    expect(queryClient.getQueryData<ListDetail>(["lists", "3"])?.items).toEqual([]);

    // Its own newer change is applied.
    queryClient.setQueryData(["lists", "3"], { ...list, items: [mine] });
    applyOwnEvents(queryClient, ownEvents("PUT", "/items/7/status", { status: "RECEIVED" }, later, mom));
    expect(queryClient.getQueryData<ListDetail>(["lists", "3"])?.items[0].status).toBe("RECEIVED");
  });
});
