import { describe as suite, expect, test } from "vitest";
import type { WSEvent } from "@tidings/bindings";
import { describe } from "./activity";

function event(topic: string, kind: WSEvent["event"], payload: Record<string, unknown>): WSEvent {
  return {
    topic,
    event: kind,
    data: { entity_id: "7", payload, user_id: "1", timestamp: "2026-11-26T10:30:00.000Z" },
  };
}

const lego = { name: "Lego set", list_name: "Sam's Christmas wishes", actor_name: "Mom" };

suite("activity sentences", () => {
  test("item events", () => {
    expect(describe(event("list-items:all", "ADDED", lego))).toBe("Mom added 'Lego set' to Sam's Christmas wishes");
    expect(describe(event("list-items:all", "STATUS_CHANGED", { ...lego, status: "PURCHASED" }))).toBe(
      "Mom marked 'Lego set' Purchased",
    );
    expect(describe(event("list:1", "ASSIGNED", { ...lego, assignee_name: "Dad" }))).toBe(
      "Mom assigned 'Lego set' to Dad",
    );
    expect(describe(event("list:1", "ASSIGNED", { ...lego, assignee_name: null }))).toBe("Mom unassigned 'Lego set'");
    expect(describe(event("list:1", "COMMENT_ADDED", { ...lego, comment: { body: "On sale!" } }))).toBe(
      "Mom commented on 'Lego set': “On sale!”",
    );
    expect(describe(event("list:1", "UPDATED", lego))).toBe("Mom edited 'Lego set'");
    expect(describe(event("list:1", "DELETED", lego))).toBe("Mom removed 'Lego set'");
  });

  test("gift events", () => {
    const scarf = { name: "Scarf", recipient_name: "Alex", actor_name: "Dad", status: "WRAPPED" };
    expect(describe(event("gifts:all", "ADDED", scarf))).toBe("Dad planned 'Scarf' for Alex");
    expect(describe(event("gifts:all", "STATUS_CHANGED", scarf))).toBe("Dad marked gift 'Scarf' Wrapped");
    expect(describe(event("gifts:all", "DELETED", scarf))).toBe("Dad dropped gift 'Scarf'");
  });

  test("an event from another publisher without actor_name still reads", () => {
    expect(describe(event("list:1", "UPDATED", { name: "Kite" }))).toBe("Member 1 edited 'Kite'");
  });
});
