// Cache updates from events, for `useLiveQuery({ update })`: pure functions, no React, so the
// react-server entry (./server.ts) exports them too.

import type { WSEvent } from "../index.js";

/**
 * Applies an entity event to a list of entities, for {@link UseLiveQueryOptions.update}:
 * `DELETED` removes the entity whose `idKey` (default `"id"`) equals `event.data.entity_id`,
 * any other event replaces it with `event.data.payload` (or appends it when absent). Ids are
 * compared as strings. `undefined` for a list not loaded yet.
 */
export function applyEntityEvent<T>(
  items: readonly T[] | undefined,
  event: WSEvent,
  idKey = "id",
): T[] | undefined {
  if (!items) return undefined;
  const id = event.data.entity_id;
  const same = (item: T) => String((item as Record<string, unknown>)[idKey]) === id;
  if (event.event === "DELETED") return items.filter((item) => !same(item));
  const entity = event.data.payload as T;
  return items.some(same) ? items.map((item) => (same(item) ? entity : item)) : [...items, entity];
}
