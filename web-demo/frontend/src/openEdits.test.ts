import { expect, test } from "vitest";
import type { WSEvent } from "@tidings/bindings";
import { orphanFrom, type Draft } from "./openEdits";

function event(kind: WSEvent["event"], id: number, payload: Record<string, unknown>): WSEvent {
  return {
    topic: "gifts:all",
    event: kind,
    data: { entity_id: String(id), payload, user_id: "2", timestamp: "2026-12-02T07:00:00Z" },
  };
}

const draft: Draft = { name: "Scooter", fields: [{ label: "Name", value: "Scooter with lights" }] };
const drafts = new Map([[7, draft]]);

test("a DELETED event of an entity being edited orphans its draft, with who deleted it", () => {
  expect(orphanFrom(drafts, event("DELETED", 7, { name: "Scooter", actor_name: "Dad" }))).toEqual({
    ...draft,
    id: 7,
    by: "Dad",
  });
});

test("other events, and deletes of entities nobody edits, orphan nothing", () => {
  expect(orphanFrom(drafts, event("UPDATED", 7, { actor_name: "Dad" }))).toBeNull();
  expect(orphanFrom(drafts, event("DELETED", 8, { actor_name: "Dad" }))).toBeNull();
});

test("a delete without an actor's name (another publisher) says nobody in particular", () => {
  expect(orphanFrom(drafts, event("DELETED", 7, {}))?.by).toBeNull();
});
