// Activity feed sentences from realtime events, using the actor's name the demo backend puts
// in every payload (`actor_name`).
import type { WSEvent } from "@tidings/bindings";
import { statusLabel } from "./texts";

type Payload = Record<string, unknown>;
const str = (v: unknown) => (typeof v === "string" ? v : v == null ? "" : String(v));

/** One sentence per event: "Mom marked 'Lego set' Purchased" (statuses in the UI's words). */
export function describe(event: WSEvent): string {
  const p = event.data.payload as Payload;
  const who = str(p.actor_name) || `Member ${event.data.user_id}`;
  const name = `'${str(p.name)}'`;
  if (event.topic === "gifts:all") {
    switch (event.event) {
      case "ADDED":
        return `${who} planned ${name} for ${str(p.recipient_name)}`;
      case "STATUS_CHANGED":
        return `${who} marked gift ${name} ${statusLabel(str(p.status))}`;
      case "DELETED":
        return `${who} dropped gift ${name}`;
      default:
        return `${who} updated gift ${name}`;
    }
  }
  switch (event.event) {
    case "ADDED":
      return `${who} added ${name} to ${str(p.list_name)}`;
    case "UPDATED":
      return `${who} edited ${name}`;
    case "STATUS_CHANGED":
      return `${who} marked ${name} ${statusLabel(str(p.status))}`;
    case "ASSIGNED":
      return p.assignee_name ? `${who} assigned ${name} to ${str(p.assignee_name)}` : `${who} unassigned ${name}`;
    case "COMMENT_ADDED": {
      const c = p.comment as Payload | undefined;
      return `${who} commented on ${name}: “${str(c?.body)}”`;
    }
    case "DELETED":
      return `${who} removed ${name}`;
    default:
      // Event names are open (any UPPER_SNAKE_CASE name): say something sensible.
      return `${who} changed ${name}`;
  }
}
