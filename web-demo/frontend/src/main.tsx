import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { QueryClient } from "@tanstack/react-query";
import { App } from "./App";
import { shouldRetry } from "./api";
import "./styles.css";

// Data is kept fresh by realtime invalidation only: no polling, no refetch on focus or on
// the browser's online event, and fetched data never goes stale by age.
const queryClient = new QueryClient({
  defaultOptions: {
    queries: {
      staleTime: Infinity,
      refetchOnWindowFocus: false,
      refetchOnReconnect: false,
      retry: shouldRetry,
    },
  },
});

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <App queryClient={queryClient} />
  </StrictMode>,
);
