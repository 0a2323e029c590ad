import { useState, type FormEvent } from "react";
import { useMutation } from "@tanstack/react-query";
import type { Client } from "../api";
import type { Item } from "../types";

/**
 * A wish on the viewer's own list: the server sends it without status, buyer or comments
 * (status "HIDDEN"), so there is nothing to show or change but the wish itself, which its
 * recipient may still edit or remove.
 */
export function SurpriseCard({ item, api }: { item: Item; api: Client }) {
  const [editing, setEditing] = useState(false);
  const [name, setName] = useState(item.name);
  const [notes, setNotes] = useState(item.notes);
  const act = useMutation({ mutationFn: (run: () => Promise<unknown>) => run() });
  const path = `/items/${item.id}`;
  function save(e: FormEvent) {
    e.preventDefault();
    act.mutate(() => api.patch(path, { name, notes }), { onSuccess: () => setEditing(false) });
  }
  return (
    <li className="item status-hidden" data-testid="item" data-item-id={item.id} data-item-name={item.name}>
      <div className="item-main">
        {editing ? (
          <form className="edit" onSubmit={save}>
            <input aria-label="Name" data-testid="edit-name" value={name} maxLength={200} onChange={(e) => setName(e.target.value)} />
            <input aria-label="Notes" data-testid="edit-notes" value={notes} maxLength={2000} onChange={(e) => setNotes(e.target.value)} />
            <button type="submit" data-testid="save-edit" disabled={!name.trim() || act.isPending}>
              Save
            </button>
            <button type="button" className="ghost" onClick={() => setEditing(false)}>
              Cancel
            </button>
          </form>
        ) : (
          <div className="item-text">
            <span className="item-name" data-testid="item-name">
              {item.name}
            </span>
            {item.notes && <span className="item-notes">{item.notes}</span>}
            <span className="small muted">added by {item.created_by_name}</span>
          </div>
        )}
        <div className="item-controls">
          <span className="pill pill-hidden" data-testid="item-surprise" title="Whether someone is getting it is a surprise">
            Surprise
          </span>
        </div>
      </div>
      <div className="item-actions">
        {!editing && (
          <button
            className="link"
            data-testid="edit-item"
            onClick={() => {
              setName(item.name);
              setNotes(item.notes);
              setEditing(true);
            }}
          >
            Edit
          </button>
        )}
        <button
          className="link danger"
          data-testid="delete-item"
          onClick={() => {
            if (confirm(`Remove '${item.name}' from your list?`)) act.mutate(() => api.del(path));
          }}
        >
          Delete
        </button>
        {act.isError && <span className="error small">{act.error.message}</span>}
      </div>
    </li>
  );
}
