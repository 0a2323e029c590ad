// How the demo's queries follow events without refetching: every item, gift and occasion
// event carries the whole entity (plus who made the change), so a list, the gift table and an
// occasion are updated in the cache from the event itself. Only the sidebar's counts of a list
// this tab does not hold are refetched, once per burst.
import type { QueryClient } from "@tanstack/react-query";
import { applyEntityEvent, type WSEvent } from "@tidings/client/react";
import type { Gift, Item, ListDetail, ListSummary, Occasion, OccasionDetail } from "./types";

const DONE = new Set(["PURCHASED", "RECEIVED"]);

/** The event's entity, without the fields the backend adds for the activity feed. */
function entity<T>(event: WSEvent): T {
  const { actor_id: _id, actor_name: _name, comment: _comment, ...rest } = event.data.payload as Record<string, unknown>;
  return rest as T;
}

/** The event with its payload reduced to the entity (for `applyEntityEvent`). */
function bare(event: WSEvent): WSEvent {
  return { ...event, data: { ...event.data, payload: entity(event) } };
}

/** A list after an item event on `list:{id}`, with its counts recomputed. */
export function listAfter(old: ListDetail | undefined, event: WSEvent): ListDetail | undefined {
  const items = applyEntityEvent<Item>(old?.items, bare(event));
  if (!old || !items) return undefined;
  // `null`: the list is for this member, and what was bought is a surprise.
  const done = old.done_count === null ? null : items.filter((i) => DONE.has(i.status)).length;
  return { ...old, items, item_count: items.length, done_count: done };
}

/**
 * The sidebar's lists after an event on `list-items:all`. Only adding, deleting and status
 * changes move the counts; when this tab holds the list live, its `list:{id}` event (delivered
 * just before) already recounted it. Otherwise `undefined`: refetch.
 */
export function summariesAfter(
  queryClient: QueryClient,
  old: ListSummary[] | undefined,
  event: WSEvent,
): ListSummary[] | undefined {
  if (!old) return undefined;
  if (!["ADDED", "DELETED", "STATUS_CHANGED"].includes(event.event)) return old;
  const listId = entity<Item>(event).list_id;
  const key = ["lists", String(listId)];
  const detail = queryClient.getQueryData<ListDetail>(key);
  const observed = queryClient.getQueryCache().find({ queryKey: key, exact: true })?.getObserversCount() ?? 0;
  if (!detail || observed === 0) return undefined;
  return old.map((l) => (l.id === listId ? { ...l, item_count: detail.item_count, done_count: detail.done_count } : l));
}

/** The gift table after a gift event. */
export function giftsAfter(old: Gift[] | undefined, event: WSEvent): Gift[] | undefined {
  return applyEntityEvent<Gift>(old, bare(event));
}

/** An occasion after an event on `occasion:{id}` (its lists and gifts are kept). */
export function occasionAfter(old: OccasionDetail | undefined, event: WSEvent): OccasionDetail | undefined {
  return old && { ...old, ...entity<Partial<OccasionDetail>>(event) };
}

/** The sidebar's lists after a list was created, renamed or deleted (`lists:all`): a new list
 * starts empty, a renamed one keeps its counts. */
export function listsIndexAfter(old: ListSummary[] | undefined, event: WSEvent): ListSummary[] | undefined {
  if (!old) return undefined;
  const list = entity<ListSummary>(event);
  if (event.event === "DELETED") return old.filter((l) => String(l.id) !== event.data.entity_id);
  if (old.some((l) => l.id === list.id))
    return old.map((l) => (l.id === list.id ? { ...l, name: list.name } : l));
  return [...old, list];
}

/** The occasions after one was created, edited or deleted (`occasions:all`), soonest first. */
export function occasionsAfter(old: Occasion[] | undefined, event: WSEvent): Occasion[] | undefined {
  const next = applyEntityEvent<Occasion>(old, bare(event));
  return next && [...next].sort((a, b) => (a.date === b.date ? a.id - b.id : a.date < b.date ? -1 : 1));
}

type Update = (old: unknown, event: WSEvent) => unknown;
/** The entities a query's data holds (items of a list, gifts), with their last change. */
export type Entities = (data: unknown) => { id: number; updated_at: string }[] | undefined;

/**
 * The live queries of `topic` and how an event updates each, in the order the views register
 * them (a list before the sidebar counts): the same `queryKey`/`update` pairs their
 * `useLiveQuery` calls pass (ListView, Dashboard, GiftsView, OccasionSection). For the
 * tab's own changes (echo.ts), which arrive as a response instead of an event.
 */
export function liveUpdates(
  queryClient: QueryClient,
  topic: string,
): { key: string[]; update: Update; entities?: Entities }[] {
  const [kind, id] = topic.split(":");
  const u = <T,>(f: (old: T | undefined, event: WSEvent) => T | undefined) => f as Update;
  if (kind === "list" && id)
    return [{ key: ["lists", id], update: u(listAfter), entities: (data) => (data as ListDetail | undefined)?.items }];
  if (topic === "list-items:all")
    return [{ key: ["list-items", "summary"], update: u<ListSummary[]>((old, e) => summariesAfter(queryClient, old, e)) }];
  if (topic === "gifts:all") return [{ key: ["gifts"], update: u(giftsAfter), entities: (data) => data as Gift[] | undefined }];
  if (kind === "occasion" && id) return [{ key: ["occasions", id], update: u(occasionAfter) }];
  if (topic === "lists:all") return [{ key: ["list-items", "summary"], update: u(listsIndexAfter) }];
  if (topic === "occasions:all") return [{ key: ["occasions"], update: u(occasionsAfter) }];
  return [];
}
