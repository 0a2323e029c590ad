import { useEffect, useMemo, useState } from "react";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { useConnectionStatus, useLiveQuery } from "@tidings/client/react";
import { client, get, type Client } from "../api";
import { friendlyError } from "../texts";
import { listsIndexAfter, occasionAfter, occasionsAfter, summariesAfter } from "../cache";
import type { ListSummary, Member, Occasion, OccasionDetail, Session } from "../types";
import { ActivityFeed } from "./ActivityFeed";
import { Avatar } from "./Avatar";
import { GiftIcon } from "./Icons";
import { ConnectionBadge } from "./ConnectionBadge";
import { GiftsView } from "./GiftsView";
import { ListView } from "./ListView";
import { MenuToggle } from "./MenuToggle";
import { NotFound } from "./NotFound";
import { PresenceAvatars } from "./PresenceAvatars";
import { viewFromHash, type View } from "../routes";
import { NewList, NewOccasion, OccasionMenu } from "./Manage";

export function Dashboard({ session, onSignOut }: { session: Session; onSignOut: () => void }) {
  const api = useMemo(() => client(session), [session]);
  const status = useConnectionStatus();
  const members = useQuery({ queryKey: ["members"], queryFn: () => get<Member[]>("/members") });
  // Occasions and lists come and go live (`occasions:all`, `lists:all`), in every tab.
  const occasions = useLiveQuery({
    queryKey: ["occasions"],
    queryFn: () => get<Occasion[]>("/occasions"),
    topic: "occasions:all",
    update: occasionsAfter,
  });
  // Item counts per list change with every item event, so this summary lives under the
  // "list-items" key that `list-items:all` events invalidate.
  const queryClient = useQueryClient();
  const lists = useLiveQuery({
    queryKey: ["list-items", "summary"],
    queryFn: () => get<ListSummary[]>("/lists"),
    topic: "list-items:all",
    update: (old, event) => summariesAfter(queryClient, old, event),
  });
  useLiveQuery({
    queryKey: ["list-items", "summary"],
    queryFn: () => get<ListSummary[]>("/lists"),
    topic: "lists:all",
    update: listsIndexAfter,
  });
  const [view, setView] = useState<View | null>(() => viewFromHash(location.hash));
  // The sidebar on a phone: folded away behind a button, closed again once a page is picked.
  const [menuOpen, setMenuOpen] = useState(false);

  useEffect(() => {
    const onHash = () => {
      setView(viewFromHash(location.hash));
      setMenuOpen(false);
    };
    addEventListener("hashchange", onHash);
    return () => removeEventListener("hashchange", onHash);
  }, []);

  // Open the first list by default.
  const current: View | null = view ?? (lists.data?.[0] ? { kind: "list", id: lists.data[0].id } : null);

  const byOccasion = new Map<number | null, ListSummary[]>();
  for (const l of lists.data ?? []) {
    const k = l.occasion_id;
    byOccasion.set(k, [...(byOccasion.get(k) ?? []), l]);
  }

  return (
    <div className="app">
      <header className="topbar">
        <div className="brand">
          <GiftIcon /> Family Gifts
        </div>
        <div className="topbar-right">
          <ConnectionBadge />
          <span className="me" data-testid="current-member">
            <Avatar member={session.member} />
            <span className="me-name">{session.member.name}</span>
          </span>
          <button className="ghost" onClick={onSignOut}>
            Switch
          </button>
        </div>
      </header>

      {status.state === "unauthorized" && (
        <div className="banner" data-testid="unauthorized-banner" role="alert">
          Your session was rejected by the live server, so updates are paused.
          <button onClick={onSignOut}>Sign in again</button>
        </div>
      )}

      <div className="layout">
        <MenuToggle open={menuOpen} onToggle={() => setMenuOpen((o) => !o)} controls="sidebar" />
        <nav
          id="sidebar"
          className={menuOpen ? "sidebar open" : "sidebar"}
          aria-label="Lists"
          // A link to the page already shown changes no hash: close the menu on any link.
          onClick={(e) => {
            if ((e.target as Element).closest("a")) setMenuOpen(false);
          }}
        >
          {occasions.data?.map((o) => (
            <OccasionSection
              key={o.id}
              occasion={o}
              lists={byOccasion.get(o.id) ?? []}
              current={current}
              api={api}
              members={members.data ?? []}
              me={session.member.id}
            />
          ))}
          <NewOccasion api={api} />
          <section className="occasion">
            <h3>Presents</h3>
            <ul>
              <li>
                <a href="#/gifts" className={current?.kind === "gifts" ? "active" : ""} data-testid="nav-gifts">
                  <span>Gift planner</span>
                </a>
              </li>
            </ul>
          </section>
        </nav>

        <main className="content">
          {current?.kind === "list" && (
            <ListView key={current.id} listId={current.id} api={api} members={members.data ?? []} me={session.member.id} />
          )}
          {current?.kind === "not-found" && <NotFound />}
          {current?.kind === "gifts" && (
            <GiftsView api={api} members={members.data ?? []} occasions={occasions.data ?? []} />
          )}
          {!current &&
            (lists.isError ? (
              <p className="error" role="alert">
                {friendlyError(lists.error)}
              </p>
            ) : (
              <p className="muted">Loading…</p>
            ))}
        </main>

        <aside className="activity">
          <ActivityFeed me={session.member} />
        </aside>
      </div>
    </div>
  );
}

/** An occasion in the sidebar with its lists; its name and date stay live via `occasion:{id}`. */
function OccasionSection({
  occasion,
  lists,
  current,
  api,
  members,
  me,
}: {
  occasion: Occasion;
  lists: ListSummary[];
  current: View | null;
  api: Client;
  members: Member[];
  me: number;
}) {
  const id = String(occasion.id);
  const live = useLiveQuery({
    queryKey: ["occasions", id],
    queryFn: () => get<OccasionDetail>(`/occasions/${id}`),
    topic: `occasion:${id}`,
    update: occasionAfter,
  });
  const o = live.data ?? occasion;
  return (
    <section className="occasion" data-testid={`occasion-${id}`}>
      <h3 className="wrap">
        {o.name} <span className="date">{formatDate(o.date)}</span>
      </h3>
      <ul>
        {lists.map((l) => (
          <li key={l.id}>
            <a
              href={`#/lists/${l.id}`}
              className={current?.kind === "list" && current.id === l.id ? "active" : ""}
              data-testid={`nav-list-${l.id}`}
            >
              <span className="wrap">{l.name}</span>
              <PresenceAvatars topic={`list:${l.id}`} me={me} size={18} testId={`nav-presence-${l.id}`} />
              {l.done_count === null ? (
                <span className="count" data-testid={`nav-list-count-${l.id}`} title="wishes (what is bought is a surprise)">
                  {l.item_count}
                </span>
              ) : (
                <span className="count" data-testid={`nav-list-count-${l.id}`} title="bought / wished">
                  {l.done_count}/{l.item_count}
                </span>
              )}
            </a>
          </li>
        ))}
      </ul>
      {lists.length === 0 && <p className="small muted">No lists yet.</p>}
      <NewList occasionId={occasion.id} api={api} members={members} />
      <OccasionMenu occasion={o} lists={lists} api={api} />
    </section>
  );
}

export function formatDate(date: string): string {
  const d = new Date(`${date}T00:00:00`);
  return Number.isNaN(d.getTime()) ? date : d.toLocaleDateString(undefined, { month: "short", day: "numeric", year: "numeric" });
}
