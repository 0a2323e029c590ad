import { useState, type FormEvent } from "react";
import { useMutation } from "@tanstack/react-query";
import { useLiveQuery } from "@tidings/client/react";
import { get, type Client } from "../api";
import { giftsAfter } from "../cache";
import { GIFT_STATUSES, type Gift, type Member, type Occasion } from "../types";

/** Who gives what to whom, per occasion; live through `gifts:all`. */
export function GiftsView({ api, members, occasions }: { api: Client; members: Member[]; occasions: Occasion[] }) {
  const gifts = useLiveQuery({
    queryKey: ["gifts"],
    queryFn: () => get<Gift[]>("/gifts"),
    topic: "gifts:all",
    update: giftsAfter,
  });
  const act = useMutation({ mutationFn: (run: () => Promise<unknown>) => run() });
  const [name, setName] = useState("");
  const [occasion, setOccasion] = useState("");
  const [recipient, setRecipient] = useState("");

  function add(e: FormEvent) {
    e.preventDefault();
    const occasion_id = Number(occasion || occasions[0]?.id);
    const recipient_id = Number(recipient || members[0]?.id);
    act.mutate(() => api.post("/gifts", { name, occasion_id, recipient_id }), { onSuccess: () => setName("") });
  }

  return (
    <section className="gifts-view">
      <header className="list-head">
        <div>
          <h1>Gift planner</h1>
          <p className="muted">Presents the grown-ups are organising.</p>
        </div>
      </header>
      <form className="add-item" onSubmit={add}>
        <input placeholder="Gift… e.g. 'Scarf'" aria-label="Gift" value={name} onChange={(e) => setName(e.target.value)} />
        <select aria-label="Occasion" value={occasion} onChange={(e) => setOccasion(e.target.value)}>
          {occasions.map((o) => (
            <option key={o.id} value={o.id}>
              {o.name}
            </option>
          ))}
        </select>
        <select aria-label="For" value={recipient} onChange={(e) => setRecipient(e.target.value)}>
          {members.map((m) => (
            <option key={m.id} value={m.id}>
              for {m.name}
            </option>
          ))}
        </select>
        <button type="submit" disabled={!name.trim() || act.isPending}>
          Plan
        </button>
      </form>
      {act.isError && <p className="error">{act.error.message}</p>}
      {gifts.isError && <p className="error">{gifts.error.message}</p>}
      <ul className="items">
        {gifts.data?.map((g) => (
          <li key={g.id} className={`item status-${g.status.toLowerCase()}`} data-testid="gift">
            <div className="item-main">
              <div className="item-text">
                <span className="item-name">{g.name}</span>
                <span className="small muted">
                  {g.occasion_name} · for {g.recipient_name}
                  {g.giver_name && <> · from {g.giver_name}</>}
                </span>
              </div>
              <div className="item-controls">
                <select
                  aria-label="Gift status"
                  className={`pill pill-${g.status.toLowerCase()}`}
                  value={g.status}
                  onChange={(e) => {
                    const status = e.target.value;
                    act.mutate(() => api.patch(`/gifts/${g.id}`, { status }));
                  }}
                >
                  {GIFT_STATUSES.map((s) => (
                    <option key={s} value={s}>
                      {s.charAt(0) + s.slice(1).toLowerCase()}
                    </option>
                  ))}
                </select>
                <button className="link danger" onClick={() => act.mutate(() => api.del(`/gifts/${g.id}`))}>
                  Delete
                </button>
              </div>
            </div>
          </li>
        ))}
      </ul>
    </section>
  );
}
