// React hooks of @tidings/client (`@tidings/client/react`).
//
// One <TidingsProvider> owns one TidingsClient: it loads the wasm once, creates the client,
// binds it to the QueryClient (events invalidate the mapped query keys; after a reconnect the
// keys of every subscribed topic are invalidated once) and closes it on unmount. Hooks below it
// subscribe while mounted. Under React StrictMode the provider's effect runs twice: the first
// client is closed (it leaves no socket, timer or listener behind) and every useTopic
// subscribes on the second one only; listeners of one topic share one server subscription.

import {
  createContext,
  useCallback,
  useContext,
  useEffect,
  useRef,
  useState,
  useSyncExternalStore,
  type ReactNode,
} from "react";
import {
  QueryClientProvider,
  useQuery,
  type DefaultError,
  type QueryClient,
  type QueryKey,
  type UseQueryOptions,
  type UseQueryResult,
} from "@tanstack/react-query";
import init, {
  TidingsClient,
  type Subscription,
  type ConnectionStatus,
  type InvalidationRules,
  type TidingsClientOptions,
  type WSEvent,
} from "../tidings_client.js";

export type {
  ConnectionState,
  ConnectionStatus,
  InvalidationRules,
  TidingsClientOptions,
  WSEvent,
} from "../tidings_client.js";
export { TidingsClient } from "../tidings_client.js";

const TidingsContext = createContext<TidingsClient | null>(null);

let wasmLoading: Promise<unknown> | null = null;

/** Loads the wasm module once per page (later calls share the first load). */
function loadWasm(): Promise<unknown> {
  wasmLoading ??= init();
  return wasmLoading;
}

/** Client options the provider passes through (everything but the URL and the token). */
export type TidingsProviderOptions = Omit<TidingsClientOptions, "url" | "token" | "getToken">;

/** Props of {@link TidingsProvider}. */
export interface TidingsProviderProps {
  /** The WebSocket URL, e.g. `ws://localhost:8000/ws`. A change creates a new client. */
  url: string;
  /** Called before every connect and reconnect (the latest function is used). */
  getToken: () => Promise<string>;
  /** The app's QueryClient; events invalidate its queries. Also provided to children. */
  queryClient: QueryClient;
  /** Invalidation rules; the defaults map the seed's topics (`list:{id}` → `["lists", id]`, …). */
  rules?: InvalidationRules;
  /** Delays and timeouts of the client; read when the client is created. */
  options?: TidingsProviderOptions;
  children?: ReactNode;
}

/**
 * Creates one TidingsClient for its children, bound to `queryClient`, and closes it on
 * unmount. Also renders a QueryClientProvider for `queryClient`.
 */
export function TidingsProvider({
  url,
  getToken,
  queryClient,
  rules,
  options,
  children,
}: TidingsProviderProps): ReactNode {
  const [client, setClient] = useState<TidingsClient | null>(null);
  const getTokenRef = useRef(getToken);
  const optionsRef = useRef(options);
  useEffect(() => {
    getTokenRef.current = getToken;
    optionsRef.current = options;
  });

  useEffect(() => {
    let cancelled = false;
    let created: TidingsClient | null = null;
    loadWasm().then(
      () => {
        if (cancelled) return;
        created = new TidingsClient({
          ...optionsRef.current,
          url,
          getToken: () => getTokenRef.current(),
        });
        setClient(created);
      },
      (error: unknown) => console.error("tidings: could not load the wasm module", error),
    );
    return () => {
      cancelled = true;
      // Only closed, not freed: children's cleanups may still unsubscribe, which is a no-op
      // on a closed client; the wasm memory is released when the object is collected.
      created?.close();
      setClient(null);
    };
  }, [url]);

  useEffect(() => {
    if (!client) return;
    return client.bindQueryClient(queryClient, rules);
  }, [client, queryClient, rules]);

  return (
    <QueryClientProvider client={queryClient}>
      <TidingsContext.Provider value={client}>{children}</TidingsContext.Provider>
    </QueryClientProvider>
  );
}

/** The provider's client; `null` until the wasm is loaded (and outside a provider). */
export function useTidingsClient(): TidingsClient | null {
  return useContext(TidingsContext);
}

const NOT_STARTED: ConnectionStatus = Object.freeze({ state: "connecting" });

/** The connection status; re-renders when it changes. */
export function useConnectionStatus(): ConnectionStatus {
  const client = useTidingsClient();
  const subscribe = useCallback(
    (onChange: () => void) => (client ? client.onStatus(onChange) : () => {}),
    [client],
  );
  const getSnapshot = useCallback(() => (client ? client.status : NOT_STARTED), [client]);
  return useSyncExternalStore(subscribe, getSnapshot, getSnapshot);
}

/**
 * Subscribes to `topic` while the component is mounted (`null`: not subscribed). `onEvent`
 * is called with every event; the latest function is used, so it need not be memoized.
 * Query invalidation does not depend on `onEvent`: the provider's rules do it. An invalid
 * topic, or a client that stopped for good, is reported with `console.error`, not thrown.
 */
export function useTopic(topic: string | null, onEvent?: (event: WSEvent) => void): void {
  const client = useTidingsClient();
  const onEventRef = useRef(onEvent);
  useEffect(() => {
    onEventRef.current = onEvent;
  });
  useEffect(() => {
    if (!client || topic === null) return;
    let subscription: Subscription;
    try {
      subscription = client.subscribe(topic, (event) => onEventRef.current?.(event));
    } catch (error) {
      // An invalid topic name, or a client that stopped for good (closed, unauthorized):
      // report it rather than take the component tree down.
      console.error(`tidings: cannot subscribe to ${JSON.stringify(topic)}`, error);
      return;
    }
    return () => {
      subscription.unsubscribe();
      subscription.free();
    };
  }, [client, topic]);
}

/** Options of {@link useLiveQuery}: useQuery's options plus the topic that keeps it live. */
export type UseLiveQueryOptions<
  TQueryFnData = unknown,
  TError = DefaultError,
  TData = TQueryFnData,
  TQueryKey extends QueryKey = QueryKey,
> = UseQueryOptions<TQueryFnData, TError, TData, TQueryKey> & {
  /** The topic whose events invalidate this query (through the provider's rules). */
  topic: string | null;
  /** Called with every event of the topic. */
  onEvent?: (event: WSEvent) => void;
};

/**
 * `useQuery` + `useTopic` in one line: the query refetches when an event on `topic`
 * invalidates its key (e.g. `queryKey: ["lists", id], topic: \`list:${id}\``).
 */
export function useLiveQuery<
  TQueryFnData = unknown,
  TError = DefaultError,
  TData = TQueryFnData,
  TQueryKey extends QueryKey = QueryKey,
>(
  options: UseLiveQueryOptions<TQueryFnData, TError, TData, TQueryKey>,
): UseQueryResult<TData, TError> {
  const { topic, onEvent, ...queryOptions } = options;
  useTopic(topic, onEvent);
  return useQuery(queryOptions as UseQueryOptions<TQueryFnData, TError, TData, TQueryKey>);
}
