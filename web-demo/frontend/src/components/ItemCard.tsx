import { useEffect, useState, type FormEvent } from "react";
import { useMutation } from "@tanstack/react-query";
import type { Client } from "../api";
import type { Draft } from "../openEdits";
import { friendlyError, statusLabel } from "../texts";
import { ITEM_STATUSES, type Item, type Member } from "../types";
import { CommentIcon } from "./Icons";

/**
 * One wish: status, assignee, edit, comments, delete. While the edit form is open its content
 * goes to `onDraft` (and `null` when it closes), so that it survives the card if someone else
 * deletes the item (openEdits.ts).
 */
export function ItemCard({
  item,
  api,
  members,
  onDraft,
}: {
  item: Item;
  api: Client;
  members: Member[];
  onDraft?: (id: number, draft: Draft | null) => void;
}) {
  const [editing, setEditing] = useState(false);
  const [name, setName] = useState(item.name);
  const [notes, setNotes] = useState(item.notes);
  useEffect(() => {
    if (editing)
      onDraft?.(item.id, {
        name: item.name,
        fields: [
          { label: "Name", value: name },
          { label: "Notes", value: notes },
        ],
      });
  }, [editing, name, notes, item.id, item.name, onDraft]);
  const stopEditing = () => {
    setEditing(false);
    onDraft?.(item.id, null);
  };
  const [showComments, setShowComments] = useState(false);
  const [comment, setComment] = useState("");

  // Every mutation only talks to the API; the request applies its result to this tab's cache
  // (echo.ts), the change's events update the other tabs.
  const act = useMutation({ mutationFn: (run: () => Promise<unknown>) => run() });
  const path = `/items/${item.id}`;

  function saveEdit(e: FormEvent) {
    e.preventDefault();
    act.mutate(() => api.patch(path, { name, notes }), { onSuccess: stopEditing });
  }
  function sendComment(e: FormEvent) {
    e.preventDefault();
    if (!comment.trim()) return;
    act.mutate(() => api.post(`${path}/comments`, { body: comment }), { onSuccess: () => setComment("") });
  }

  return (
    <li className={`item status-${item.status.toLowerCase()}`} data-testid="item" data-item-id={item.id} data-item-name={item.name}>
      <div className="item-main">
        {editing ? (
          <form className="edit" onSubmit={saveEdit}>
            <input aria-label="Name" data-testid="edit-name" value={name} onChange={(e) => setName(e.target.value)} />
            <input aria-label="Notes" data-testid="edit-notes" value={notes} onChange={(e) => setNotes(e.target.value)} />
            <button type="submit" data-testid="save-edit">
              Save
            </button>
            <button type="button" className="ghost" onClick={stopEditing}>
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
          <select
            aria-label={`Status of '${item.name}'`}
            data-testid="item-status"
            className={`pill pill-${item.status.toLowerCase()}`}
            value={item.status}
            onChange={(e) => {
              // Read now: the controlled select snaps back to the current status until the
              // STATUS_CHANGED event refreshes the item.
              const status = e.target.value;
              act.mutate(() => api.put(`${path}/status`, { status }));
            }}
          >
            {ITEM_STATUSES.map((s) => (
              <option key={s} value={s}>
                {statusLabel(s)}
              </option>
            ))}
          </select>
          <select
            aria-label={`Who buys '${item.name}'`}
            title="Who buys it"
            data-testid="item-assignee"
            value={item.assignee_id ?? ""}
            onChange={(e) => {
              const assignee_id = e.target.value === "" ? null : Number(e.target.value);
              act.mutate(() => api.put(`${path}/assignee`, { assignee_id }));
            }}
          >
            <option value="">Nobody yet</option>
            {members.map((m) => (
              <option key={m.id} value={m.id}>
                {m.name}
              </option>
            ))}
          </select>
        </div>
      </div>
      <div className="item-actions">
        <button
          className="link"
          data-testid="toggle-comments"
          aria-expanded={showComments}
          aria-label={`Comments (${item.comments.length})`}
          onClick={() => setShowComments((v) => !v)}
        >
          <CommentIcon /> {item.comments.length}
        </button>
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
            if (confirm(`Remove '${item.name}'?`)) {
              // Deleting one's own open edit is not "deleted by someone else".
              onDraft?.(item.id, null);
              act.mutate(() => api.del(path));
            }
          }}
        >
          Delete
        </button>
        {act.isError && (
          <span className="error small" role="alert">
            {friendlyError(act.error)}
          </span>
        )}
      </div>
      {showComments && (
        <div className="comments">
          <ul>
            {item.comments.map((c) => (
              <li key={c.id}>
                <b>{c.member_name}</b> {c.body}
              </li>
            ))}
          </ul>
          <form onSubmit={sendComment}>
            <input
              aria-label="Comment"
              data-testid="comment-input"
              placeholder="Write a comment…"
              value={comment}
              maxLength={2000}
              onChange={(e) => setComment(e.target.value)}
            />
            <button type="submit" data-testid="send-comment" disabled={!comment.trim()}>
              Send
            </button>
          </form>
        </div>
      )}
    </li>
  );
}
