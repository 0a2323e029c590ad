//! The JavaScript API: `TidingsClient`, `Subscription` and `Dispose` — the whole
//! `#[wasm_bindgen]` facade and nothing else. Each method checks its arguments, takes the
//! state for as long as it needs it and runs the resulting effects; the work is done by the
//! parts below, each of which imports only the ones listed before it (no module cycles):
//!
//! - [`options`]: the options object and `bindQueryClient`'s rules, read into settings;
//! - [`inbound`]: each server frame decoded once into a typed message;
//! - [`effects`]: calls into application code (listeners, `ready` promises, query
//!   invalidation), made after the state borrow ends;
//! - [`state`]: the shared state, the one transition point that moves the generation and the
//!   one guard every browser callback passes;
//! - [`socket`]: the connection's lifecycle (token, WebSocket, resubscribe, keepalive, token
//!   refresh, gap recovery, reconnect timers) and what each decoded frame does.

mod effects;
mod inbound;
mod options;
mod socket;
mod state;

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use js_sys::{Function, Object, Promise};
use tidings_protocol::{MAX_TOPIC_LEN, POSITIONS_HEADER, Topic, TopicError, WSClientMessage};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use crate::backoff::Backoff;
use crate::browser::{self, Listener};
use crate::presence::Presence;
use crate::status::StatusMachine;
use crate::topics::{ListenerId, StampAction, TopicSet};
use crate::wire;
use effects::{Binding, Effect, Ready, js_error, run};
pub use options::DEFAULT_CONNECT_TIMEOUT_MS;
use options::{Config, parse_rules};
use socket::{check_liveness, start_attempt, went_offline, went_online};
use state::{Inner, Shared};

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
import type { PresenceMember, PresenceMode, WSEvent } from "./types/index.js";
export type { EventData, EventType, Payload, PresenceInfo, PresenceMember, PresenceMode, ServerMessage, Topic, WSClientMessage, WSError, WSEvent, WSReply } from "./types/index.js";

/** A TanStack Query key. */
export type QueryKey = readonly unknown[];

/**
 * The states of a client's connection:
 * - `idle`: created with `autoConnect: false`, `connect()` not called yet;
 * - `connecting`: not open yet (every attempt until the server first answers);
 * - `open`: the server has answered on the current socket (a completed handshake alone is
 *   not enough: a refused token completes it, then closes with 4001);
 * - `reconnecting`: was open, and is not now (waiting for a retry, retrying, or offline);
 * - `unauthorized`: the server refused the token twice in a row; no retries until `connect()`;
 * - `closed`: `close()` was called, or the server closed with a code that must not be retried.
 */
export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "unauthorized" | "closed";

/** What `client.status` returns; the same object until the status changes. */
export interface ConnectionStatus {
  readonly state: ConnectionState;
  /** Connecting or reconnecting after a failure: the retry number since the last open (1 for the first retry). */
  readonly attempt?: number;
  /** Waiting for a retry: its delay, in milliseconds (absent while offline: the retry waits for `online`). */
  readonly nextDelayMs?: number;
  /** Connection attempts started since the client was created (0 before the first). */
  readonly attempts: number;
  /** The code of the last close (e.g. 4001, 1012, 1006); cleared when a connection opens. */
  readonly closeCode?: number;
  /** The reason of the last close, or why the client gave up on a connection; cleared when a connection opens. */
  readonly closeReason?: string;
}

/** Gives the token for a connection: a string, or a promise of one (the same type everywhere). */
export type GetToken = () => string | Promise<string>;

/** Options of `new TidingsClient(options)`. */
export interface TidingsClientOptions {
  /** The WebSocket URL, e.g. `ws://localhost:8000/ws`. */
  url: string;
  /**
   * How the token reaches the server. `"protocol"` (the default): as the WebSocket subprotocol
   * `tidings.token.<token>` beside `tidings`, so it never appears in a URL (proxy access logs,
   * the browser console); the token must be a JWT (or any string of HTTP token characters).
   * `"query"`: as `?token=`, for servers older than the subprotocol (and the seed).
   */
  tokenTransport?: "protocol" | "query";
  /**
   * Called when the server ends a subscription by itself: a refreshed token whose `topics`
   * claim no longer allows it (`reason: "Forbidden"`). The topic's listeners are dropped (a
   * reconnect does not resubscribe it) and its unsettled `ready()` promises rejected. Without
   * it, the client reports it on the console.
   */
  onSubscriptionEnded?: (ended: { topic: string; reason: string }) => void;
  /** A fixed token (when `getToken` is not given). */
  token?: string;
  /** Called before every connect and reconnect, and to refresh an open connection's token before its `exp`; wins over `token`. */
  getToken?: GetToken;
  /** Start connecting in the constructor. Defaults to true; with false the state is `idle` until `connect()`. */
  autoConnect?: boolean;
  /** First reconnect window in ms (full jitter). Defaults to 500. */
  initialDelayMs?: number;
  /** Largest reconnect window in ms. Defaults to 30000. */
  maxDelayMs?: number;
  /** Ping interval in ms. Defaults to 30000. */
  pingIntervalMs?: number;
  /** Time allowed for any frame after a ping, in ms, before the socket counts as dead. Defaults to 10000. */
  pongTimeoutMs?: number;
  /** Time allowed for the WebSocket handshake, in ms. Defaults to 10000. */
  connectTimeoutMs?: number;
}

/** Called with every event of a subscribed topic. */
export type TopicListener = (event: WSEvent) => void;

/** Options of `subscribe`. */
export interface SubscribeOptions {
  /**
   * `"join"`: be present on the topic (one entry per user, however many tabs) and see who else
   * is; `"watch"`: see who is present without being present. Read them with
   * `client.presence(topic)` and `client.onPresence(topic, listener)`. Absent: no presence.
   */
  presence?: PresenceMode;
}

/** What an `onPresence` listener is called with. */
export interface PresenceChange {
  readonly topic: string;
  /** Everyone present now (what `client.presence(topic)` returns). */
  readonly members: readonly PresenceMember[];
  /** Users that were not present before. */
  readonly joined: readonly PresenceMember[];
  /** Users no longer present, as last seen. */
  readonly left: readonly PresenceMember[];
}

/** Called when the users present on a topic change (see `onPresence`). */
export type PresenceListener = (change: PresenceChange) => void;

/** Called with the current status at once, then with each new one (see `onStatus`). */
export type StatusListener = (status: ConnectionStatus) => void;

/** Options of `onStatus`. */
export interface StatusListenerOptions {
  /**
   * Also call the listener when only the details change (attempt, delay, close reason), with
   * every new `client.status` object: what React's `useSyncExternalStore` needs. Defaults to
   * false: state changes only.
   */
  everyChange?: boolean;
}

/** The part of TanStack's `QueryClient` the client uses. */
export interface QueryClientLike {
  invalidateQueries(filters: { queryKey: QueryKey }): unknown;
}

/**
 * Which queries an event makes stale. Topic patterns have at most one `{id}` placeholder
 * (`"list:{id}"`); `{id}` inside a key's strings is replaced by the matched text (a string).
 * Custom topic rules are checked before the defaults (`list:{id}` → `["lists", id]`,
 * `occasion:{id}` → `["occasions", id]`, `list-items:all` → `["list-items"]`,
 * `gifts:all` → `["gifts"]`); the first match wins.
 */
export interface InvalidationRules {
  /** Topic pattern → the query keys it invalidates (also used after a reconnect). */
  topics?: Record<string, ReadonlyArray<ReadonlyArray<string>>>;
  /** Maps one event to query keys; return `undefined` to fall back to the topic rules. */
  onEvent?: (event: WSEvent) => ReadonlyArray<QueryKey> | undefined | null;
  /** Keep the default topic rules (after the custom ones). Defaults to true. */
  defaults?: boolean;
}
"#;

#[wasm_bindgen]
extern "C" {
    /// `TidingsClientOptions` (TypeScript).
    #[wasm_bindgen(typescript_type = "TidingsClientOptions")]
    pub type ClientOptions;
    /// `(event: WSEvent) => void` (TypeScript).
    #[wasm_bindgen(typescript_type = "TopicListener")]
    pub type TopicListener;
    /// `SubscribeOptions` (TypeScript).
    #[wasm_bindgen(typescript_type = "SubscribeOptions")]
    pub type SubscribeOptions;
    /// `readonly PresenceMember[]` (TypeScript).
    #[wasm_bindgen(typescript_type = "readonly PresenceMember[]")]
    pub type PresenceMembers;
    /// `(change: PresenceChange) => void` (TypeScript).
    #[wasm_bindgen(typescript_type = "PresenceListener")]
    pub type PresenceListener;
    /// `(status: ConnectionStatus) => void` (TypeScript).
    #[wasm_bindgen(typescript_type = "StatusListener")]
    pub type StatusListener;
    /// `StatusListenerOptions` (TypeScript).
    #[wasm_bindgen(typescript_type = "StatusListenerOptions")]
    pub type StatusListenerOptions;
    /// `ConnectionStatus` (TypeScript).
    #[wasm_bindgen(typescript_type = "ConnectionStatus")]
    pub type ConnectionStatus;
    /// `QueryClientLike` (TypeScript).
    #[wasm_bindgen(typescript_type = "QueryClientLike")]
    pub type QueryClientLike;
    /// `InvalidationRules` (TypeScript).
    #[wasm_bindgen(typescript_type = "InvalidationRules")]
    pub type InvalidationRules;
    /// `Promise<void>` (TypeScript).
    #[wasm_bindgen(typescript_type = "Promise<void>")]
    pub type ReadyPromise;
    /// A `fetch` `Response` (TypeScript).
    #[wasm_bindgen(typescript_type = "Response")]
    pub type FetchResponse;
    /// `() => void` (TypeScript): call it to stop listening.
    #[wasm_bindgen(typescript_type = "() => void")]
    pub type Disposer;
}

/// The message of an invalid topic, without `Debug` formatting (it would pull Unicode tables
/// into the wasm).
fn topic_error(topic: &str, error: &TopicError) -> JsError {
    let why = match error {
        TopicError::Empty => "it is empty".to_owned(),
        TopicError::TooLong => format!("it is longer than {MAX_TOPIC_LEN} bytes"),
        TopicError::InvalidChar(c) => format!("it contains the character '{c}'"),
        _ => "it breaks the topic rules".to_owned(),
    };
    JsError::new(&format!(
        "invalid topic \"{topic}\": {why}; allowed are 1 to {MAX_TOPIC_LEN} ASCII letters, digits and : - _ . @ / + = ~"
    ))
}

/// A WebSocket client for a tidings server: subscriptions with reference counting,
/// reconnects with backoff and fresh tokens, keepalive, and TanStack Query invalidation.
#[wasm_bindgen]
pub struct TidingsClient {
    inner: Shared,
}

#[wasm_bindgen]
impl TidingsClient {
    /// Creates the client and starts connecting (unless `autoConnect: false`: then the state
    /// is `idle` until [`connect`](Self::connect)).
    ///
    /// # Errors
    /// Throws for invalid options (missing `url`, a non-function `getToken`, a non-positive
    /// delay).
    #[wasm_bindgen(constructor)]
    pub fn new(options: ClientOptions) -> Result<TidingsClient, JsError> {
        let config = Config::parse(&options)?;
        let auto_connect = config.auto_connect;
        let machine = StatusMachine::new(
            Backoff::new(config.initial_delay_ms, config.max_delay_ms),
            !auto_connect,
        );
        // Repeated gap recoveries of a topic are paced like reconnects.
        let topics =
            TopicSet::with_backoff(Backoff::new(config.initial_delay_ms, config.max_delay_ms));
        let inner = Rc::new(RefCell::new(Inner::new(config, machine, topics)));
        install_window_listeners(&inner);
        if auto_connect {
            start_attempt(&inner);
        }
        Ok(TidingsClient { inner })
    }

    /// Starts connecting: the first attempt of a client made with `autoConnect: false`, a
    /// fresh start after `unauthorized` (e.g. once the user signed in again), or a retry at
    /// once while waiting for one. A no-op while connecting or open.
    ///
    /// # Errors
    /// Throws on a closed client (`close()` is final: create a new client).
    pub fn connect(&self) -> Result<(), JsError> {
        if self.inner.borrow().window_listeners.is_empty() {
            install_window_listeners(&self.inner);
        }
        if socket::connect(&self.inner) {
            Ok(())
        } else {
            Err(JsError::new("tidings: the client is closed"))
        }
    }

    /// This client's connection id: random, fixed for the client's life, sent at every
    /// handshake. Have the app's fetch wrapper send it in the `tidings-connection-id` header
    /// ([`connectionIdHeader`](Self::connection_id_header)) so that the backend can publish
    /// the events of this client's own changes with `exclude_connection`: this client then
    /// gets a `skipped` frame (its position moves on) instead of refetching its own echo.
    #[wasm_bindgen(getter, js_name = connectionId)]
    pub fn connection_id(&self) -> String {
        self.inner.borrow().config.connection_id.clone()
    }

    /// The name of the request header that carries [`connectionId`](Self::connection_id):
    /// `tidings-connection-id`.
    #[wasm_bindgen(getter, js_name = connectionIdHeader)]
    pub fn connection_id_header(&self) -> String {
        tidings_protocol::CONNECTION_ID_HEADER.to_owned()
    }

    /// The current status; the same object until the status changes (fit for React's
    /// `useSyncExternalStore`).
    #[wasm_bindgen(getter)]
    pub fn status(&self) -> ConnectionStatus {
        self.inner.borrow().status_js().unchecked_into()
    }

    /// Calls `listener` with the current status at once, then whenever the state changes
    /// (`connecting` → `open` → …); with `{ everyChange: true }` also when only the details
    /// change (attempt, delay, reason). Returns a function that stops it (usable as a React
    /// effect's cleanup).
    #[wasm_bindgen(js_name = onStatus)]
    pub fn on_status(
        &self,
        listener: StatusListener,
        options: Option<StatusListenerOptions>,
    ) -> Disposer {
        let f: Function = listener.unchecked_into();
        let every = options
            .map(|o| browser::get(&o, "everyChange").is_truthy())
            .unwrap_or(false);
        let (id, current) = {
            let mut inner = self.inner.borrow_mut();
            let id = inner.id();
            inner.status_listeners.push((id, f.clone(), every));
            (id, inner.status_js())
        };
        let dispose = disposer(&self.inner, DisposeKind::Status, id);
        run(vec![Effect::Call(f, current)]);
        dispose
    }

    /// Calls `listener` with every event of `topic` until `unsubscribe()`. Listeners of one
    /// topic share one server subscription. While disconnected the subscription is queued.
    /// The returned subscription's `unsubscribe` is a bound function: `return
    /// client.subscribe(topic, f).unsubscribe` is a complete React effect.
    ///
    /// `options.presence`: `"join"` makes this client present on the topic (and shows who
    /// else is), `"watch"` shows who is present without being present; read them with
    /// [`presence`](Self::presence) and [`onPresence`](Self::on_presence). The topic's
    /// subscription carries the strongest presence of its listeners; when that changes the
    /// client subscribes again (from its position: nothing is missed).
    ///
    /// # Errors
    /// Throws for an invalid topic name, an invalid `options.presence` or a closed client.
    pub fn subscribe(
        &self,
        topic: String,
        listener: TopicListener,
        options: Option<SubscribeOptions>,
    ) -> Result<Subscription, JsError> {
        Topic::check(&topic).map_err(|e| topic_error(&topic, &e))?;
        let listener: Function = listener.unchecked_into();
        if !listener.is_function() {
            return Err(JsError::new("the listener must be a function"));
        }
        let presence = match options.map(|o| browser::get(&o, "presence")) {
            None => Presence::None,
            Some(p) if p.is_undefined() || p.is_null() => Presence::None,
            Some(p) => match p.as_string().as_deref() {
                Some("join") => Presence::Join,
                Some("watch") => Presence::Watch,
                _ => {
                    return Err(JsError::new(
                        "options.presence must be \"join\" or \"watch\"",
                    ));
                }
            },
        };
        let mut halves = None;
        let ready = Promise::new(&mut |resolve, reject| halves = Some(Ready { resolve, reject }));
        let Some(halves) = halves else {
            return Err(JsError::new("Promise executor did not run"));
        };
        // Mark the promise handled (Function.prototype is a no-op function): apps that never
        // look at `ready` get no "unhandled rejection" when it is rejected.
        let noop: Function = Object::get_prototype_of(halves.resolve.as_ref()).unchecked_into();
        browser::catch(&ready, &noop);
        let (id, effects) = {
            let mut inner = self.inner.borrow_mut();
            if inner.machine.is_final() {
                return Err(JsError::new("the client is closed"));
            }
            let added = inner
                .topics
                .add_with_presence(&topic, listener, halves, presence);
            if added.send_subscribe {
                if let (Some(socket), Ok(t)) = (inner.socket(), Topic::new(topic.clone())) {
                    socket.send(&socket::subscribe(t, added.since, presence));
                }
            }
            if let Some(resend) = added.resend {
                socket::resubscribe(&inner, &topic, resend.since);
            }
            let mut effects: Vec<Effect> = added
                .ready_now
                .into_iter()
                .map(|r| Effect::Call(r.resolve, JsValue::UNDEFINED))
                .collect();
            effects.extend(inner.sync_presence(&topic));
            (added.id, effects)
        };
        run(effects);
        Ok(Subscription {
            client: Rc::downgrade(&self.inner),
            id,
            topic,
            ready,
        })
    }

    /// The users present on `topic` (subscribed with `presence`), one entry per user: a frozen
    /// array, the same object until they change (fit for React's `useSyncExternalStore`).
    /// Empty until the server's first snapshot, and for a topic not subscribed with presence.
    /// Kept while reconnecting; the snapshot after the reconnect changes only what changed.
    pub fn presence(&self, topic: &str) -> PresenceMembers {
        self.inner.borrow_mut().presence_js(topic).unchecked_into()
    }

    /// Calls `listener` with `{ topic, members, joined, left }` whenever the users present on
    /// `topic` change (a join, a leave, another tab of a present user; after a reconnect only
    /// the difference). Not called at once: read [`presence`](Self::presence) for the current
    /// members. Presence must be asked for with `subscribe(topic, f, { presence })`. Returns
    /// a function that stops it.
    #[wasm_bindgen(js_name = onPresence)]
    pub fn on_presence(&self, topic: String, listener: PresenceListener) -> Disposer {
        let id = {
            let mut inner = self.inner.borrow_mut();
            let id = inner.id();
            inner
                .presence_listeners
                .push((id, topic, listener.unchecked_into()));
            id
        };
        disposer(&self.inner, DisposeKind::Presence, id)
    }

    /// Invalidates `queryClient`'s queries on events (and once per topic after a reconnect)
    /// following `rules`. Returns a function that unbinds it.
    ///
    /// # Errors
    /// Throws for malformed rules.
    #[wasm_bindgen(js_name = bindQueryClient)]
    pub fn bind_query_client(
        &self,
        #[wasm_bindgen(js_name = "queryClient")] query_client: QueryClientLike,
        rules: Option<InvalidationRules>,
    ) -> Result<Disposer, JsError> {
        let (rules, on_event) = parse_rules(rules.map(JsValue::from).as_ref())?;
        let id = {
            let mut inner = self.inner.borrow_mut();
            let id = inner.id();
            inner.bindings.push(Binding {
                id,
                query_client: query_client.into(),
                rules,
                on_event,
            });
            id
        };
        Ok(disposer(&self.inner, DisposeKind::Binding, id))
    }

    /// Closes the socket for good: no reconnect, every timer and listener released, pending
    /// `ready` promises rejected. Status listeners see `closed` once, then are dropped.
    pub fn close(&self) {
        let effects = {
            let mut inner = self.inner.borrow_mut();
            inner.machine.close_requested();
            inner.next_generation();
            inner.window_listeners.clear();
            inner.bindings.clear();
            let err = js_error("tidings: the client was closed");
            let mut effects: Vec<Effect> = inner
                .topics
                .clear()
                .into_iter()
                .map(|r| Effect::Call(r.reject, err.clone()))
                .collect();
            effects.extend(inner.status_changed());
            inner.status_listeners.clear();
            inner.rosters.clear();
            inner.presence_listeners.clear();
            effects
        };
        run(effects);
    }

    /// Notes a read stamp: the value of a REST response's `tidings-positions` header (the
    /// positions of the topics its data reflects, taken before the read). A subscribed topic
    /// whose subscription started after the read is resubscribed from the read's position,
    /// so the events in between are replayed (and invalidate or update the cache like any
    /// event); a topic not subscribed yet is subscribed from it. Call it from the app's
    /// fetch wrapper with `response.headers.get("tidings-positions")`; `null` or a malformed
    /// value is ignored.
    #[wasm_bindgen(js_name = noteReadStamp)]
    pub fn note_read_stamp(&self, value: Option<String>) {
        let Some(entries) = value.and_then(|v| js_sys::JSON::parse(&v).ok()) else {
            return;
        };
        if !js_sys::Array::is_array(&entries) {
            return;
        }
        let effects = {
            let mut inner = self.inner.borrow_mut();
            let mut effects = Vec::new();
            for entry in js_sys::Array::from(&entries).iter() {
                let topic = browser::get(&entry, wire::names::TOPIC).as_string();
                let (Some(topic), Some((seq, epoch))) = (topic, inbound::position(&entry)) else {
                    continue;
                };
                if Topic::check(&topic).is_err() {
                    continue;
                }
                match inner.topics.on_stamp(&topic, seq, &epoch) {
                    StampAction::None => {}
                    StampAction::Invalidate => {
                        effects.extend(effects::invalidations_for_topic(&inner.bindings, &topic));
                    }
                    StampAction::Resubscribe(since) => {
                        socket::resubscribe(&inner, &topic, Some(since))
                    }
                }
            }
            effects
        };
        run(effects);
    }

    /// Notes the read stamp of a `fetch` `Response` (its `tidings-positions` header, the name
    /// defined by the protocol crate), as [`noteReadStamp`](Self::note_read_stamp) does with
    /// the header's value. A response without one is ignored.
    #[wasm_bindgen(js_name = noteResponse)]
    pub fn note_response(&self, response: &FetchResponse) {
        let headers = browser::get(response, "headers");
        let get = browser::get(&headers, "get");
        if let Some(get) = get.dyn_ref::<Function>() {
            if let Ok(value) = get.call1(&headers, &JsValue::from_str(POSITIONS_HEADER)) {
                self.note_read_stamp(value.as_string());
            }
        }
    }

    /// Whether a read stamp was noted for `topic` since it got listeners (the hooks close
    /// the read/subscribe gap themselves for reads without one).
    #[wasm_bindgen(js_name = isStamped)]
    pub fn is_stamped(&self, topic: &str) -> bool {
        self.inner.borrow().topics.is_stamped(topic)
    }

    /// The topics that currently have listeners, in name order.
    #[wasm_bindgen(getter)]
    pub fn topics(&self) -> Vec<String> {
        self.inner
            .borrow()
            .topics
            .topics()
            .map(str::to_owned)
            .collect()
    }
}

#[derive(Clone, Copy)]
enum DisposeKind {
    Status,
    Binding,
    /// A topic listener (`subscription.unsubscribe`).
    Listener,
    /// An `onPresence` listener.
    Presence,
}

/// Backs the `() => void` functions `onStatus` and `bindQueryClient` return and
/// `subscription.unsubscribe` (the function is `dispose` bound to this object, so nothing is
/// leaked when it is never called). Declared in the .d.ts like every exported class, so the
/// glue exports no untyped name; apps never make one.
#[wasm_bindgen]
pub struct Dispose {
    client: Weak<RefCell<Inner>>,
    kind: DisposeKind,
    id: u32,
}

#[wasm_bindgen]
impl Dispose {
    /// Removes the status listener, query-client binding or topic listener. Idempotent.
    pub fn dispose(&self) {
        let Some(rc) = self.client.upgrade() else {
            return;
        };
        if let DisposeKind::Listener = self.kind {
            return unsubscribe_listener(&rc, self.id);
        }
        let mut inner = rc.borrow_mut();
        match self.kind {
            DisposeKind::Status => inner.status_listeners.retain(|(i, _, _)| *i != self.id),
            DisposeKind::Binding => inner.bindings.retain(|b| b.id != self.id),
            DisposeKind::Presence => inner.presence_listeners.retain(|(i, _, _)| *i != self.id),
            DisposeKind::Listener => {}
        }
    }
}

fn disposer(inner: &Shared, kind: DisposeKind, id: u32) -> Disposer {
    let obj: JsValue = Dispose {
        client: Rc::downgrade(inner),
        kind,
        id,
    }
    .into();
    let dispose: Function = browser::get(&obj, "dispose").unchecked_into();
    dispose.bind0(&obj).unchecked_into()
}

/// One listener on one topic, returned by `client.subscribe`.
#[wasm_bindgen]
pub struct Subscription {
    client: Weak<RefCell<Inner>>,
    id: ListenerId,
    topic: String,
    ready: Promise,
}

#[wasm_bindgen]
impl Subscription {
    /// The topic.
    #[wasm_bindgen(getter)]
    pub fn topic(&self) -> String {
        self.topic.clone()
    }

    /// Resolves when the server has acknowledged the topic (at once if it already had);
    /// rejects if the server refuses it, or on `unsubscribe()`/`close()` before the ack.
    #[wasm_bindgen(getter)]
    pub fn ready(&self) -> ReadyPromise {
        self.ready.clone().unchecked_into()
    }

    /// Stops this listener; the last listener of a topic unsubscribes on the server.
    /// Idempotent. A function bound to this subscription: `sub.unsubscribe()`, `const {
    /// unsubscribe } = sub` and `useEffect(() => client.subscribe(t, f).unsubscribe, …)` all
    /// work.
    #[wasm_bindgen(getter)]
    pub fn unsubscribe(&self) -> Disposer {
        let obj: JsValue = Dispose {
            client: self.client.clone(),
            kind: DisposeKind::Listener,
            id: self.id,
        }
        .into();
        let dispose: Function = browser::get(&obj, "dispose").unchecked_into();
        dispose.bind0(&obj).unchecked_into()
    }
}

impl Subscription {
    /// `unsubscribe()` from Rust.
    pub fn stop(&self) {
        if let Some(rc) = self.client.upgrade() {
            unsubscribe_listener(&rc, self.id);
        }
    }
}

/// Removes topic listener `id`; the last listener of a topic unsubscribes on the server.
fn unsubscribe_listener(rc: &Shared, id: ListenerId) {
    let effects = {
        let mut inner = rc.borrow_mut();
        let Some(removed) = inner.topics.remove(id) else {
            return;
        };
        if removed.send_unsubscribe {
            if let (Some(socket), Ok(topic)) = (inner.socket(), Topic::new(removed.topic.clone())) {
                socket.send(&WSClientMessage::Unsubscribe { topic });
            }
        }
        if let Some(resend) = removed.resend {
            socket::resubscribe(&inner, &removed.topic, resend.since);
        }
        let mut effects = inner.sync_presence(&removed.topic);
        effects.extend(removed.unsettled.map(|r| {
            Effect::Call(
                r.reject,
                js_error("tidings: unsubscribed before the server acknowledged"),
            )
        }));
        effects
    };
    run(effects);
}

/// Listens to the page's `online`, `offline` and `visibilitychange` events (dropped when the
/// client stops; installed again by `connect()`).
fn install_window_listeners(inner: &Shared) {
    let weak = Rc::downgrade(inner);
    let mut listeners = Vec::new();
    let w = weak.clone();
    listeners.extend(Listener::new(&js_sys::global(), "online", move |_| {
        if let Some(rc) = w.upgrade() {
            went_online(&rc);
        }
    }));
    let w = weak.clone();
    listeners.extend(Listener::new(&js_sys::global(), "offline", move |_| {
        if let Some(rc) = w.upgrade() {
            went_offline(&rc);
        }
    }));
    let w = weak;
    listeners.extend(Listener::new(
        &browser::global("document"),
        "visibilitychange",
        move |_| {
            let visible = browser::get(&browser::global("document"), "visibilityState")
                .as_string()
                .is_some_and(|s| s == "visible");
            if let (true, Some(rc)) = (visible, w.upgrade()) {
                check_liveness(&rc);
            }
        },
    ));
    inner.borrow_mut().window_listeners = listeners;
}
