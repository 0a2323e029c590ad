import { useState } from "react";
import { useQuery } from "@tanstack/react-query";
import { get, login } from "../api";
import type { Member, Session } from "../types";
import { Avatar } from "./Avatar";
import { GiftIcon } from "./Icons";
import { friendlyError } from "../texts";

/** Demo login: pick who you are. */
export function Login({ onSignIn }: { onSignIn: (s: Session) => void }) {
  const members = useQuery({ queryKey: ["members"], queryFn: () => get<Member[]>("/members") });
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function pick(m: Member) {
    setBusy(true);
    setError(null);
    try {
      onSignIn(await login(m.id));
    } catch (e) {
      setError(friendlyError(e));
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="login">
      <div className="login-card">
        <h1 className="brand big">
          <GiftIcon /> Family Gifts
        </h1>
        <p className="muted">Plan presents together, live. Who are you?</p>
        {members.isPending && members.failureCount === 0 && <p className="muted">Loading family…</p>}
        {members.isPending && members.failureCount > 0 && (
          <p className="error" role="status">
            {friendlyError(members.failureReason)} Retrying…
          </p>
        )}
        {members.isError && (
          <p className="error" role="alert">
            {friendlyError(members.error)}
          </p>
        )}
        <div className="member-grid">
          {members.data?.map((m) => (
            <button
              key={m.id}
              className="member-pick"
              data-testid={`login-${m.name}`}
              disabled={busy}
              onClick={() => void pick(m)}
            >
              <Avatar member={m} size={56} />
              <span>{m.name}</span>
            </button>
          ))}
        </div>
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
      </div>
    </main>
  );
}
