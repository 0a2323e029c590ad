import { useCallback, useEffect, useState } from "react";
import { useQuery } from "@tanstack/react-query";
import { useTopic } from "@tidings/client/react";
import { get } from "../api";
import type { WSEvent } from "@tidings/bindings";
import type { Member } from "../types";
import { describe } from "../activity";
import { onOwnEvent } from "../echo";

interface Entry {
  key: string;
  text: string;
  who: string;
  at: string;
}

const MAX_ENTRIES = 50;

function toEntry(event: WSEvent): Entry {
  return {
    key: `${event.topic}/${event.event}/${event.data.entity_id}/${event.data.timestamp}`,
    text: describe(event),
    who: event.data.user_id,
    at: event.data.timestamp,
  };
}

/**
 * Feed of everything the family does: what happened before this page was loaded comes from
 * the backend (`GET /api/activity`, the same events kept in the database, without this
 * member's surprises), then live from the realtime topics. An event in both shows once.
 */
export function ActivityFeed({ me }: { me: Member }) {
  const [live, setLive] = useState<Entry[]>([]);
  const history = useQuery({ queryKey: ["activity"], queryFn: () => get<WSEvent[]>("/activity") });
  const onEvent = useCallback((event: WSEvent) => {
    const entry = toEntry(event);
    setLive((prev) => (prev.some((e) => e.key === entry.key) ? prev : [entry, ...prev].slice(0, MAX_ENTRIES)));
  }, []);
  const liveKeys = new Set(live.map((e) => e.key));
  const entries = [...live, ...(history.data ?? []).map(toEntry).filter((e) => !liveKeys.has(e.key))]
    .sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0))
    .slice(0, MAX_ENTRIES);
  useTopic("list-items:all", onEvent);
  useTopic("gifts:all", onEvent);
  // This tab's own changes do not come back as events (the backend leaves it out of them).
  useEffect(
    () =>
      onOwnEvent((event) => {
        if (event.topic === "list-items:all" || event.topic === "gifts:all") onEvent(event);
      }),
    [onEvent],
  );

  return (
    <section className="feed">
      <h2>Activity</h2>
      {entries.length === 0 && <p className="muted small">Changes by anyone in the family show up here as they happen.</p>}
      <ol data-testid="activity-feed">
        {entries.map((e) => (
          <li key={e.key} className={e.who === String(me.id) ? "mine" : ""}>
            <span className="feed-text">{e.text}</span>
            <time dateTime={e.at}>{new Date(e.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })}</time>
          </li>
        ))}
      </ol>
    </section>
  );
}
