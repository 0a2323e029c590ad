import { useConnectionStatus } from "@tidings/client/react";

const LABELS: Record<string, string> = {
  idle: "Not connected",
  connecting: "Connecting…",
  open: "Live",
  reconnecting: "Reconnecting…",
  unauthorized: "Signed out",
  closed: "Offline",
  failed: "Unavailable",
};

/** The realtime connection's state, for people (label) and for tests (data-state). */
export function ConnectionBadge() {
  const status = useConnectionStatus();
  const label = LABELS[status.state] ?? status.state;
  const detail =
    (status.state === "reconnecting" || status.state === "connecting") && status.attempt
      ? ` (attempt ${status.attempt}${status.nextDelayMs ? `, next in ${Math.ceil(status.nextDelayMs / 1000)} s` : ""})`
      : "";
  return (
    <span className={`conn conn-${status.state}`} data-testid="connection-status" data-state={status.state} role="status">
      <span className="dot" aria-hidden />
      {label}
      <span className="conn-detail">{detail}</span>
    </span>
  );
}
