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
  type PresenceMember,
  type Subscription,
  type TidingsClientOptions,
  type WSEvent,
} from "../index.js";

export type {
  ConnectionState,
  ConnectionStatus,
  GetToken,
  InvalidationRules,
  PresenceChange,
  PresenceInfo,
  PresenceMember,
  TidingsClientOptions,
  WSEvent,
} from "../index.js";
export { TidingsClient } from "../index.js";
export { applyEntityEvent } from "./cache.js";

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

/**
 * How long the invalidations of one query key are gathered: a burst of events refetches once,
 * this long after its last event (and at least every `MAX_GATHER_MS` during a long burst).
 */
const GATHER_MS = 50;
const MAX_GATHER_MS = 1_000;
/**
 * Invalidations of whole topics (a reconnect that could not replay what was missed) start
 * within this many ms, at a random point: every client reconnecting after a server restart
 * does not refetch in the same instant.
 */
const SPREAD_MS = 1_000;

/**
 * Turns invalidations into as few refetches as stay correct: one per key per burst, started
 * after the burst's last event; a refetch already in flight when an event arrives (it may
 * not reflect it) is followed by exactly one more once it settles.
 */
class Coalescer {
  private readonly due = new Map<string, { timer: ReturnType<typeof setTimeout>; first: number }>();
  private readonly following = new Set<string>();

  constructor(private readonly queryClient: () => QueryClient | null) {}

  /**
   * Invalidates `key` (`exact`: that key only) after the burst; `spread`: after a jitter.
   * `except`: hashes of queries to leave alone (their data was updated from the event).
   */
  invalidate(key: QueryKey, exact: boolean, spread: boolean, except: readonly string[] = []): void {
    const hash = `${exact ? "=" : "~"}${hashKey(key)}${except.length ? `-${[...except].sort().join("|")}` : ""}`;
    const now = Date.now();
    const pending = this.due.get(hash);
    if (pending && spread) return; // already due, sooner
    if (pending) clearTimeout(pending.timer);
    const first = pending?.first ?? now;
    const delay = spread ? Math.random() * SPREAD_MS : Math.min(GATHER_MS, Math.max(0, first + MAX_GATHER_MS - now));
    const timer = setTimeout(() => {
      this.due.delete(hash);
      this.fire(hash, key, exact, except);
    }, delay);
    this.due.set(hash, { timer, first });
  }

  private fire(hash: string, key: QueryKey, exact: boolean, except: readonly string[]): void {
    const queryClient = this.queryClient();
    if (!queryClient) return;
    const filters = {
      queryKey: key,
      exact,
      ...(except.length ? { predicate: (q: { queryHash: string }) => !except.includes(q.queryHash) } : {}),
    };
    const cache = queryClient.getQueryCache();
    const inflight = cache.findAll(filters).filter((q) => q.state.fetchStatus === "fetching");
    if (inflight.length === 0) {
      void queryClient.invalidateQueries(filters, { cancelRefetch: false });
      return;
    }
    // Began before the event: may not reflect it. One more once it settles (later events
    // meanwhile are covered by that one).
    if (this.following.has(hash)) return;
    this.following.add(hash);
    const stop = cache.subscribe(() => {
      if (inflight.some((q) => q.state.fetchStatus === "fetching")) return;
      stop();
      this.following.delete(hash);
      void queryClient.invalidateQueries(filters, { cancelRefetch: false });
    });
  }

  /** Drops every pending invalidation (the provider unmounts). */
  clear(): void {
    for (const { timer } of this.due.values()) clearTimeout(timer);
    this.due.clear();
  }
}

/** Computes a query's new data from an event; `undefined`: cannot, invalidate instead. */
export type CacheUpdate<TData = unknown> = (data: TData | undefined, event: WSEvent) => TData | undefined;

/** A marker no app key starts with: the catch-all binding's keys are `[MARK, topic]`. */
const TOPIC_MARK = "\u0000tidings:topic";
const EVENT_MARK = "\u0000tidings:event";

/** The query keys `useLiveQuery` keeps live, per topic, and the topics handled by `onEvent`. */
class LiveRegistry {
  private readonly live = new Map<
    string,
    Map<string, { key: QueryKey; count: number; update: { current: CacheUpdate | undefined } }>
  >();
  private readonly handled = new Map<string, number>();
  /** Keys the app's rules invalidated since the registry's binding last ran. */
  private recorded: QueryKey[] = [];
  private readonly warned = new Set<string>();
  queryClient: QueryClient | null = null;
  /** The event the catch-all binding is being called for (set by its `onEvent`). */
  private event: WSEvent | null = null;
  readonly coalescer = new Coalescer(() => this.queryClient);

  /**
   * Registers `key` as live on `topic`; returns the function that removes it. `update` (its
   * `current`, read at each event) updates the key's data from an event instead of
   * invalidating it.
   */
  addLive(topic: string, key: QueryKey, update: { current: CacheUpdate | undefined } = { current: undefined }): () => void {
    const hash = hashKey(key);
    let keys = this.live.get(topic);
    if (!keys) this.live.set(topic, (keys = new Map()));
    const entry = keys.get(hash) ?? { key, count: 0, update };
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

  /**
   * The query client the app's rules go through: records the keys; the catch-all binding,
   * called right after in the same turn, hands them to the coalescer (knowing by then
   * whether an event or a whole topic caused them).
   */
  recording(): { invalidateQueries(filters: { queryKey: QueryKey }): unknown } {
    return {
      invalidateQueries: (filters) => {
        if (this.recorded.length === 0) queueMicrotask(() => this.flush(false));
        this.recorded.push(filters.queryKey);
        return undefined;
      },
    };
  }

  /** Hands the recorded keys to the coalescer, leaving `except` alone; returns them. */
  private flush(spread: boolean, except: readonly string[] = []): QueryKey[] {
    const recorded = this.recorded;
    this.recorded = [];
    for (const key of recorded) this.coalescer.invalidate(key, false, spread, except);
    return recorded;
  }

  /** The catch-all binding: `[TOPIC_MARK | EVENT_MARK, topic]` after the rules ran. */
  readonly registryClient = {
    invalidateQueries: (filters: { queryKey: QueryKey }): unknown => {
      const [mark, topic] = filters.queryKey;
      const event = mark === EVENT_MARK ? this.event : null;
      this.event = null;
      const queryClient = this.queryClient;
      const keys = typeof topic === "string" ? this.live.get(topic) : undefined;
      // Live keys whose data the event updates: no rule invalidates them for this event.
      const updated: string[] = [];
      if (event && queryClient && keys) {
        for (const { key, update } of keys.values()) {
          if (update.current && this.apply(queryClient, key, update.current, event)) {
            updated.push(hashKey(key));
          }
        }
      }
      // Whole topics (after a reconnect without recovery) are spread out in time.
      const recorded = this.flush(mark === TOPIC_MARK, updated);
      if (typeof topic !== "string" || (mark !== TOPIC_MARK && mark !== EVENT_MARK)) return;
      if (queryClient && keys) {
        for (const { key } of keys.values()) {
          if (updated.includes(hashKey(key))) continue;
          if (recorded.some((r) => partialMatchKey(key, r))) continue;
          this.coalescer.invalidate(key, true, mark === TOPIC_MARK);
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

  /** Sets `key`'s data from `event` with `update`; `false` when it could not (invalidate). */
  private apply(queryClient: QueryClient, key: QueryKey, update: CacheUpdate, event: WSEvent): boolean {
    let updated = false;
    try {
      queryClient.setQueryData(key, (old: unknown) => {
        const next = update(old, event);
        updated = next !== undefined;
        return next === undefined ? old : next;
      });
    } catch (error) {
      console.error("tidings: a useLiveQuery update threw; invalidating instead", error);
      return false;
    }
    return updated;
  }

  /** The rules of the catch-all binding. */
  readonly rules: InvalidationRules = {
    topics: { "{id}": [[TOPIC_MARK, "{id}"]] },
    onEvent: (event) => {
      this.event = event;
      return [[EVENT_MARK, event.topic]];
    },
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
    const unbindRules = client.bindQueryClient(registry.recording(), stableRules);
    const unbindLive = client.bindQueryClient(registry.registryClient, registry.rules);
    return () => {
      unbindRules();
      unbindLive();
      registry.coalescer.clear();
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
  useSubscription(topic, onEvent, undefined);
}

/** `useTopic`, plus `onReady` called with the client once the server acknowledged the topic. */
function useSubscription(
  topic: string | null,
  onEvent: ((event: WSEvent) => void) | undefined,
  onReady: ((client: TidingsClient) => void) | undefined,
): void {
  const { client, registry } = useContext(TidingsContext);
  const onReadyRef = useRef(onReady);
  useEffect(() => {
    onReadyRef.current = onReady;
  });
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
    let active = true;
    subscription.ready.then(
      () => {
        if (active) onReadyRef.current?.(client);
      },
      () => {},
    );
    return () => {
      active = false;
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
  /**
   * Updates the query's data from an event instead of refetching it (e.g. add, replace or
   * remove the entity `event.data.entity_id` with `event.data.payload`; see
   * {@link applyEntityEvent}). Return `undefined` when the event cannot be applied: the query
   * is then refetched. The latest function is used.
   */
  update?: CacheUpdate<TQueryFnData>;
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
  const { topic, onEvent, update, ...queryOptions } = options;
  const { registry } = useContext(TidingsContext);
  const key = queryOptions.queryKey;
  const hash = hashKey(key);
  const updateRef = useRef(update as CacheUpdate | undefined);
  useEffect(() => {
    updateRef.current = update as CacheUpdate | undefined;
  });
  useEffect(() => {
    if (!registry || topic === null) return;
    // `hash` stands for `key`: a new array with the same content is the same key.
    return registry.addLive(topic, key, updateRef);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [registry, topic, hash]);
  // The read/subscribe gap: data read before the subscription's ack may miss an event
  // published in between. A read stamp (the response's `tidings-positions`, handed to
  // `client.noteReadStamp`) lets the client replay exactly that; without one, the query is
  // refetched once.
  const onReady = (client: TidingsClient) => {
    const queryClient = registry?.queryClient;
    if (!queryClient || topic === null) return;
    const query = queryClient.getQueryCache().find({ queryKey: key, exact: true });
    if (!query || (query.state.dataUpdatedAt === 0 && query.state.fetchStatus !== "fetching")) return;
    const check = () => {
      if (!client.isStamped(topic)) registry.coalescer.invalidate(key, true, false);
    };
    if (query.state.fetchStatus !== "fetching") return check();
    // The read is in flight: its stamp (if any) is noted when its response arrives.
    const cache = queryClient.getQueryCache();
    const stop = cache.subscribe(() => {
      if (query.state.fetchStatus === "fetching") return;
      stop();
      check();
    });
  };
  useSubscription(topic, onEvent, onReady);
  return useQuery(queryOptions as UseQueryOptions<TQueryFnData, TError, TData, TQueryKey>);
}

/** Options of {@link usePresence}. */
export interface UsePresenceOptions {
  /**
   * `true`: this client is present on the topic while the component is mounted (others see
   * it). Defaults to false: only see who is present (e.g. a sidebar beside each list).
   */
  join?: boolean;
}

const NO_MEMBERS: readonly PresenceMember[] = Object.freeze([]);
const IGNORE_EVENTS = (): void => {};

/**
 * The users present on `topic` (`null`: none), one entry per user however many tabs it has,
 * each `{ user_id, info, connections }` (`info` holds what the server takes from the token,
 * e.g. `name`); re-renders when they change. Subscribes to the topic while mounted, with
 * `presence: "join"` when `options.join` (unmounting leaves) or `"watch"`. Across a
 * reconnect the list is kept and only what changed meanwhile changes (nobody present before
 * and after disappears). Empty until the server's first snapshot. Errors (an invalid topic,
 * a stopped client) are reported with `console.error`, not thrown.
 */
export function usePresence(topic: string | null, options?: UsePresenceOptions): readonly PresenceMember[] {
  const { client } = useContext(TidingsContext);
  const join = options?.join ?? false;
  useEffect(() => {
    if (!client || topic === null) return;
    let subscription: Subscription;
    try {
      subscription = client.subscribe(topic, IGNORE_EVENTS, { presence: join ? "join" : "watch" });
    } catch (error) {
      console.error(`tidings: cannot watch the presence of ${JSON.stringify(topic)}`, error);
      return;
    }
    return () => {
      subscription.unsubscribe();
      subscription.free();
    };
  }, [client, topic, join]);
  const subscribe = useCallback(
    (onChange: () => void) => (client && topic !== null ? client.onPresence(topic, onChange) : NO_SUBSCRIPTION),
    [client, topic],
  );
  const getSnapshot = useCallback(
    () => (client && topic !== null ? client.presence(topic) : NO_MEMBERS),
    [client, topic],
  );
  return useSyncExternalStore(subscribe, getSnapshot, getSnapshot);
}
