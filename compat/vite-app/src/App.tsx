// The app every Vite row of the compatibility matrix builds: a provider, the status, and one
// live query on a topic no built-in rule maps. The page is told where tidings is and which
// token to use by its query string (?ws=…&token=…&topic=…); scripts/compat-live.mjs reads
// #live: data-status becomes "open", data-fetches goes 1 → 2 after an event is published.
import { useState } from "react";
import { QueryClient } from "@tanstack/react-query";
import { TidingsProvider, useConnectionStatus, useLiveQuery } from "@tidings/client/react";

const params = new URLSearchParams(window.location.search);
const url = params.get("ws") ?? "ws://127.0.0.1:8000/ws";
const token = params.get("token") ?? "";
const topic = params.get("topic") ?? "todo:compat";

let fetches = 0;

function Live() {
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

export function App() {
  const [queryClient] = useState(() => new QueryClient());
  return (
    <TidingsProvider url={url} token={token} queryClient={queryClient}>
      <Live />
    </TidingsProvider>
  );
}
