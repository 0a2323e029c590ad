// A tab's own changes (issue 12). Every mutation sends the realtime client's connection id
// (the `tidings-connection-id` header), and the backend publishes the change's events to
// everyone but that connection: this tab gets a `skipped` frame instead of its echo. So the tab
// applies the change itself, from the mutation's response: `ownEvents` builds the events the
// backend publishes for it (the same topics, event names and payload as
// web-demo/backend/src/events.rs), and `applyOwnEvents` feeds them to the same cache updates
// (cache.ts) and activity feed as a received event. No request beyond the mutation itself.
import type { QueryClient } from "@tanstack/react-query";
import type { WSEvent } from "@tidings/client/react";
import type { Comment, Gift, Item, ListSummary, Member, Occasion } from "./types";
import { liveUpdates, type Entities } from "./cache";

type Entity = (Item | Gift | Occasion | ListSummary) & { id: number };

/** The events the backend publishes for the mutation `method path` (with `body`) answered by
 * `result`, made by `actor`; `[]` for anything that publishes none (login). */
export function ownEvents(method: string, path: string, body: unknown, result: unknown, actor: Member): WSEvent[] {
  const route = `${method} ${path.replace(/\/\d+/g, "/{id}")}`;
  const fields = (body ?? {}) as Record<string, unknown>;
  const item = result as Item;
  const itemTopics = () => [`list:${item.list_id}`, "list-items:all"];
  switch (route) {
    case "POST /lists/{id}/items":
      return build(itemTopics(), "ADDED", item, actor);
    case "PATCH /items/{id}":
      return build(itemTopics(), "UPDATED", item, actor);
    case "PUT /items/{id}/status":
      return build(itemTopics(), "STATUS_CHANGED", item, actor);
    case "PUT /items/{id}/assignee":
      return build(itemTopics(), "ASSIGNED", item, actor);
    case "POST /items/{id}/comments": {
      // The new comment is the item's newest one.
      const comment = item.comments.reduce<Comment | undefined>((a, c) => (!a || c.id > a.id ? c : a), undefined);
      return build(itemTopics(), "COMMENT_ADDED", item, actor, comment);
    }
    case "DELETE /items/{id}":
      return build(itemTopics(), "DELETED", item, actor);
    case "POST /gifts":
      return build(["gifts:all"], "ADDED", result as Gift, actor);
    case "PATCH /gifts/{id}": {
      const statusOnly = Object.keys(fields).length === 1 && "status" in fields;
      return build(["gifts:all"], statusOnly ? "STATUS_CHANGED" : "UPDATED", result as Gift, actor);
    }
    case "DELETE /gifts/{id}":
      return build(["gifts:all"], "DELETED", result as Gift, actor);
    case "POST /occasions":
    case "PATCH /occasions/{id}":
    case "DELETE /occasions/{id}": {
      const occasion = result as Occasion;
      const event = method === "POST" ? "ADDED" : method === "PATCH" ? "UPDATED" : "DELETED";
      return build([`occasion:${occasion.id}`, "occasions:all"], event, occasion, actor);
    }
    case "POST /lists":
      return build(["lists:all"], "ADDED", result as ListSummary, actor);
    case "PATCH /lists/{id}":
      return build(["lists:all"], "UPDATED", result as ListSummary, actor);
    case "DELETE /lists/{id}":
      return build(["lists:all"], "DELETED", result as ListSummary, actor);
    default:
      return [];
  }
}

function build(topics: string[], event: string, entity: Entity, actor: Member, comment?: Comment): WSEvent[] {
  const payload = { ...entity, actor_id: actor.id, actor_name: actor.name, ...(comment ? { comment } : {}) };
  const data = { entity_id: String(entity.id), payload, user_id: String(actor.id), timestamp: new Date().toISOString() };
  return topics.map((topic) => ({ topic, event, data }) as WSEvent);
}

type Listener = (event: WSEvent) => void;
const listeners = new Set<Listener>();

/** Calls `listener` with each of this tab's own events (the activity feed); returns the
 * function that stops it. */
export function onOwnEvent(listener: Listener): () => void {
  listeners.add(listener);
  return () => void listeners.delete(listener);
}

/**
 * Whether the cache already knows better than this tab's own response: someone else's later
 * change of the entity (or its deletion) arrived as an event before the response did. Then the
 * response must not undo it.
 */
function overtaken(data: unknown, entities: Entities | undefined, event: WSEvent): boolean {
  const list = entities?.(data);
  if (!list || event.event === "ADDED" || event.event === "DELETED") return false;
  const mine = event.data.payload as { updated_at?: string };
  const cached = list.find((e) => String(e.id) === event.data.entity_id);
  return !cached || (!!mine.updated_at && cached.updated_at > mine.updated_at);
}

/**
 * Applies this tab's own events as if they had arrived: each live query of the event's topic
 * is updated with its `useLiveQuery` update (in event order, as the client would: a list
 * before the sidebar counts that read it), unless a later change of the entity is already
 * there; one it cannot update from the event is refetched, as an event would have it. Then
 * the activity feed hears them.
 */
export function applyOwnEvents(queryClient: QueryClient, events: WSEvent[]): void {
  for (const event of events) {
    for (const { key, update, entities } of liveUpdates(queryClient, event.topic)) {
      const data = queryClient.getQueryData(key);
      if (data === undefined || overtaken(data, entities, event)) continue;
      let updated = false;
      queryClient.setQueryData(key, (old: unknown) => {
        const next = update(old, event);
        updated = next !== undefined;
        return next === undefined ? old : next;
      });
      if (!updated) void queryClient.invalidateQueries({ queryKey: key, exact: true });
    }
    for (const listener of listeners) listener(event);
  }
}
