import { useState, type FormEvent } from "react";
import { useMutation, useQuery } from "@tanstack/react-query";
import { useLiveQuery } from "@tidings/client/react";
import { get, isNotFound, type Client } from "../api";
import { HIDDEN, type Item, type ListDetail, type ListSummary, type Member } from "../types";
import { ItemCard } from "./ItemCard";
import { ListMenu } from "./Manage";
import { PresenceAvatars } from "./PresenceAvatars";
import { SurpriseCard } from "./SurpriseCard";
import { listAfter } from "../cache";
import { useOpenEdits } from "../openEdits";
import { friendlyError } from "../texts";
import { DeletedWhileEditing } from "./DeletedWhileEditing";
import { NotFound } from "./NotFound";

/** One shopping list, live: every change by anyone updates it through `list:{id}`. */
export function ListView({ listId, api, members, me }: { listId: number; api: Client; members: Member[]; me: number }) {
  const id = String(listId);
  const list = useLiveQuery({
    queryKey: ["lists", id],
    queryFn: () => get<ListDetail>(`/lists/${id}`),
    topic: `list:${id}`,
    // Item events carry the item: the list is updated from them, never refetched.
    update: listAfter,
  });
  // The sidebar's index (kept live by `lists:all`): the list's current name, or that it was
  // deleted, as soon as anyone renames or deletes it.
  const index = useQuery({ queryKey: ["list-items", "summary"], queryFn: () => get<ListSummary[]>("/lists") });
  const summary = index.data?.find((s) => s.id === listId);
  const [name, setName] = useState("");
  const [notes, setNotes] = useState("");
  const add = useMutation({
    mutationFn: () => api.post<Item>(`/lists/${id}/items`, { name, notes }),
    // No refetch here: the request applies the new item to this tab (echo.ts); the ADDED
    // event refreshes everyone else's.
    onSuccess: () => {
      setName("");
      setNotes("");
    },
  });

  const edits = useOpenEdits(`list:${id}`, list.data?.items.map((i) => i.id));
  const restore = useMutation({
    mutationFn: (draft: { name: string; notes: string }) => api.post<Item>(`/lists/${id}/items`, draft),
  });

  // Deleted while shown (we had it, the live index no longer does); a list never seen that the
  // API does not know is the not-found page below.
  if (index.data && !summary && list.data)
    return (
      <p className="muted" data-testid="list-gone" role="status">
        This list has been deleted.
      </p>
    );
  if (list.isPending)
    return (
      <p className="muted" role="status">
        {list.failureCount > 0 ? `${friendlyError(list.failureReason)} Retrying…` : "Loading list…"}
      </p>
    );
  if (list.isError) {
    if (isNotFound(list.error)) return <NotFound what={`list ${id}`} />;
    return (
      <p className="error" role="alert">
        Could not load the list. {friendlyError(list.error)}{" "}
        <button type="button" className="ghost" onClick={() => void list.refetch()}>
          Try again
        </button>
      </p>
    );
  }
  const l = { ...list.data, name: summary?.name ?? list.data.name };
  // `done_count` is null on the viewer's own list: what was bought is a surprise.
  const surprise = l.done_count === null;
  const pct = l.item_count && l.done_count !== null ? Math.round((100 * l.done_count) / l.item_count) : 0;

  function submit(e: FormEvent) {
    e.preventDefault();
    if (name.trim()) add.mutate();
  }

  return (
    <section className="list-view" data-testid="list-view" data-list-id={l.id}>
      <header className="list-head">
        <div>
          <h1 data-testid="list-title" className="wrap">
            {l.name}
          </h1>
          <p className="muted">
            {l.occasion_name ?? "No occasion"}
            {l.recipient_name && <> · for {l.recipient_name}</>}
          </p>
        </div>
        <PresenceAvatars topic={`list:${id}`} me={me} join testId="presence-list" />
        {surprise ? (
          <p className="small muted" data-testid="list-surprise">
            Your list: what is bought stays a surprise.
          </p>
        ) : (
          <div className="progress" title={`${l.done_count} of ${l.item_count} bought`}>
            <div className="bar">
              <div style={{ width: `${pct}%` }} />
            </div>
            <span className="small muted">
              {l.done_count}/{l.item_count} bought
            </span>
          </div>
        )}
      </header>
      <ListMenu list={l} api={api} />

      <form className="add-item" onSubmit={submit}>
        <input
          aria-label="New item"
          data-testid="new-item-name"
          placeholder="Add a wish… e.g. 'Lego set'"
          value={name}
          maxLength={200}
          onChange={(e) => setName(e.target.value)}
        />
        <input
          aria-label="Notes"
          data-testid="new-item-notes"
          placeholder="Notes (optional)"
          value={notes}
          maxLength={2000}
          onChange={(e) => setNotes(e.target.value)}
        />
        <button type="submit" data-testid="add-item" disabled={!name.trim() || add.isPending}>
          Add
        </button>
      </form>
      {add.isError && (
        <p className="error" role="alert">
          {friendlyError(add.error)}
        </p>
      )}
      {restore.isError && (
        <p className="error" role="alert">
          {friendlyError(restore.error)}
        </p>
      )}

      {l.items.length === 0 && <p className="muted empty">Nothing on this list yet.</p>}
      <ul className="items">
        {edits.orphans.map((o) => (
          <DeletedWhileEditing
            key={`deleted-${o.id}`}
            orphan={o}
            kind="item"
            onDismiss={() => edits.dismiss(o.id)}
            onRestore={() => {
              const field = (label: string) => o.fields.find((f) => f.label === label)?.value ?? "";
              restore.mutate({ name: field("Name"), notes: field("Notes") }, { onSuccess: () => edits.dismiss(o.id) });
            }}
          />
        ))}
        {l.items.map((item) => (
          item.status === HIDDEN ? (
            <SurpriseCard key={item.id} item={item} api={api} />
          ) : (
            <ItemCard key={item.id} item={item} api={api} members={members} onDraft={edits.report} />
          )
        ))}
      </ul>
    </section>
  );
}
