// Creating, renaming and deleting occasions and lists (issue 16). Every change only talks to
// the API: this tab applies the response itself (echo.ts), the other tabs follow the
// `occasions:all` / `lists:all` events (cache.ts). Deleting asks first and says what goes with
// it: an occasion takes its lists (with their wishes) and its gifts, a list its wishes.
import { useState, type FormEvent } from "react";
import { useMutation } from "@tanstack/react-query";
import type { Client } from "../api";
import type { ListSummary, Member, Occasion } from "../types";

function useAct() {
  return useMutation({ mutationFn: (run: () => Promise<unknown>) => run() });
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** "New occasion": a name and a day. */
export function NewOccasion({ api }: { api: Client }) {
  const [open, setOpen] = useState(false);
  const [name, setName] = useState("");
  const [date, setDate] = useState("");
  const act = useAct();
  function submit(e: FormEvent) {
    e.preventDefault();
    act.mutate(() => api.post<Occasion>("/occasions", { name, date }), {
      onSuccess: () => {
        setName("");
        setDate("");
        setOpen(false);
      },
    });
  }
  if (!open)
    return (
      <button className="ghost small manage-open" data-testid="new-occasion" onClick={() => setOpen(true)}>
        + New occasion
      </button>
    );
  return (
    <form className="manage-form" onSubmit={submit} data-testid="new-occasion-form">
      <input aria-label="Occasion name" data-testid="new-occasion-name" placeholder="e.g. Easter" value={name} maxLength={200} onChange={(e) => setName(e.target.value)} />
      <input aria-label="Occasion date" data-testid="new-occasion-date" type="date" value={date} onChange={(e) => setDate(e.target.value)} />
      <div className="manage-buttons">
        <button type="submit" data-testid="create-occasion" disabled={!name.trim() || !date || act.isPending}>
          Create
        </button>
        <button type="button" className="ghost" onClick={() => setOpen(false)}>
          Cancel
        </button>
      </div>
      {act.isError && <p className="error small">{act.error.message}</p>}
    </form>
  );
}

/** Rename or delete an occasion (in its sidebar section). */
export function OccasionMenu({ occasion, lists, api }: { occasion: Occasion; lists: ListSummary[]; api: Client }) {
  const [renaming, setRenaming] = useState(false);
  const [name, setName] = useState(occasion.name);
  const act = useAct();
  const path = `/occasions/${occasion.id}`;
  function rename(e: FormEvent) {
    e.preventDefault();
    act.mutate(() => api.patch(path, { name }), { onSuccess: () => setRenaming(false) });
  }
  function remove() {
    const wishes = lists.reduce((n, l) => n + l.item_count, 0);
    const what = lists.length ? ` with ${plural(lists.length, "list")} (${plural(wishes, "wish", "wishes")}) and its gifts` : " and its gifts";
    if (confirm(`Delete '${occasion.name}'${what}?`)) act.mutate(() => api.del(path));
  }
  if (renaming)
    return (
      <form className="manage-form" onSubmit={rename}>
        <input aria-label="New occasion name" data-testid="rename-occasion-input" value={name} maxLength={200} onChange={(e) => setName(e.target.value)} />
        <div className="manage-buttons">
          <button type="submit" data-testid="rename-occasion-save" disabled={!name.trim() || act.isPending}>
            Save
          </button>
          <button type="button" className="ghost" onClick={() => setRenaming(false)}>
            Cancel
          </button>
        </div>
        {act.isError && <p className="error small">{act.error.message}</p>}
      </form>
    );
  return (
    <div className="manage-row">
      <button
        className="link small"
        data-testid={`rename-occasion-${occasion.id}`}
        aria-label={`Rename ${occasion.name}`}
        onClick={() => {
          setName(occasion.name);
          setRenaming(true);
        }}
      >
        Rename
      </button>
      <button className="link danger small" data-testid={`delete-occasion-${occasion.id}`} aria-label={`Delete ${occasion.name}`} onClick={remove}>
        Delete
      </button>
      {act.isError && <span className="error small">{act.error.message}</span>}
    </div>
  );
}

/** "New list" in an occasion: a name and whom it is for (their surprises are kept from them). */
export function NewList({ occasionId, api, members }: { occasionId: number; api: Client; members: Member[] }) {
  const [open, setOpen] = useState(false);
  const [name, setName] = useState("");
  const [recipient, setRecipient] = useState("");
  const act = useAct();
  function submit(e: FormEvent) {
    e.preventDefault();
    const recipient_id = recipient === "" ? null : Number(recipient);
    act.mutate(() => api.post<ListSummary>("/lists", { name, occasion_id: occasionId, recipient_id }), {
      onSuccess: (list) => {
        setName("");
        setOpen(false);
        location.hash = `#/lists/${(list as ListSummary).id}`;
      },
    });
  }
  if (!open)
    return (
      <button className="link small" data-testid={`new-list-${occasionId}`} onClick={() => setOpen(true)}>
        + New list
      </button>
    );
  return (
    <form className="manage-form" onSubmit={submit}>
      <input aria-label="List name" data-testid="new-list-name" placeholder="e.g. Alex's wishes" value={name} maxLength={200} onChange={(e) => setName(e.target.value)} />
      <label className="small muted">
        For{" "}
        <select aria-label="Whom the list is for" data-testid="new-list-recipient" value={recipient} onChange={(e) => setRecipient(e.target.value)}>
          <option value="">nobody in particular</option>
          {members.map((m) => (
            <option key={m.id} value={m.id}>
              {m.name}
            </option>
          ))}
        </select>
      </label>
      <div className="manage-buttons">
        <button type="submit" data-testid="create-list" disabled={!name.trim() || act.isPending}>
          Create
        </button>
        <button type="button" className="ghost" onClick={() => setOpen(false)}>
          Cancel
        </button>
      </div>
      {act.isError && <p className="error small">{act.error.message}</p>}
    </form>
  );
}

/** Rename or delete a list (in its header). */
export function ListMenu({ list, api }: { list: ListSummary; api: Client }) {
  const [renaming, setRenaming] = useState(false);
  const [name, setName] = useState(list.name);
  const act = useAct();
  const path = `/lists/${list.id}`;
  function rename(e: FormEvent) {
    e.preventDefault();
    act.mutate(() => api.patch(path, { name }), { onSuccess: () => setRenaming(false) });
  }
  function remove() {
    if (confirm(`Delete the list '${list.name}' and its ${plural(list.item_count, "wish", "wishes")}?`))
      act.mutate(() => api.del(path), { onSuccess: () => (location.hash = "#/") });
  }
  if (renaming)
    return (
      <form className="manage-form inline" onSubmit={rename}>
        <input aria-label="New list name" data-testid="rename-list-input" value={name} maxLength={200} onChange={(e) => setName(e.target.value)} />
        <button type="submit" data-testid="rename-list-save" disabled={!name.trim() || act.isPending}>
          Save
        </button>
        <button type="button" className="ghost" onClick={() => setRenaming(false)}>
          Cancel
        </button>
        {act.isError && <p className="error small">{act.error.message}</p>}
      </form>
    );
  return (
    <div className="manage-row">
      <button
        className="link small"
        data-testid="rename-list"
        onClick={() => {
          setName(list.name);
          setRenaming(true);
        }}
      >
        Rename list
      </button>
      <button className="link danger small" data-testid="delete-list" onClick={remove}>
        Delete list
      </button>
      {act.isError && <span className="error small">{act.error.message}</span>}
    </div>
  );
}
