//! The JavaScript API: `TidingsClient` and `Subscription` (the whole `#[wasm_bindgen]` facade).
//!
//! One `Rc<RefCell<Inner>>` holds the client's state; every browser callback (socket handlers,
//! timers, window listeners) holds only a `Weak` to it plus the generation of the connection
//! it belongs to, so freeing the client drops everything and a callback of an old socket is a
//! no-op. Application callbacks (topic listeners, status listeners, `getToken`, TanStack's
//! `invalidateQueries`) are never called while the state is borrowed: the state machine
//! returns [`Effect`]s that run after the borrow ends, so a callback may call back into the
//! client (unsubscribe from inside a listener, close from a status listener).
//!
//! With a `getToken`, an open connection refreshes its token in band before it expires (see
//! [`refresh`](crate::refresh)); a failed refresh leaves the connection to the server's 4002
//! close and the normal reconnect.
//!
//! Incoming frames are parsed with the browser's `JSON.parse` and read with `Reflect` (no
//! serde_json in the wasm); a topic listener receives the parsed `WSEvent` object itself.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use js_sys::{Array, Function, Object, Promise};
use tidings_protocol::{MAX_TOPIC_LEN, StreamPosition, Topic, TopicError, WSClientMessage};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use crate::backoff::{Backoff, DEFAULT_INITIAL_DELAY_MS, DEFAULT_MAX_DELAY_MS};
use crate::browser::{self, Listener, Timeout};
use crate::keepalive::{DEFAULT_PING_INTERVAL_MS, DEFAULT_PONG_TIMEOUT_MS, Keepalive, Tick};
use crate::refresh::{TokenRefresh, jwt_payload};
use crate::rules::{QueryKey, Rule, Rules};
use crate::status::{Decision, Status, StatusMachine};
use crate::topics::{ListenerId, TopicSet};
use crate::wire::encode;

/// Default time allowed for a WebSocket handshake, in milliseconds (`connectTimeoutMs`).
pub const DEFAULT_CONNECT_TIMEOUT_MS: f64 = 10_000.0;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
import type { WSEvent } from "./types/index.js";
export type { EventData, EventType, Payload, ServerMessage, Topic, WSClientMessage, WSError, WSEvent, WSReply } from "./types/index.js";

/** A TanStack Query key. */
export type QueryKey = readonly unknown[];

/** The states of a client's connection. */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "unauthorized" | "closed";

/** What `client.status` returns; the same object until the status changes. */
export interface ConnectionStatus {
  readonly state: ConnectionState;
  /** Reconnecting: the attempt number (1 for the first retry). */
  readonly attempt?: number;
  /** Reconnecting: the delay before this attempt, in milliseconds. */
  readonly nextDelayMs?: number;
  /** The code of the last close (e.g. 4001, 1012, 1006); cleared when a connection opens. */
  readonly closeCode?: number;
  /** The reason of the last close, or why the client gave up on a connection; cleared when a connection opens. */
  readonly closeReason?: string;
}

/** Options of `new TidingsClient(options)`. */
export interface TidingsClientOptions {
  /** The WebSocket URL, e.g. `ws://localhost:8000/ws`; the token is added as `?token=`. */
  url: string;
  /** A fixed token (when `getToken` is not given). */
  token?: string;
  /** Called before every connect and reconnect, and to refresh an open connection's token before its `exp`; wins over `token`. */
  getToken?: () => Promise<string> | string;
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

/** Called with the new status whenever it changes. */
export type StatusListener = (status: ConnectionStatus) => void;

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
    /// `(status: ConnectionStatus) => void` (TypeScript).
    #[wasm_bindgen(typescript_type = "StatusListener")]
    pub type StatusListener;
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
    /// `() => void` (TypeScript): call it to stop listening.
    #[wasm_bindgen(typescript_type = "() => void")]
    pub type Disposer;
}

/// Settings read from the options object.
struct Config {
    url: String,
    token: Option<String>,
    get_token: Option<Function>,
    initial_delay_ms: f64,
    max_delay_ms: f64,
    ping_interval_ms: f64,
    pong_timeout_ms: f64,
    connect_timeout_ms: f64,
}

fn number(options: &JsValue, key: &str, default: f64) -> Result<f64, JsError> {
    let v = browser::get(options, key);
    if v.is_undefined() || v.is_null() {
        return Ok(default);
    }
    match v.as_f64() {
        Some(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err(JsError::new(&format!(
            "options.{key} must be a positive number of milliseconds"
        ))),
    }
}

impl Config {
    fn parse(options: &JsValue) -> Result<Self, JsError> {
        let url = browser::get(options, "url")
            .as_string()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| JsError::new("options.url must be a non-empty string"))?;
        let get_token = browser::get(options, "getToken");
        let get_token = if get_token.is_undefined() || get_token.is_null() {
            None
        } else if get_token.is_function() {
            Some(get_token.unchecked_into())
        } else {
            return Err(JsError::new("options.getToken must be a function"));
        };
        let token = browser::get(options, "token");
        let token = if token.is_undefined() || token.is_null() {
            None
        } else {
            Some(
                token
                    .as_string()
                    .ok_or_else(|| JsError::new("options.token must be a string"))?,
            )
        };
        Ok(Self {
            url,
            token,
            get_token,
            initial_delay_ms: number(options, "initialDelayMs", DEFAULT_INITIAL_DELAY_MS)?,
            max_delay_ms: number(options, "maxDelayMs", DEFAULT_MAX_DELAY_MS)?,
            ping_interval_ms: number(options, "pingIntervalMs", DEFAULT_PING_INTERVAL_MS)?,
            pong_timeout_ms: number(options, "pongTimeoutMs", DEFAULT_PONG_TIMEOUT_MS)?,
            connect_timeout_ms: number(options, "connectTimeoutMs", DEFAULT_CONNECT_TIMEOUT_MS)?,
        })
    }

    fn socket_url(&self, token: Option<&str>) -> String {
        match token {
            None => self.url.clone(),
            Some(t) => {
                let sep = if self.url.contains('?') { '&' } else { '?' };
                let t = String::from(js_sys::encode_uri_component(t));
                format!("{}{sep}token={t}", self.url)
            }
        }
    }
}

/// The two halves of a `ready` promise.
struct Ready {
    resolve: Function,
    reject: Function,
}

/// A query client bound with `bindQueryClient`.
struct Binding {
    id: u32,
    query_client: JsValue,
    rules: Rules,
    on_event: Option<Function>,
}

/// One WebSocket and its handlers. Dropping it detaches the handlers and closes the socket.
struct Socket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Socket {
    fn send(&self, message: &WSClientMessage) {
        // A failed send means the socket is closing; its close event drives the reconnect.
        let _ = self.ws.send_with_str(&encode(message));
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        // CONNECTING (0) or OPEN (1): we are giving up on it.
        if self.ws.ready_state() <= 1 {
            let _ = self.ws.close_with_code(1000);
        }
    }
}

/// What the connection is doing.
enum Phase {
    /// Nothing in flight (stopped, or between two steps).
    Idle,
    /// Waiting for `getToken`; the timer gives up after `connectTimeoutMs`.
    FetchingToken { _timeout: Timeout },
    /// Waiting out a reconnect delay (the timer starts the next attempt).
    Waiting { _timer: Timeout },
    /// Handshake in progress, with its timeout and the expiry of its token (Unix ms).
    Connecting {
        socket: Socket,
        _timeout: Timeout,
        token_exp_ms: Option<f64>,
    },
    /// Open, with the keepalive and its timer, and the token refresh and its timer (none
    /// without `getToken` or a readable `exp`).
    Open {
        socket: Socket,
        keepalive: Keepalive,
        timer: Timeout,
        refresh: TokenRefresh,
        refresh_timer: Option<Timeout>,
    },
}

/// A call to application code, made after the state borrow ends.
enum Effect {
    Call(Function, JsValue),
    Invalidate {
        query_client: JsValue,
        keys: Vec<QueryKey>,
    },
    InvalidateForEvent {
        query_client: JsValue,
        on_event: Function,
        event: JsValue,
        fallback: Vec<QueryKey>,
    },
}

fn invalidate(query_client: &JsValue, key: &JsValue) {
    let f = browser::get(query_client, "invalidateQueries");
    if let Some(f) = f.dyn_ref::<Function>() {
        let filters = Object::new();
        browser::set(&filters, "queryKey", key);
        if let Err(e) = f.call1(query_client, &filters) {
            browser::report("tidings: invalidateQueries threw", &e);
        }
    }
}

fn key_to_js(key: &QueryKey) -> JsValue {
    key.iter()
        .map(|s| JsValue::from_str(s))
        .collect::<Array>()
        .into()
}

fn run(effects: Vec<Effect>) {
    for effect in effects {
        match effect {
            Effect::Call(f, arg) => {
                if let Err(e) = f.call1(&JsValue::UNDEFINED, &arg) {
                    browser::report("tidings: a listener threw", &e);
                }
            }
            Effect::Invalidate { query_client, keys } => {
                for key in &keys {
                    invalidate(&query_client, &key_to_js(key));
                }
            }
            Effect::InvalidateForEvent {
                query_client,
                on_event,
                event,
                fallback,
            } => match on_event.call1(&JsValue::UNDEFINED, &event) {
                Ok(keys) if Array::is_array(&keys) => {
                    for key in Array::from(&keys).iter() {
                        invalidate(&query_client, &key);
                    }
                }
                Ok(_) => {
                    for key in &fallback {
                        invalidate(&query_client, &key_to_js(key));
                    }
                }
                Err(e) => browser::report("tidings: rules.onEvent threw", &e),
            },
        }
    }
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

fn js_error(message: &str) -> JsValue {
    js_sys::Error::new(message).into()
}

/// When `token` expires (its `exp` claim, in Unix ms); `None` when it is not a JWT with a
/// numeric `exp`.
fn token_exp_ms(token: &str) -> Option<f64> {
    let claims = js_sys::JSON::parse(&jwt_payload(token)?).ok()?;
    browser::get(&claims, "exp")
        .as_f64()
        .filter(|exp| exp.is_finite())
        .map(|exp| exp * 1000.0)
}

fn describe(error: &JsValue) -> String {
    error
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| error.as_string())
        .unwrap_or_else(|| "unknown error".to_owned())
}

struct Inner {
    config: Config,
    machine: StatusMachine,
    topics: TopicSet<Function, Ready, Timeout>,
    phase: Phase,
    /// Increases with every connection attempt; callbacks of older ones are ignored.
    generation: u32,
    status_listeners: Vec<(u32, Function)>,
    last_status: Status,
    status_js: JsValue,
    bindings: Vec<Binding>,
    window_listeners: Vec<Listener>,
    next_id: u32,
}

type Shared = Rc<RefCell<Inner>>;

fn status_to_js(status: &Status) -> JsValue {
    let object = Object::new();
    let obj: &JsValue = &object;
    browser::set(obj, "state", &JsValue::from_str(status.state.as_str()));
    if let Some(a) = status.attempt {
        browser::set(obj, "attempt", &JsValue::from(a));
    }
    if let Some(d) = status.next_delay_ms {
        browser::set(obj, "nextDelayMs", &JsValue::from(d));
    }
    if let Some(c) = status.close_code {
        browser::set(obj, "closeCode", &JsValue::from(c));
    }
    if let Some(r) = &status.close_reason {
        browser::set(obj, "closeReason", &JsValue::from_str(r));
    }
    Object::freeze(&object);
    object.into()
}

impl Inner {
    fn id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// Refreshes the cached status object; effects notify the listeners if it changed.
    fn status_changed(&mut self) -> Vec<Effect> {
        let status = self.machine.status();
        if *status == self.last_status {
            return Vec::new();
        }
        self.last_status = status.clone();
        self.status_js = status_to_js(status);
        self.status_listeners
            .iter()
            .map(|(_, f)| Effect::Call(f.clone(), self.status_js.clone()))
            .collect()
    }

    fn socket(&self) -> Option<&Socket> {
        match &self.phase {
            Phase::Open { socket, .. } => Some(socket),
            _ => None,
        }
    }

    fn invalidations_for_topic(&self, topic: &str) -> Vec<Effect> {
        self.bindings
            .iter()
            .map(|b| Effect::Invalidate {
                query_client: b.query_client.clone(),
                keys: b.rules.keys_for(topic),
            })
            .collect()
    }

    fn invalidations_for_event(&self, topic: &str, event: &JsValue) -> Vec<Effect> {
        self.bindings
            .iter()
            .map(|b| match &b.on_event {
                Some(on_event) => Effect::InvalidateForEvent {
                    query_client: b.query_client.clone(),
                    on_event: on_event.clone(),
                    event: event.clone(),
                    fallback: b.rules.keys_for(topic),
                },
                None => Effect::Invalidate {
                    query_client: b.query_client.clone(),
                    keys: b.rules.keys_for(topic),
                },
            })
            .collect()
    }

    /// Acts on the machine's decision after a connection ended.
    fn schedule(&mut self, weak: &Weak<RefCell<Inner>>, decision: Decision) -> Vec<Effect> {
        // Late callbacks of the attempt that ended (a token that arrives after its timeout)
        // belong to an old generation and are ignored.
        self.generation = self.generation.wrapping_add(1);
        self.phase = Phase::Idle;
        self.topics.on_close();
        match decision {
            Decision::Reconnect { delay_ms } => {
                let weak = weak.clone();
                self.phase = Phase::Waiting {
                    _timer: Timeout::new(delay_ms, move || {
                        if let Some(rc) = weak.upgrade() {
                            start_attempt(&rc);
                        }
                    }),
                };
            }
            Decision::Stop => self.window_listeners.clear(),
        }
        self.status_changed()
    }
}

/// Starts a connection attempt: fetch a token, then open a socket.
fn start_attempt(rc: &Shared) {
    let (generation, get_token, token) = {
        let mut inner = rc.borrow_mut();
        if inner.machine.is_final() {
            return;
        }
        inner.generation = inner.generation.wrapping_add(1);
        inner.phase = Phase::Idle;
        (
            inner.generation,
            inner.config.get_token.clone(),
            inner.config.token.clone(),
        )
    };
    let Some(get_token) = get_token else {
        open_socket(rc, generation, token);
        return;
    };
    // Application code: called with no borrow held.
    let result = get_token.call0(&JsValue::UNDEFINED);
    let weak = Rc::downgrade(rc);
    {
        let mut inner = rc.borrow_mut();
        if inner.generation != generation {
            return; // getToken closed the client or started over
        }
        let w = weak.clone();
        inner.phase = Phase::FetchingToken {
            _timeout: Timeout::new(inner.config.connect_timeout_ms, move || {
                if let Some(rc) = w.upgrade() {
                    fail(
                        &rc,
                        generation,
                        "getToken did not settle within connectTimeoutMs",
                    );
                }
            }),
        };
    }
    wasm_bindgen_futures::spawn_local(async move {
        let token = match result {
            Ok(v) => JsFuture::from(Promise::resolve(&v)).await,
            Err(e) => Err(e),
        };
        let Some(rc) = weak.upgrade() else { return };
        if rc.borrow().generation != generation {
            return;
        }
        match token {
            Ok(t) => match t.as_string() {
                Some(t) => open_socket(&rc, generation, Some(t)),
                None => fail(&rc, generation, "getToken did not return a string"),
            },
            Err(e) => fail(
                &rc,
                generation,
                &format!("getToken failed: {}", describe(&e)),
            ),
        }
    });
}

fn open_socket(rc: &Shared, generation: u32, token: Option<String>) {
    let weak = Rc::downgrade(rc);
    let token_exp_ms = token.as_deref().and_then(token_exp_ms);
    let url = rc.borrow().config.socket_url(token.as_deref());
    let ws = match WebSocket::new(&url) {
        Ok(ws) => ws,
        Err(e) => {
            let why = format!("could not create the WebSocket: {}", describe(&e));
            return fail(rc, generation, &why);
        }
    };
    let w = weak.clone();
    let on_open = Closure::<dyn FnMut()>::new(move || {
        if let Some(rc) = w.upgrade() {
            on_open(&rc, generation);
        }
    });
    let w = weak.clone();
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
        if let Some(rc) = w.upgrade() {
            on_message(&rc, generation, e.data());
        }
    });
    let w = weak.clone();
    let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| {
        if let Some(rc) = w.upgrade() {
            on_close(&rc, generation, e.code(), &e.reason());
        }
    });
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    let socket = Socket {
        ws,
        _on_open: on_open,
        _on_message: on_message,
        _on_close: on_close,
    };
    let mut inner = rc.borrow_mut();
    if inner.generation != generation || inner.machine.is_final() {
        return; // dropping `socket` closes it
    }
    let w = weak.clone();
    let timeout = Timeout::new(inner.config.connect_timeout_ms, move || {
        if let Some(rc) = w.upgrade() {
            fail(
                &rc,
                generation,
                "no WebSocket handshake within connectTimeoutMs",
            );
        }
    });
    inner.phase = Phase::Connecting {
        socket,
        _timeout: timeout,
        token_exp_ms,
    };
}

fn keepalive_timer(weak: &Weak<RefCell<Inner>>, generation: u32, delay_ms: f64) -> Timeout {
    let weak = weak.clone();
    Timeout::new(delay_ms, move || {
        if let Some(rc) = weak.upgrade() {
            on_keepalive_tick(&rc, generation);
        }
    })
}

fn on_open(rc: &Shared, generation: u32) {
    let weak = Rc::downgrade(rc);
    let effects = {
        let mut inner = rc.borrow_mut();
        if inner.generation != generation {
            return;
        }
        let Phase::Connecting {
            socket,
            token_exp_ms,
            ..
        } = std::mem::replace(&mut inner.phase, Phase::Idle)
        else {
            return;
        };
        let reconnect = inner.machine.opened();
        for (topic, since) in inner.topics.on_open(reconnect) {
            if let Ok(topic) = Topic::new(topic) {
                let since = since.map(|(seq, epoch)| StreamPosition { seq, epoch });
                socket.send(&WSClientMessage::Subscribe { topic, since });
            }
        }
        let now = js_sys::Date::now();
        let (keepalive, due) = Keepalive::start(
            inner.config.ping_interval_ms,
            inner.config.pong_timeout_ms,
            now,
        );
        // A fixed token cannot be refreshed: only `getToken` can give a newer one.
        let refresh = TokenRefresh::new(token_exp_ms.filter(|_| inner.config.get_token.is_some()));
        let refresh_timer = refresh
            .first_delay(now)
            .map(|delay| refresh_timer(&weak, generation, delay));
        inner.phase = Phase::Open {
            socket,
            keepalive,
            timer: keepalive_timer(&weak, generation, due - now),
            refresh,
            refresh_timer,
        };
        inner.status_changed()
    };
    run(effects);
}

fn on_message(rc: &Shared, generation: u32, data: JsValue) {
    // Binary frames are not part of the protocol: ignore them.
    let Some(text) = data.as_string() else { return };
    let now = js_sys::Date::now();
    let effects = {
        let mut inner = rc.borrow_mut();
        if inner.generation != generation {
            return;
        }
        if let Phase::Open { keepalive, .. } = &mut inner.phase {
            keepalive.frame_received(now);
        }
        inner.machine.frame_received();
        let Ok(msg) = js_sys::JSON::parse(&text) else {
            return browser::report("tidings: a frame is not JSON", &JsValue::from_str(&text));
        };
        let topic = browser::get(&msg, "topic").as_string();
        let mut effects = Vec::new();
        if !browser::get(&msg, "event").is_undefined() {
            if let Some(topic) = topic {
                // A position the server sent (absent from seed servers). Integers up to 2^53
                // are exact as f64, which is all a JSON number can be in the browser.
                let seq = browser::get(&msg, "seq")
                    .as_f64()
                    .filter(|s| *s >= 0.0)
                    .map(|s| s as u64);
                let epoch = browser::get(&msg, "epoch").as_string();
                let weak = Rc::downgrade(rc);
                let schedule = |delay| recovery_timer(&weak, generation, &topic, delay);
                let random = js_sys::Math::random();
                if !inner
                    .topics
                    .on_event(&topic, seq, epoch.as_deref(), now, random, schedule)
                {
                    // Already delivered (a replay overlapping what arrived live), or held
                    // back until the topic's gap recovery replays it.
                    return;
                }
                for listener in inner.topics.listeners(&topic) {
                    effects.push(Effect::Call(listener.clone(), msg.clone()));
                }
                effects.extend(inner.invalidations_for_event(&topic, &msg));
            }
        } else if let Some(action) = browser::get(&msg, "action").as_string() {
            if let (Some(topic), "subscribed") = (topic, action.as_str()) {
                let recovered = browser::get(&msg, "recovered").as_bool();
                let weak = Rc::downgrade(rc);
                let schedule = |delay| recovery_timer(&weak, generation, &topic, delay);
                let random = js_sys::Math::random();
                if let Some(ack) = inner
                    .topics
                    .on_subscribed(&topic, recovered, now, random, schedule)
                {
                    for r in ack.ready {
                        effects.push(Effect::Call(r.resolve, JsValue::UNDEFINED));
                    }
                    if ack.invalidate {
                        effects.extend(inner.invalidations_for_topic(&topic));
                    }
                }
            }
            if action == "refreshed" {
                let weak = Rc::downgrade(rc);
                if let Phase::Open {
                    refresh,
                    refresh_timer,
                    ..
                } = &mut inner.phase
                {
                    // The server now holds the new token's expiry: schedule the next refresh
                    // from it (nothing when it did not move forward).
                    if let Some(delay) = refresh.refreshed(now) {
                        *refresh_timer = Some(self::refresh_timer(&weak, generation, delay));
                    }
                }
            }
            // "unsubscribed" and "pong" only prove liveness (recorded above).
        } else if let Some(error) = browser::get(&msg, "error").as_string() {
            let details = browser::get(&msg, "details").as_string();
            let text = match details {
                Some(d) => format!("{error}: {d}"),
                None => error,
            };
            match topic {
                Some(topic) => {
                    let err = js_error(&format!("tidings: {topic}: {text}"));
                    for r in inner.topics.on_refused(&topic) {
                        effects.push(Effect::Call(r.reject, err.clone()));
                    }
                }
                None => browser::report("tidings: the server answered", &JsValue::from_str(&text)),
            }
        }
        effects
    };
    run(effects);
}

/// The timer of a topic's gap recovery (owned by the topic's entry: it dies with it, or when
/// the socket closes).
fn recovery_timer(
    weak: &Weak<RefCell<Inner>>,
    generation: u32,
    topic: &str,
    delay_ms: f64,
) -> Timeout {
    let weak = weak.clone();
    let topic = topic.to_owned();
    Timeout::new(delay_ms, move || {
        if let Some(rc) = weak.upgrade() {
            recover_topic(&rc, generation, &topic);
        }
    })
}

/// Resubscribes `topic` from its last delivered position: `unsubscribe` first, since the
/// server answers a subscribe for a topic it already has with `recovered: false` at once.
fn recover_topic(rc: &Shared, generation: u32, topic: &str) {
    let mut inner = rc.borrow_mut();
    if inner.generation != generation {
        return;
    }
    let Some((seq, epoch)) = inner.topics.recover_now(topic) else {
        return;
    };
    if let (Some(socket), Ok(topic)) = (inner.socket(), Topic::new(topic.to_owned())) {
        socket.send(&WSClientMessage::Unsubscribe {
            topic: topic.clone(),
        });
        socket.send(&WSClientMessage::Subscribe {
            topic,
            since: Some(StreamPosition { seq, epoch }),
        });
    }
}

fn on_close(rc: &Shared, generation: u32, code: u16, reason: &str) {
    let weak = Rc::downgrade(rc);
    let effects = {
        let mut inner = rc.borrow_mut();
        if inner.generation != generation || inner.machine.is_final() {
            return;
        }
        let decision = inner.machine.closed(code, reason, js_sys::Math::random());
        inner.schedule(&weak, decision)
    };
    run(effects);
}

/// Gives up on the current attempt or socket and retries with backoff.
fn fail(rc: &Shared, generation: u32, reason: &str) {
    let weak = Rc::downgrade(rc);
    let effects = {
        let mut inner = rc.borrow_mut();
        if inner.generation != generation || inner.machine.is_final() {
            return;
        }
        let decision = inner.machine.failed(reason, js_sys::Math::random());
        inner.schedule(&weak, decision)
    };
    run(effects);
}

fn refresh_timer(weak: &Weak<RefCell<Inner>>, generation: u32, delay_ms: f64) -> Timeout {
    let weak = weak.clone();
    Timeout::new(delay_ms, move || {
        if let Some(rc) = weak.upgrade() {
            refresh_token(&rc, generation);
        }
    })
}

/// The refresh timer fired: fetch a token and send it in a `refresh`. A `getToken` that fails
/// (or settles after the connection ended) sends nothing: the server then closes with 4002
/// at the old token's expiry and the normal reconnect takes over.
fn refresh_token(rc: &Shared, generation: u32) {
    let get_token = {
        let inner = rc.borrow();
        if inner.generation != generation || !matches!(inner.phase, Phase::Open { .. }) {
            return;
        }
        inner.config.get_token.clone()
    };
    let Some(get_token) = get_token else { return };
    // Application code: called with no borrow held.
    let result = get_token.call0(&JsValue::UNDEFINED);
    let weak = Rc::downgrade(rc);
    wasm_bindgen_futures::spawn_local(async move {
        let token = match result {
            Ok(v) => JsFuture::from(Promise::resolve(&v)).await,
            Err(e) => Err(e),
        };
        let Some(rc) = weak.upgrade() else { return };
        let mut inner = rc.borrow_mut();
        if inner.generation != generation {
            return;
        }
        let Phase::Open {
            socket, refresh, ..
        } = &mut inner.phase
        else {
            return;
        };
        match token.map(|t| t.as_string().filter(|t| !t.is_empty())) {
            Ok(Some(token)) => {
                refresh.sent(token_exp_ms(&token));
                socket.send(&WSClientMessage::Refresh { token });
            }
            Ok(None) => browser::report(
                "tidings: token refresh skipped",
                &JsValue::from_str("getToken did not return a non-empty string"),
            ),
            Err(e) => browser::report("tidings: token refresh skipped: getToken failed", &e),
        }
    });
}

fn on_keepalive_tick(rc: &Shared, generation: u32) {
    let weak = Rc::downgrade(rc);
    let dead = {
        let mut inner = rc.borrow_mut();
        if inner.generation != generation {
            return;
        }
        let Phase::Open {
            socket,
            keepalive,
            timer,
            ..
        } = &mut inner.phase
        else {
            return;
        };
        let now = js_sys::Date::now();
        match keepalive.tick(now) {
            Tick::Ping => {
                socket.send(&WSClientMessage::Ping);
                let due = keepalive.ping_sent(now);
                *timer = keepalive_timer(&weak, generation, due - now);
                false
            }
            Tick::WaitUntil(at) => {
                *timer = keepalive_timer(&weak, generation, at - now);
                false
            }
            Tick::Dead => true,
        }
    };
    if dead {
        fail(rc, generation, "no pong within pongTimeoutMs");
    }
}

/// The network came back or the page became visible: ping now, or retry now if waiting.
fn check_liveness(rc: &Shared) {
    let weak = Rc::downgrade(rc);
    let retry_now = {
        let mut inner = rc.borrow_mut();
        let generation = inner.generation;
        match &mut inner.phase {
            Phase::Open {
                socket,
                keepalive,
                timer,
                ..
            } => {
                if keepalive.check_now() {
                    let now = js_sys::Date::now();
                    socket.send(&WSClientMessage::Ping);
                    let due = keepalive.ping_sent(now);
                    *timer = keepalive_timer(&weak, generation, due - now);
                }
                false
            }
            Phase::Waiting { .. } => true,
            _ => false,
        }
    };
    if retry_now {
        start_attempt(rc);
    }
}

/// A WebSocket client for a tidings server: subscriptions with reference counting,
/// reconnects with backoff and fresh tokens, keepalive, and TanStack Query invalidation.
#[wasm_bindgen]
pub struct TidingsClient {
    inner: Shared,
}

#[wasm_bindgen]
impl TidingsClient {
    /// Creates the client and starts connecting.
    ///
    /// # Errors
    /// Throws for invalid options (missing `url`, a non-function `getToken`, a non-positive
    /// delay).
    #[wasm_bindgen(constructor)]
    pub fn new(options: ClientOptions) -> Result<TidingsClient, JsError> {
        let config = Config::parse(&options)?;
        let machine =
            StatusMachine::new(Backoff::new(config.initial_delay_ms, config.max_delay_ms));
        // Repeated gap recoveries of a topic are paced like reconnects.
        let topics =
            TopicSet::with_backoff(Backoff::new(config.initial_delay_ms, config.max_delay_ms));
        let last_status = machine.status().clone();
        let status_js = status_to_js(&last_status);
        let inner = Rc::new(RefCell::new(Inner {
            config,
            machine,
            topics,
            phase: Phase::Idle,
            generation: 0,
            status_listeners: Vec::new(),
            last_status,
            status_js,
            bindings: Vec::new(),
            window_listeners: Vec::new(),
            next_id: 0,
        }));
        let weak = Rc::downgrade(&inner);
        let mut listeners = Vec::new();
        let w = weak.clone();
        listeners.extend(Listener::new(&js_sys::global(), "online", move |_| {
            if let Some(rc) = w.upgrade() {
                check_liveness(&rc);
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
        start_attempt(&inner);
        Ok(TidingsClient { inner })
    }

    /// The current status; the same object until the status changes (fit for React's
    /// `useSyncExternalStore`).
    #[wasm_bindgen(getter)]
    pub fn status(&self) -> ConnectionStatus {
        self.inner.borrow().status_js.clone().unchecked_into()
    }

    /// Calls `listener` with every new status. Returns a function that stops it.
    #[wasm_bindgen(js_name = onStatus)]
    pub fn on_status(&self, listener: StatusListener) -> Disposer {
        let f: Function = listener.unchecked_into();
        let id = {
            let mut inner = self.inner.borrow_mut();
            let id = inner.id();
            inner.status_listeners.push((id, f));
            id
        };
        disposer(&self.inner, DisposeKind::Status, id)
    }

    /// Calls `listener` with every event of `topic` until `unsubscribe()`. Listeners of one
    /// topic share one server subscription. While disconnected the subscription is queued.
    ///
    /// # Errors
    /// Throws for an invalid topic name or a closed client.
    pub fn subscribe(
        &self,
        topic: String,
        listener: TopicListener,
    ) -> Result<Subscription, JsError> {
        Topic::check(&topic).map_err(|e| topic_error(&topic, &e))?;
        let listener: Function = listener.unchecked_into();
        if !listener.is_function() {
            return Err(JsError::new("the listener must be a function"));
        }
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
            let added = inner.topics.add(&topic, listener, halves);
            if added.send_subscribe {
                if let (Some(socket), Ok(t)) = (inner.socket(), Topic::new(topic.clone())) {
                    socket.send(&WSClientMessage::Subscribe {
                        topic: t,
                        since: None,
                    });
                }
            }
            let effects: Vec<Effect> = added
                .ready_now
                .into_iter()
                .map(|r| Effect::Call(r.resolve, JsValue::UNDEFINED))
                .collect();
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
            inner.generation = inner.generation.wrapping_add(1);
            inner.phase = Phase::Idle;
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
            effects
        };
        run(effects);
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

fn parse_rules(rules: Option<&JsValue>) -> Result<(Rules, Option<Function>), JsError> {
    let Some(rules) = rules.filter(|r| !r.is_undefined() && !r.is_null()) else {
        return Ok((Rules::defaults(), None));
    };
    let mut custom = Rules::empty();
    let topics = browser::get(rules, "topics");
    if topics.is_object() {
        for entry in Object::entries(topics.unchecked_ref()).iter() {
            let entry = Array::from(&entry);
            let pattern = entry.get(0).as_string().unwrap_or_default();
            let keys = entry.get(1);
            if !Array::is_array(&keys) {
                return Err(JsError::new(&format!(
                    "rules.topics[\"{pattern}\"] must be an array of query keys"
                )));
            }
            let mut parsed = Vec::new();
            for key in Array::from(&keys).iter() {
                let segments: Option<Vec<String>> = Array::is_array(&key)
                    .then(|| Array::from(&key).iter().map(|s| s.as_string()).collect())
                    .flatten();
                parsed.push(segments.ok_or_else(|| {
                    JsError::new(&format!(
                        "rules.topics[\"{pattern}\"]: a query key must be an array of strings"
                    ))
                })?);
            }
            custom.push(Rule::new(&pattern, parsed).map_err(|e| JsError::new(&e.to_string()))?);
        }
    }
    let on_event = browser::get(rules, "onEvent");
    let on_event = match on_event.dyn_into::<Function>() {
        Ok(f) => Some(f),
        Err(v) if v.is_undefined() || v.is_null() => None,
        Err(_) => return Err(JsError::new("rules.onEvent must be a function")),
    };
    let defaults = browser::get(rules, "defaults").as_bool().unwrap_or(true);
    let rules = if defaults {
        custom.then(Rules::defaults())
    } else {
        custom
    };
    Ok((rules, on_event))
}

#[derive(Clone, Copy)]
enum DisposeKind {
    Status,
    Binding,
}

/// Backs the `() => void` functions `onStatus` and `bindQueryClient` return (the function is
/// `dispose` bound to this object, so nothing is leaked when it is never called). Declared in
/// the .d.ts like every exported class, so the glue exports no untyped name; apps never make one.
#[wasm_bindgen]
pub struct Dispose {
    client: Weak<RefCell<Inner>>,
    kind: DisposeKind,
    id: u32,
}

#[wasm_bindgen]
impl Dispose {
    /// Removes the status listener or query-client binding. Idempotent.
    pub fn dispose(&self) {
        let Some(rc) = self.client.upgrade() else {
            return;
        };
        let mut inner = rc.borrow_mut();
        match self.kind {
            DisposeKind::Status => inner.status_listeners.retain(|(i, _)| *i != self.id),
            DisposeKind::Binding => inner.bindings.retain(|b| b.id != self.id),
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
    /// Idempotent.
    pub fn unsubscribe(&self) {
        let Some(rc) = self.client.upgrade() else {
            return;
        };
        let effects = {
            let mut inner = rc.borrow_mut();
            let Some(removed) = inner.topics.remove(self.id) else {
                return;
            };
            if removed.send_unsubscribe {
                if let (Some(socket), Ok(topic)) = (inner.socket(), Topic::new(removed.topic)) {
                    socket.send(&WSClientMessage::Unsubscribe { topic });
                }
            }
            removed
                .unsettled
                .map(|r| {
                    Effect::Call(
                        r.reject,
                        js_error("tidings: unsubscribed before the server acknowledged"),
                    )
                })
                .into_iter()
                .collect::<Vec<_>>()
        };
        run(effects);
    }
}
