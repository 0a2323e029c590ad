import { useEffect, useId, useRef, useState, type FormEvent } from "react";
import { useMutation } from "@tanstack/react-query";
import type { Client } from "../api";
import type { Draft } from "../openEdits";
import { friendlyError, statusLabel } from "../texts";
import { GIFT_STATUSES, type Gift, type Member } from "../types";

/**
 * One planned gift: status, edit (name, notes, who gives it) and delete. Deleting asks first,
 * in the card itself (no browser dialog): a gift deleted by mistake could only be planned
 * again as a new gift, with a new id and its status and giver lost, and everyone's activity
 * feed would show the drop and the re-plan, so an undo would not really undo it.
 */
export function GiftCard({
  gift,
  api,
  members,
  onDraft,
}: {
  gift: Gift;
  api: Client;
  members: Member[];
  onDraft?: (id: number, draft: Draft | null) => void;
}) {
  const [editing, setEditing] = useState(false);
  const [confirming, setConfirming] = useState(false);
  const [name, setName] = useState(gift.name);
  const [notes, setNotes] = useState(gift.notes);
  const [giver, setGiver] = useState(gift.giver_id == null ? "" : String(gift.giver_id));
  const act = useMutation({ mutationFn: (run: () => Promise<unknown>) => run() });
  const path = `/gifts/${gift.id}`;
  const ids = useId();
  // "Keep it" (or Escape) gives the focus back to the Delete button the question replaced.
  const deleteButton = useRef<HTMLButtonElement>(null);
  const refocus = useRef(false);
  useEffect(() => {
    if (!confirming && refocus.current) {
      refocus.current = false;
      deleteButton.current?.focus();
    }
  }, [confirming]);
  const keep = () => {
    refocus.current = true;
    setConfirming(false);
  };

  const giverName = (id: string) => members.find((m) => String(m.id) === id)?.name ?? "";
  useEffect(() => {
    if (editing)
      onDraft?.(gift.id, {
        name: gift.name,
        fields: [
          { label: "Name", value: name },
          { label: "Notes", value: notes },
          { label: "From", value: giverName(giver) },
        ],
      });
    // giverName reads `members`.
  }, [editing, name, notes, giver, members, gift.id, gift.name, onDraft]);

  const stopEditing = () => {
    setEditing(false);
    onDraft?.(gift.id, null);
  };
  function save(e: FormEvent) {
    e.preventDefault();
    const edit: Record<string, unknown> = { name, notes };
    // The API keeps the giver when `giver_id` is absent (it cannot be cleared once chosen).
    if (giver !== "") edit.giver_id = Number(giver);
    act.mutate(() => api.patch(path, edit), { onSuccess: stopEditing });
  }

  return (
    <li
      className={`item status-${gift.status.toLowerCase()}`}
      data-testid="gift"
      data-gift-id={gift.id}
      data-gift-name={gift.name}
    >
      <div className="item-main">
        {editing ? (
          <form className="edit gift-edit" onSubmit={save} aria-label={`Edit gift '${gift.name}'`}>
            <label htmlFor={`${ids}-name`}>Gift</label>
            <input
              id={`${ids}-name`}
              autoFocus
              data-testid="gift-edit-name"
              value={name}
              maxLength={200}
              onChange={(e) => setName(e.target.value)}
            />
            <label htmlFor={`${ids}-notes`}>Notes</label>
            <input
              id={`${ids}-notes`}
              data-testid="gift-edit-notes"
              value={notes}
              maxLength={2000}
              onChange={(e) => setNotes(e.target.value)}
            />
            <label htmlFor={`${ids}-giver`}>From</label>
            <select id={`${ids}-giver`} data-testid="gift-edit-giver" value={giver} onChange={(e) => setGiver(e.target.value)}>
              {gift.giver_id == null && <option value="">Not decided yet</option>}
              {members.map((m) => (
                <option key={m.id} value={m.id}>
                  {m.name}
                </option>
              ))}
            </select>
            <div className="edit-buttons">
              <button type="submit" data-testid="gift-save" disabled={!name.trim() || act.isPending}>
                Save
              </button>
              <button type="button" className="ghost" onClick={stopEditing}>
                Cancel
              </button>
            </div>
          </form>
        ) : (
          <div className="item-text">
            <span className="item-name" data-testid="gift-name">
              {gift.name}
            </span>
            {gift.notes && <span className="item-notes">{gift.notes}</span>}
            <span className="small muted wrap" data-testid="gift-meta">
              {gift.occasion_name} · for {gift.recipient_name} · {gift.giver_name ? <>from {gift.giver_name}</> : "giver not decided"}
            </span>
          </div>
        )}
        <div className="item-controls">
          <select
            aria-label={`Status of gift '${gift.name}'`}
            data-testid="gift-status"
            className={`pill pill-${gift.status.toLowerCase()}`}
            value={gift.status}
            onChange={(e) => {
              const status = e.target.value;
              act.mutate(() => api.patch(path, { status }));
            }}
          >
            {GIFT_STATUSES.map((s) => (
              <option key={s} value={s}>
                {statusLabel(s)}
              </option>
            ))}
          </select>
        </div>
      </div>
      <div className="item-actions">
        {confirming ? (
          <span
            className="confirm"
            role="group"
            aria-label={`Delete gift '${gift.name}'?`}
            data-testid="gift-confirm-delete"
            onKeyDown={(e) => {
              if (e.key === "Escape") keep();
            }}
          >
            <span className="small">Delete '{gift.name}' for everyone?</span>
            <button
              type="button"
              className="danger-button"
              data-testid="gift-delete-yes"
              onClick={() => {
                onDraft?.(gift.id, null);
                act.mutate(() => api.del(path), { onSettled: () => setConfirming(false) });
              }}
            >
              Delete
            </button>
            {/* Focus on the safe answer: Enter keeps the gift, Escape too. */}
            <button
              type="button"
              className="ghost"
              data-testid="gift-delete-no"
              autoFocus
              onClick={keep}
            >
              Keep it
            </button>
          </span>
        ) : (
          <>
            {!editing && (
              <button
                type="button"
                className="link"
                data-testid="gift-edit"
                aria-label={`Edit gift '${gift.name}'`}
                onClick={() => {
                  setName(gift.name);
                  setNotes(gift.notes);
                  setGiver(gift.giver_id == null ? "" : String(gift.giver_id));
                  setEditing(true);
                }}
              >
                Edit
              </button>
            )}
            <button
              ref={deleteButton}
              type="button"
              className="link danger"
              data-testid="gift-delete"
              aria-label={`Delete gift '${gift.name}'`}
              onClick={() => setConfirming(true)}
            >
              Delete
            </button>
          </>
        )}
        {act.isError && (
          <span className="error small" role="alert">
            {friendlyError(act.error)}
          </span>
        )}
      </div>
    </li>
  );
}
