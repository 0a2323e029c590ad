import { useId, useState, type FormEvent } from "react";
import { useMutation } from "@tanstack/react-query";
import { useLiveQuery } from "@tidings/client/react";
import { get, type Client } from "../api";
import { giftsAfter } from "../cache";
import { useOpenEdits } from "../openEdits";
import { friendlyError } from "../texts";
import type { Gift, Member, Occasion } from "../types";
import { DeletedWhileEditing } from "./DeletedWhileEditing";
import { GiftCard } from "./GiftCard";

/** Who gives what to whom, per occasion; live through `gifts:all`. */
export function GiftsView({ api, members, occasions }: { api: Client; members: Member[]; occasions: Occasion[] }) {
  const gifts = useLiveQuery({
    queryKey: ["gifts"],
    queryFn: () => get<Gift[]>("/gifts"),
    topic: "gifts:all",
    update: giftsAfter,
  });
  const edits = useOpenEdits("gifts:all", gifts.data?.map((g) => g.id));
  const act = useMutation({ mutationFn: (run: () => Promise<unknown>) => run() });
  const [name, setName] = useState("");
  const [occasion, setOccasion] = useState("");
  const [recipient, setRecipient] = useState("");
  const [giver, setGiver] = useState("");
  const ids = useId();

  function add(e: FormEvent) {
    e.preventDefault();
    const occasion_id = Number(occasion || occasions[0]?.id);
    const recipient_id = Number(recipient || members[0]?.id);
    const giver_id = giver === "" ? null : Number(giver);
    act.mutate(() => api.post("/gifts", { name, occasion_id, recipient_id, giver_id }), { onSuccess: () => setName("") });
  }

  return (
    <section className="gifts-view">
      <header className="list-head">
        <div>
          <h1>Gift planner</h1>
          <p className="muted">Presents the grown-ups are organising.</p>
        </div>
      </header>
      <form className="add-item add-gift" onSubmit={add} aria-label="Plan a gift">
        <div className="field field-wide">
          <label htmlFor={`${ids}-gift`}>Gift</label>
          <input
            id={`${ids}-gift`}
            placeholder="e.g. 'Scarf'"
            data-testid="new-gift-name"
            value={name}
            maxLength={200}
            onChange={(e) => setName(e.target.value)}
          />
        </div>
        <div className="field">
          <label htmlFor={`${ids}-occasion`}>Occasion</label>
          <select id={`${ids}-occasion`} data-testid="new-gift-occasion" value={occasion} onChange={(e) => setOccasion(e.target.value)}>
            {occasions.map((o) => (
              <option key={o.id} value={o.id}>
                {o.name}
              </option>
            ))}
          </select>
        </div>
        <div className="field">
          <label htmlFor={`${ids}-for`}>For</label>
          <select id={`${ids}-for`} data-testid="new-gift-recipient" value={recipient} onChange={(e) => setRecipient(e.target.value)}>
            {members.map((m) => (
              <option key={m.id} value={m.id}>
                {m.name}
              </option>
            ))}
          </select>
        </div>
        <div className="field">
          <label htmlFor={`${ids}-from`}>From</label>
          <select id={`${ids}-from`} data-testid="new-gift-giver" value={giver} onChange={(e) => setGiver(e.target.value)}>
            <option value="">Not decided yet</option>
            {members.map((m) => (
              <option key={m.id} value={m.id}>
                {m.name}
              </option>
            ))}
          </select>
        </div>
        <button type="submit" data-testid="add-gift" disabled={!name.trim() || act.isPending}>
          Plan
        </button>
      </form>
      {act.isError && (
        <p className="error" role="alert">
          {friendlyError(act.error)}
        </p>
      )}
      {gifts.isPending && gifts.failureCount > 0 && (
        <p className="muted" role="status">
          {friendlyError(gifts.failureReason)} Retrying…
        </p>
      )}
      {gifts.isError && (
        <p className="error" role="alert">
          Could not load the gifts. {friendlyError(gifts.error)}
        </p>
      )}
      <ul className="items">
        {edits.orphans.map((o) => (
          <DeletedWhileEditing key={`deleted-${o.id}`} orphan={o} kind="gift" onDismiss={() => edits.dismiss(o.id)} />
        ))}
        {gifts.data?.map((g) => (
          <GiftCard key={g.id} gift={g} api={api} members={members} onDraft={edits.report} />
        ))}
      </ul>
    </section>
  );
}
