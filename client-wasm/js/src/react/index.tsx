"use client";
// React hooks of @tidings/client (`@tidings/client/react`).
//
// One <TidingsProvider> owns one TidingsClient: it loads the wasm once, creates the client,
// binds it to the QueryClient (events invalidate the mapped query keys; after a reconnect the
// keys of every subscribed topic are invalidated once) and closes it on unmount. Hooks below it
// subscribe while mounted. Under React StrictMode the provider's effect runs twice: the first
// client is closed (it leaves no socket, timer or listener behind) and every useTopic
// subscribes on the second one only; listeners of one topic share one server subscription.
//
// `useLiveQuery` keeps its own query live whatever its topic: it registers (topic, queryKey)
// with the provider (a LiveRegistry). The provider binds the client twice: first with the
// app's rules through a query client that records the keys it invalidates, then with a
// catch-all rule (`{id}` → a marker key) whose "query client" is the registry. The client
// calls both bindings in the same turn, in that order, for an event and for a topic
// resubscribed without recovery, so the registry invalidates exactly the live keys the rules
// did not cover. In development, an event that no rule, live query or `onEvent` handles is
// reported once per topic.
//
// Server rendering: nothing here loads the wasm or opens a socket while rendering (both happen
// in effects); under the `react-server` condition `./server.js` is loaded instead.

import {
  createContext,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useState,
  useSyncExternalStore,
  type ReactNode,
} from "react";
import {
  QueryClientProvider,
  hashKey,
  partialMatchKey,
  useQuery,
  type DefaultError,
  type QueryClient,
  type QueryKey,
  type UseQueryOptions,
  type UseQueryResult,
} from "@tanstack/react-query";
import init, {
  TidingsClient,
  type ConnectionStatus,
  type GetToken,
  type InvalidationRules,
  type Subscription,
  type TidingsClientOptions,
  type WSEvent,
} from "../index.js";

export type {
  ConnectionState,
  ConnectionStatus,
  GetToken,
  InvalidationRules,
  TidingsClientOptions,
  WSEvent,
} from "../index.js";
export { TidingsClient } from "../index.js";

/** The status hooks report when the wasm module could not be loaded (no client exists). */
export interface LoadFailedStatus {
  readonly state: "failed";
  /** Absent: there is no connection (declared so that `status.attempt` reads on the union). */
  readonly attempt?: undefined;
  readonly attempts?: undefined;
  readonly nextDelayMs?: undefined;
  readonly closeCode?: undefined;
  /** Why, e.g. `could not load the wasm module: CompileError: …`. */
  readonly closeReason: string;
  /** What `init()` rejected with. */
  readonly error: unknown;
}

/** What {@link useConnectionStatus} returns: the client's status, or a failed load. */
export type TidingsStatus = ConnectionStatus | LoadFailedStatus;

declare const process: { env: { NODE_ENV?: string } };

/** Development build? (bundlers replace `process.env.NODE_ENV`; without one: no). */
function isDevelopment(): boolean {
  try {
    return process.env.NODE_ENV !== "production";
  } catch {
    return false;
  }
}

/** A marker no app key starts with: the catch-all binding's keys are `[MARK, topic]`. */
const TOPIC_MARK = "\u0000tidings:topic";
const EVENT_MARK = "\u0000tidings:event";

/** The query keys `useLiveQuery` keeps live, per topic, and the topics handled by `onEvent`. */
class LiveRegistry {
  private readonly live = new Map<string, Map<string, { key: QueryKey; count: number }>>();
  private readonly handled = new Map<string, number>();
  /** Keys the app's rules invalidated since the registry's binding last ran. */
  private recorded: QueryKey[] = [];
  private readonly warned = new Set<string>();
  queryClient: QueryClient | null = null;

  /** Registers `key` as live on `topic`; returns the function that removes it. */
  addLive(topic: string, key: QueryKey): () => void {
    const hash = hashKey(key);
    let keys = this.live.get(topic);
    if (!keys) this.live.set(topic, (keys = new Map()));
    const entry = keys.get(hash) ?? { key, count: 0 };
    entry.count += 1;
    keys.set(hash, entry);
    return () => {
      entry.count -= 1;
      if (entry.count === 0) keys.delete(hash);
      if (keys.size === 0 && this.live.get(topic) === keys) this.live.delete(topic);
    };
  }

  /** A `useTopic` with an `onEvent` handles `topic`'s events itself (no warning). */
  addHandled(topic: string): () => void {
    this.handled.set(topic, (this.handled.get(topic) ?? 0) + 1);
    return () => {
      const n = (this.handled.get(topic) ?? 1) - 1;
      if (n === 0) this.handled.delete(topic);
      else this.handled.set(topic, n);
    };
  }

  /** The query client the app's rules go through: forwards and records. */
  recording(queryClient: QueryClient): { invalidateQueries(filters: { queryKey: QueryKey }): unknown } {
    return {
      invalidateQueries: (filters) => {
        this.recorded.push(filters.queryKey);
        return queryClient.invalidateQueries({ queryKey: filters.queryKey });
      },
    };
  }

  /** The catch-all binding: `[TOPIC_MARK | EVENT_MARK, topic]` after the rules ran. */
  readonly registryClient = {
    invalidateQueries: (filters: { queryKey: QueryKey }): unknown => {
      const [mark, topic] = filters.queryKey;
      const recorded = this.recorded;
      this.recorded = [];
      if (typeof topic !== "string" || (mark !== TOPIC_MARK && mark !== EVENT_MARK)) return;
      const queryClient = this.queryClient;
      const keys = this.live.get(topic);
      if (queryClient && keys) {
        for (const { key } of keys.values()) {
          if (recorded.some((r) => partialMatchKey(key, r))) continue;
          void queryClient.invalidateQueries({ queryKey: key, exact: true });
        }
      }
      if (
        mark === EVENT_MARK &&
        recorded.length === 0 &&
        !keys &&
        !this.handled.has(topic) &&
        !this.warned.has(topic) &&
        isDevelopment()
      ) {
        this.warned.add(topic);
        console.warn(
          `tidings: an event on ${JSON.stringify(topic)} invalidated no query: no invalidation ` +
            `rule matches the topic and no useLiveQuery({ queryKey, topic: ${JSON.stringify(topic)} }) ` +
            "is mounted. Pass the query's key and topic to useLiveQuery, or add a rule " +
            "(rules.topics) to TidingsProvider. (Reported once per topic, in development only.)",
        );
      }
      return undefined;
    },
  };

  /** The rules of the catch-all binding. */
  static readonly RULES: InvalidationRules = {
    topics: { "{id}": [[TOPIC_MARK, "{id}"]] },
    onEvent: (event) => [[EVENT_MARK, event.topic]],
    defaults: false,
  };
}

/** What a `rules` object is made of, functions aside: equal shapes bind the same rules. */
function rulesShape(rules: InvalidationRules | undefined): string {
  if (rules === undefined || rules === null) return "";
  return JSON.stringify(rules, (_key, value: unknown) =>
    typeof value === "function" ? "\u0000function" : value,
  );
}

/**
 * A copy of `rules` whose functions call the function at the same place in
 * `ref.current` (the latest rules), so that a new `onEvent` on every render needs no rebind.
 */
function forwardingRules(
  rules: InvalidationRules | undefined,
  ref: { readonly current: InvalidationRules | undefined },
): InvalidationRules | undefined {
  if (rules === undefined || rules === null) return rules;
  const copy = (value: unknown, path: readonly string[]): unknown => {
    if (typeof value === "function") {
      return (...args: unknown[]): unknown => {
        let at: unknown = ref.current;
        for (const key of path) at = (at as Record<string, unknown> | null | undefined)?.[key];
        return typeof at === "function" ? (at as (...a: unknown[]) => unknown)(...args) : undefined;
      };
    }
    if (Array.isArray(value)) return value.map((v, i) => copy(v, [...path, String(i)]));
    if (value !== null && typeof value === "object") {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, copy(v, [...path, k])]));
    }
    return value;
  };
  return copy(rules, []) as InvalidationRules;
}

interface TidingsContextValue {
  client: TidingsClient | null;
  registry: LiveRegistry | null;
  loadError: LoadFailedStatus | null;
  /** `options.autoConnect === false`: the status before the client exists is `idle`. */
  idle: boolean;
}

const NO_PROVIDER: TidingsContextValue = Object.freeze({
  client: null,
  registry: null,
  loadError: null,
  idle: false,
});
const TidingsContext = createContext<TidingsContextValue>(NO_PROVIDER);

/** Client options the provider passes through (everything but the URL and the token). */
export type TidingsProviderOptions = Omit<TidingsClientOptions, "url" | "token" | "getToken">;

/** Props of {@link TidingsProvider}. */
export interface TidingsProviderProps {
  /** The WebSocket URL, e.g. `ws://localhost:8000/ws`. A change creates a new client. */
  url: string;
  /**
   * Called before every connect and reconnect, and to refresh the token of an open connection
   * (the latest function is used). Wins over `token`.
   */
  getToken?: GetToken;
  /**
   * A fixed token, for prototyping (e.g. the subscriber token `tidings dev` prints). It cannot
   * be refreshed: use `getToken` in an app. A change creates a new client.
   */
  token?: string;
  /** The app's QueryClient; events invalidate its queries. Also provided to children. */
  queryClient: QueryClient;
  /**
   * Invalidation rules; the defaults map the seed's topics (`list:{id}` → `["lists", id]`, …).
   * Need not be memoized: the client is rebound only when their content changes (functions
   * such as `onEvent` may be new on every render: the latest one is called).
   */
  rules?: InvalidationRules;
  /**
   * Delays and timeouts of the client, and `autoConnect` (with false, call
   * `useTidingsClient()?.connect()`); read when the client is created.
   */
  options?: TidingsProviderOptions;
  children?: ReactNode;
}

/**
 * Creates one TidingsClient for its children, bound to `queryClient`, and closes it on
 * unmount. Also renders a QueryClientProvider for `queryClient`. If the wasm module cannot be
 * loaded, {@link useConnectionStatus} reports `{ state: "failed" }`.
 */
export function TidingsProvider({
  url,
  getToken,
  token,
  queryClient,
  rules,
  options,
  children,
}: TidingsProviderProps): ReactNode {
  const [client, setClient] = useState<TidingsClient | null>(null);
  const [loadError, setLoadError] = useState<LoadFailedStatus | null>(null);
  const [registry] = useState(() => new LiveRegistry());
  const getTokenRef = useRef(getToken);
  const optionsRef = useRef(options);
  const rulesRef = useRef(rules);
  useEffect(() => {
    getTokenRef.current = getToken;
    optionsRef.current = options;
    rulesRef.current = rules;
  });
  // An inline `rules` object is new on every render: bind by content, call the latest functions.
  const rulesKey = rulesShape(rules);
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const stableRules = useMemo(() => forwardingRules(rules, rulesRef), [rulesKey]);
  const hasGetToken = getToken !== undefined;

  useEffect(() => {
    let cancelled = false;
    let created: TidingsClient | null = null;
    init().then(
      () => {
        if (cancelled) return;
        created = new TidingsClient({
          ...optionsRef.current,
          url,
          token,
          getToken: hasGetToken
            ? () => {
                const f = getTokenRef.current;
                if (!f) throw new Error("tidings: getToken was removed");
                return f();
              }
            : undefined,
        });
        setLoadError(null);
        setClient(created);
      },
      (error: unknown) => {
        if (cancelled) return;
        console.error("tidings: could not load the wasm module", error);
        setLoadError(
          Object.freeze({
            state: "failed" as const,
            closeReason: `could not load the wasm module: ${String(error)}`,
            error,
          }),
        );
      },
    );
    return () => {
      cancelled = true;
      // Only closed, not freed: children's cleanups may still unsubscribe, which is a no-op
      // on a closed client; the wasm memory is released when the object is collected.
      created?.close();
      setClient(null);
    };
  }, [url, token, hasGetToken]);

  useEffect(() => {
    if (!client) return;
    registry.queryClient = queryClient;
    // Order matters: the app's rules first, then the registry (see the top of this file).
    const unbindRules = client.bindQueryClient(registry.recording(queryClient), stableRules);
    const unbindLive = client.bindQueryClient(registry.registryClient, LiveRegistry.RULES);
    return () => {
      unbindRules();
      unbindLive();
    };
  }, [client, queryClient, stableRules, registry]);

  const idle = options?.autoConnect === false;
  const value = useMemo(
    () => ({ client, registry, loadError, idle }),
    [client, registry, loadError, idle],
  );

  return (
    <QueryClientProvider client={queryClient}>
      <TidingsContext.Provider value={value}>
        {children}
      </TidingsContext.Provider>
    </QueryClientProvider>
  );
}

/** The provider's client; `null` until the wasm is loaded (and outside a provider). */
export function useTidingsClient(): TidingsClient | null {
  return useContext(TidingsContext).client;
}

const NOT_STARTED: ConnectionStatus = Object.freeze({ state: "connecting", attempts: 0 });
const NOT_STARTED_IDLE: ConnectionStatus = Object.freeze({ state: "idle", attempts: 0 });
const NO_SUBSCRIPTION = (): void => {};

/**
 * The connection status; re-renders when it changes (every new status object: attempts
 * included). `{ state: "failed" }` when the wasm module could not be loaded; `connecting` until
 * the client exists (`idle` with `options.autoConnect: false`; `connecting` outside a provider).
 */
export function useConnectionStatus(): TidingsStatus {
  const { client, loadError, idle } = useContext(TidingsContext);
  const subscribe = useCallback(
    // Every new status object (attempt, delay, reason), not only state changes.
    (onChange: () => void) => (client ? client.onStatus(onChange, { everyChange: true }) : NO_SUBSCRIPTION),
    [client],
  );
  const getSnapshot = useCallback(
    () => (client ? client.status : idle ? NOT_STARTED_IDLE : NOT_STARTED),
    [client, idle],
  );
  const status = useSyncExternalStore(subscribe, getSnapshot, getSnapshot);
  return loadError ?? status;
}

/**
 * Subscribes to `topic` while the component is mounted (`null`: not subscribed). `onEvent`
 * is called with every event; the latest function is used, so it need not be memoized.
 * Query invalidation does not depend on `onEvent`: the provider's rules do it. An invalid
 * topic, or a client that stopped for good, is reported with `console.error`, not thrown.
 */
export function useTopic(topic: string | null, onEvent?: (event: WSEvent) => void): void {
  const { client, registry } = useContext(TidingsContext);
  const onEventRef = useRef(onEvent);
  useEffect(() => {
    onEventRef.current = onEvent;
  });
  const hasOnEvent = onEvent !== undefined;
  useEffect(() => {
    if (!registry || topic === null || !hasOnEvent) return;
    return registry.addHandled(topic);
  }, [registry, topic, hasOnEvent]);
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
  /**
   * The topic that keeps this query live (`null`: none): its events, and a reconnect that
   * could not replay what was missed, refetch `queryKey`, whatever the topic's name.
   */
  topic: string | null;
  /** Called with every event of the topic. */
  onEvent?: (event: WSEvent) => void;
};

/**
 * `useQuery` + `useTopic` in one line: the query refetches on every event of `topic`, and
 * after a reconnect that missed events (e.g. `queryKey: ["todos", id], topic: \`todo:${id}\``),
 * for any topic name. The provider's rules still apply (keys the app does not pass here);
 * a key they already invalidated is not invalidated twice.
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
  const { registry } = useContext(TidingsContext);
  const key = queryOptions.queryKey;
  const hash = hashKey(key);
  useEffect(() => {
    if (!registry || topic === null) return;
    // `hash` stands for `key`: a new array with the same content is the same key.
    return registry.addLive(topic, key);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [registry, topic, hash]);
  useTopic(topic, onEvent);
  return useQuery(queryOptions as UseQueryOptions<TQueryFnData, TError, TData, TQueryKey>);
}
