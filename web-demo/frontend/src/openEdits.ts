// Edits in progress, and what happens to them when someone else deletes the thing being
// edited. The card that held the edit form disappears with the entity (the list or gift table
// is updated from the DELETED event), so the draft is kept here, outside the card: the view
// then shows "'X' was deleted by Dad" with the typed text still there to read and copy.
import { useCallback, useEffect, useRef, useState } from "react";
import { useTopic } from "@tidings/client/react";
import type { WSEvent } from "@tidings/bindings";

/** One field of an edit form, as typed. */
export interface DraftField {
  label: string;
  value: string;
}

/** An edit form's content: what is being edited (its name before the edit) and the fields. */
export interface Draft {
  name: string;
  fields: DraftField[];
}

/** An edit whose entity was deleted by someone else. */
export interface Orphan extends Draft {
  id: number;
  /** Who deleted it (the event's `actor_name`), `null` when only the data said it is gone. */
  by: string | null;
}

/** The orphan for the draft of `id` after `event`, or `null` if the event deletes nothing being edited. */
export function orphanFrom(drafts: ReadonlyMap<number, Draft>, event: WSEvent): Orphan | null {
  if (event.event !== "DELETED") return null;
  const id = Number(event.data.entity_id);
  const draft = drafts.get(id);
  if (!draft) return null;
  const actor = (event.data.payload as { actor_name?: unknown }).actor_name;
  return { ...draft, id, by: typeof actor === "string" && actor ? actor : null };
}

/**
 * The open edits of the entities of `topic` (items of a list, gifts). Cards call `report(id,
 * draft)` as the user types and `report(id, null)` when the edit ends (saved or cancelled);
 * a DELETED event for an open edit, or its id missing from `present` (the data refetched after
 * a reconnect that could not replay), turns it into an orphan until dismissed.
 */
export function useOpenEdits(topic: string, present: readonly number[] | undefined) {
  const drafts = useRef(new Map<number, Draft>());
  const [orphans, setOrphans] = useState<Orphan[]>([]);
  const orphan = useCallback((o: Orphan) => {
    drafts.current.delete(o.id);
    setOrphans((prev) => (prev.some((p) => p.id === o.id) ? prev : [...prev, o]));
  }, []);

  useTopic(topic, (event) => {
    const o = orphanFrom(drafts.current, event);
    if (o) orphan(o);
  });

  useEffect(() => {
    if (!present) return;
    const ids = new Set(present);
    for (const [id, draft] of drafts.current) if (!ids.has(id)) orphan({ ...draft, id, by: null });
  }, [present, orphan]);

  const report = useCallback((id: number, draft: Draft | null) => {
    if (draft) drafts.current.set(id, draft);
    else drafts.current.delete(id);
  }, []);
  const dismiss = useCallback((id: number) => setOrphans((prev) => prev.filter((o) => o.id !== id)), []);
  return { report, orphans, dismiss };
}
