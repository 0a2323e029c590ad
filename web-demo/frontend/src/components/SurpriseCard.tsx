import type { Item } from "../types";

/**
 * A wish on the viewer's own list: the server sends it without status, buyer or comments
 * (status "HIDDEN"), so there is nothing to show or change but the wish itself.
 */
export function SurpriseCard({ item }: { item: Item }) {
  return (
    <li className="item status-hidden" data-testid="item" data-item-id={item.id} data-item-name={item.name}>
      <div className="item-main">
        <div className="item-text">
          <span className="item-name" data-testid="item-name">
            {item.name}
          </span>
          {item.notes && <span className="item-notes">{item.notes}</span>}
          <span className="small muted">added by {item.created_by_name}</span>
        </div>
        <div className="item-controls">
          <span className="pill pill-hidden" data-testid="item-surprise" title="Whether someone is getting it is a surprise">
            Surprise
          </span>
        </div>
      </div>
    </li>
  );
}
