// The words the UI shows for the API's codes and failures, in one place so that the status
// pills, the activity feed and error messages say the same thing ("Purchased", never
// `PURCHASED`; "Can't reach the server", never "Failed to fetch").
import type { GiftStatus, ItemStatus } from "./types";

const STATUS_LABELS: Record<ItemStatus | GiftStatus, string> = {
  IDEA: "Idea",
  SELECTED: "Selected",
  PURCHASED: "Purchased",
  RECEIVED: "Received",
  PLANNED: "Planned",
  WRAPPED: "Wrapped",
  GIVEN: "Given",
};

/**
 * The UI's name of an item or gift status ("Purchased" for `PURCHASED`). A status this UI does
 * not know (a newer backend) is shown in sentence case rather than shouted.
 */
export function statusLabel(status: string): string {
  const known = (STATUS_LABELS as Record<string, string>)[status];
  if (known) return known;
  const words = status.toLowerCase().replace(/_/g, " ").trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** Shown when a request never reached the server (no network, server down). */
export const OFFLINE_MESSAGE = "Can't reach the server. Check your connection and try again.";

/**
 * A sentence for a failed request. `status` 0 is a network failure (`fetch` rejected, which
 * browsers word as "Failed to fetch" or "NetworkError when attempting to fetch resource");
 * otherwise the API's own `{"error"}` text, which is written for people, when there is one.
 */
export function requestErrorMessage(status: number, apiMessage: string | undefined): string {
  if (status === 0) return OFFLINE_MESSAGE;
  const said = apiMessage?.trim();
  if (status >= 500) return "The server ran into a problem. Please try again in a moment.";
  if (status === 401) return "Your session has expired. Please sign in again.";
  if (status === 404) {
    // The API says "gift 5 not found": name the kind, not the id.
    const what = /^([a-z]+) \d+ not found$/.exec(said ?? "")?.[1];
    return `${what ? `This ${what}` : "It"} no longer exists: someone may have deleted it.`;
  }
  if (said) return capitalize(said);
  return `The request failed (HTTP ${status}).`;
}

/** The message to show for any error a request or a component threw. */
export function friendlyError(error: unknown): string {
  if (error instanceof TypeError && /fetch|network|load failed/i.test(error.message)) return OFFLINE_MESSAGE;
  if (error instanceof Error && error.message) return error.message;
  return "Something went wrong. Please try again.";
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}
