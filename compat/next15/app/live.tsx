"use client";
// The client component of the Next.js row: the same provider, status and live query as the
// Vite rows' App (see compat/vite-app/src/App.tsx).
import { useState } from "react";
import { QueryClient } from "@tanstack/react-query";
import { TidingsProvider, useConnectionStatus, useLiveQuery } from "@tidings/client/react";

let fetches = 0;

function Status({ topic }: { topic: string }) {
  const status = useConnectionStatus();
  const query = useLiveQuery({
    queryKey: ["compat", topic],
    queryFn: async () => ++fetches,
    topic,
  });
  return (
    <p id="live" data-status={status.state} data-fetches={query.data ?? 0}>
      {status.state} · fetches: {query.data ?? 0}
      {status.closeReason ? ` · ${status.closeReason}` : ""}
    </p>
  );
}

export function Live({ url, token, topic }: { url: string; token: string; topic: string }) {
  const [queryClient] = useState(() => new QueryClient());
  return (
    <TidingsProvider url={url} token={token} queryClient={queryClient}>
      <Status topic={topic} />
    </TidingsProvider>
  );
}
