import { useCallback, useEffect, useState } from "react";
import { QueryClientProvider, type QueryClient } from "@tanstack/react-query";
import { TidingsProvider, useTidingsClient } from "@tidings/client/react";
import { setOwnChanges, setReadSink } from "./api";
import { applyOwnEvents, ownEvents } from "./echo";
import { Login } from "./components/Login";
import { Dashboard } from "./components/Dashboard";
import { loadSession, saveSession } from "./session";
import type { Session } from "./types";

function wsUrl(): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

/**
 * Hands every read's stamp to the realtime client (see `setReadSink`), and its connection id
 * to every mutation, whose result this tab then applies itself (see `setOwnChanges`).
 */
function ReadStamps({ queryClient }: { queryClient: QueryClient }) {
  const client = useTidingsClient();
  useEffect(() => {
    if (!client) return;
    setReadSink((response) => client.noteResponse(response));
    setOwnChanges({
      header: client.connectionIdHeader,
      connectionId: client.connectionId,
      apply: (method, path, body, result, actor) =>
        applyOwnEvents(queryClient, ownEvents(method, path, body, result, actor)),
    });
    return () => {
      setReadSink(null);
      setOwnChanges(null);
    };
  }, [client, queryClient]);
  return null;
}

export function App({ queryClient }: { queryClient: QueryClient }) {
  const [session, setSession] = useState<Session | null>(loadSession);

  const signIn = useCallback((s: Session) => {
    saveSession(s);
    setSession(s);
  }, []);
  const signOut = useCallback(() => {
    saveSession(null);
    setSession(null);
    queryClient.clear();
  }, [queryClient]);

  const token = session?.token;
  const getToken = useCallback(() => Promise.resolve(token ?? ""), [token]);

  return (
    <QueryClientProvider client={queryClient}>
      {session ? (
        // Keyed by member so that switching member starts a fresh connection.
        <TidingsProvider key={session.member.id} url={wsUrl()} getToken={getToken} queryClient={queryClient}>
          <ReadStamps queryClient={queryClient} />
          <Dashboard session={session} onSignOut={signOut} />
        </TidingsProvider>
      ) : (
        <Login onSignIn={signIn} />
      )}
    </QueryClientProvider>
  );
}
