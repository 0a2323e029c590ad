import { useId } from "react";
import type { Orphan } from "../openEdits";

/**
 * What is left of an edit whose item or gift someone else deleted: who deleted it, and the
 * typed text, read-only but selectable, so nothing typed is lost without notice.
 */
export function DeletedWhileEditing({
  orphan,
  kind,
  onDismiss,
  onRestore,
}: {
  orphan: Orphan;
  kind: "item" | "gift";
  onDismiss: () => void;
  /** Adds the draft back as a new entity (absent: not offered). */
  onRestore?: () => void;
}) {
  const titleId = useId();
  return (
    <li className="item deleted-notice" aria-labelledby={titleId} data-testid="deleted-while-editing">
      {/* The alert is the sentence (the list item stays a list item for screen readers). */}
      <p id={titleId} className="deleted-title" role="alert">
        <b>'{orphan.name}'</b> was deleted by {orphan.by ?? "someone else"} while you were editing it.
        {" "}Your changes were not saved; here they are to copy.
      </p>
      <dl className="draft">
        {orphan.fields.map((f) => (
          <div key={f.label}>
            <dt>{f.label}</dt>
            <dd>
              <textarea
                readOnly
                aria-label={`Your ${f.label.toLowerCase()} (not saved)`}
                data-testid={`draft-${f.label.toLowerCase()}`}
                value={f.value}
                rows={Math.min(4, Math.max(1, Math.ceil(f.value.length / 60)))}
              />
            </dd>
          </div>
        ))}
      </dl>
      <div className="item-actions">
        {onRestore && (
          <button type="button" data-testid="restore-draft" onClick={onRestore}>
            Add it again as a new {kind}
          </button>
        )}
        <button type="button" className="ghost" data-testid="dismiss-draft" onClick={onDismiss}>
          Dismiss
        </button>
      </div>
    </li>
  );
}
