//! The client in headless Chromium against a REAL `tidings` server.
//!
//! `./scripts/test-wasm` starts `tests/harness.mjs` (which runs the server and exposes token,
//! publish, restart, freeze and thaw over CORS-enabled HTTP) and passes its URL at compile
//! time in `TIDINGS_HARNESS`. Tests run one at a time (wasm-bindgen-test's concurrency is 1),
//! so restarting or freezing the server in one test cannot disturb another.
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Date, Function, JSON, Object, Promise, Reflect};
use tidings_client::client::{ClientOptions, StatusListener, TidingsClient, TopicListener};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const HARNESS: Option<&str> = option_env!("TIDINGS_HARNESS");

fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn set(obj: &JsValue, key: &str, value: &JsValue) {
    Reflect::set(obj, &JsValue::from_str(key), value).unwrap();
}

async fn sleep(ms: i32) {
    let promise = Promise::new(&mut |resolve, _| {
        let set_timeout: Function = get(&js_sys::global(), "setTimeout").unchecked_into();
        set_timeout
            .call2(&JsValue::NULL, &resolve, &JsValue::from(ms))
            .unwrap();
    });
    JsFuture::from(promise).await.unwrap();
}

/// Polls `cond` every 25 ms; panics with `what` after `timeout_ms`.
async fn wait_for(what: &str, timeout_ms: f64, mut cond: impl FnMut() -> bool) {
    let start = Date::now();
    while !cond() {
        assert!(
            Date::now() - start < timeout_ms,
            "timed out after {timeout_ms} ms waiting for {what}"
        );
        sleep(25).await;
    }
}

/// One request to the harness; returns the response text.
async fn harness(method: &str, path: &str, body: Option<&str>) -> String {
    let base = HARNESS.expect("TIDINGS_HARNESS is not set: run ./scripts/test-wasm");
    let global = js_sys::global();
    let fetch: Function = get(&global, "fetch").unchecked_into();
    let init: JsValue = Object::new().into();
    set(&init, "method", &JsValue::from_str(method));
    if let Some(body) = body {
        set(&init, "body", &JsValue::from_str(body));
    }
    let url = JsValue::from_str(&format!("{base}{path}"));
    let response = JsFuture::from(
        fetch
            .call2(&global, &url, &init)
            .unwrap()
            .unchecked_into::<Promise>(),
    )
    .await
    .expect("harness unreachable");
    assert_eq!(
        get(&response, "status").as_f64(),
        Some(200.0),
        "{method} {path}"
    );
    let text: Function = get(&response, "text").unchecked_into();
    JsFuture::from(text.call0(&response).unwrap().unchecked_into::<Promise>())
        .await
        .unwrap()
        .as_string()
        .unwrap()
}

async fn ws_url() -> String {
    let info = JSON::parse(&harness("GET", "/info", None).await).unwrap();
    get(&info, "ws").as_string().unwrap()
}

/// Publishes an UPDATED event on `topic` over HTTP; returns the server's `delivered` count.
async fn publish(topic: &str, entity_id: &str) -> f64 {
    let event = format!(
        r#"{{"topic":"{topic}","event":"UPDATED","data":{{"entity_id":"{entity_id}","payload":{{"n":1}},"user_id":"u1","timestamp":"2025-11-26T10:30:00Z"}}}}"#
    );
    let reply = JSON::parse(&harness("POST", "/publish", Some(&event)).await).unwrap();
    assert_eq!(
        get(&reply, "status").as_f64(),
        Some(202.0),
        "publish refused"
    );
    get(&get(&reply, "body"), "delivered").as_f64().unwrap()
}

/// A `getToken` that fetches a fresh token from the harness (or returns `fixed`), counting calls.
struct TokenSource {
    function: Closure<dyn FnMut() -> Promise>,
    calls: Rc<RefCell<u32>>,
}

fn token_source(fixed: Option<&'static str>) -> TokenSource {
    scripted_token_source(move |_| match fixed {
        Some(t) => Ok(t.to_owned()),
        None => Err("/token?sub=u1"),
    })
}

/// A `getToken` whose `n`-th call (1-based) does what `script(n)` says: `Ok(token)` returns
/// that token, `Err(path)` fetches a token from the harness at `path`, and `Err("")` rejects.
fn scripted_token_source(
    script: impl Fn(u32) -> Result<String, &'static str> + 'static,
) -> TokenSource {
    let calls = Rc::new(RefCell::new(0));
    let c = calls.clone();
    let function = Closure::<dyn FnMut() -> Promise>::new(move || {
        *c.borrow_mut() += 1;
        let step = script(*c.borrow());
        wasm_bindgen_futures::future_to_promise(async move {
            match step {
                Ok(t) => Ok(JsValue::from_str(&t)),
                Err("") => Err(JsValue::from_str("no token today")),
                Err(path) => Ok(JsValue::from_str(&harness("GET", path, None).await)),
            }
        })
    });
    TokenSource { function, calls }
}

/// One status seen: state, close code, close reason.
type Seen = (String, Option<f64>, Option<String>);

/// Status states seen by an `onStatus` listener, plus the listener itself.
struct StatusLog {
    _listener: Closure<dyn FnMut(JsValue)>,
    seen: Rc<RefCell<Vec<Seen>>>,
}

impl StatusLog {
    fn has(&self, state: &str) -> bool {
        self.seen.borrow().iter().any(|(s, _, _)| s == state)
    }
    fn count(&self, state: &str) -> usize {
        self.seen
            .borrow()
            .iter()
            .filter(|(s, _, _)| s == state)
            .count()
    }
    fn last(&self) -> Seen {
        self.seen.borrow().last().cloned().unwrap_or_default()
    }
    fn states(&self) -> Vec<String> {
        self.seen
            .borrow()
            .iter()
            .map(|(s, _, _)| s.clone())
            .collect()
    }
}

fn status_log(client: &TidingsClient) -> StatusLog {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    let listener = Closure::<dyn FnMut(JsValue)>::new(move |status: JsValue| {
        s.borrow_mut().push((
            get(&status, "state").as_string().unwrap(),
            get(&status, "closeCode").as_f64(),
            get(&status, "closeReason").as_string(),
        ));
    });
    let f: &JsValue = listener.as_ref();
    let _dispose = client.on_status(f.clone().unchecked_into::<StatusListener>(), None);
    StatusLog {
        _listener: listener,
        seen,
    }
}

fn state(client: &TidingsClient) -> String {
    get(&client.status(), "state").as_string().unwrap()
}

/// Events received by a topic listener (entity ids).
struct Inbox {
    listener: Closure<dyn FnMut(JsValue)>,
    ids: Rc<RefCell<Vec<String>>>,
}

impl Inbox {
    fn new() -> Self {
        let ids = Rc::new(RefCell::new(Vec::new()));
        let i = ids.clone();
        let listener = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
            assert_eq!(get(&event, "event").as_string().as_deref(), Some("UPDATED"));
            let id = get(&get(&event, "data"), "entity_id").as_string().unwrap();
            i.borrow_mut().push(id);
        });
        Self { listener, ids }
    }
    fn as_listener(&self) -> TopicListener {
        let f: &JsValue = self.listener.as_ref();
        f.clone().unchecked_into()
    }
    fn has(&self, id: &str) -> bool {
        self.ids.borrow().iter().any(|i| i == id)
    }
}

/// Wraps the page's `WebSocket` constructor (once) so that every socket any test opens is
/// recorded in `globalThis.__tidingsSockets` as `{url, protocols, socket}`.
fn record_sockets() {
    let install = Function::new_no_args(
        "if (!globalThis.__tidingsSockets) {
           const log = (globalThis.__tidingsSockets = []);
           globalThis.WebSocket = new Proxy(globalThis.WebSocket, {
             construct(target, args) {
               const socket = Reflect.construct(target, args);
               log.push({ url: String(args[0]), protocols: args[1] ?? [], socket });
               return socket;
             },
           });
         }
         return globalThis.__tidingsSockets;",
    );
    install.call0(&JsValue::NULL).unwrap();
}

/// The sockets recorded by [`record_sockets`]: (URL, offered subprotocols, chosen one).
fn recorded_sockets() -> Vec<(String, Vec<String>, String)> {
    let log = js_sys::Array::from(&get(&js_sys::global(), "__tidingsSockets"));
    log.iter()
        .map(|entry| {
            let protocols = js_sys::Array::from(&get(&entry, "protocols"))
                .iter()
                .map(|p| p.as_string().unwrap())
                .collect();
            let chosen = get(&get(&entry, "socket"), "protocol");
            (
                get(&entry, "url").as_string().unwrap(),
                protocols,
                chosen.as_string().unwrap_or_default(),
            )
        })
        .collect()
}

/// No socket opened so far in the page carried a token in its URL (but the one test that asks
/// for `tokenTransport: "query"`, marked `transport=query`).
fn assert_no_token_in_urls() {
    for (url, ..) in recorded_sockets() {
        assert!(
            url.contains("transport=query") || !url.contains("token="),
            "a token in {url}"
        );
    }
}

fn client(url: &str, tokens: &TokenSource, extra: &[(&str, f64)]) -> TidingsClient {
    record_sockets();
    assert_no_token_in_urls();
    let options: JsValue = Object::new().into();
    set(&options, "url", &JsValue::from_str(url));
    set(&options, "getToken", tokens.function.as_ref());
    set(&options, "initialDelayMs", &JsValue::from(100.0));
    set(&options, "maxDelayMs", &JsValue::from(1000.0));
    for (k, v) in extra {
        set(&options, k, &JsValue::from(*v));
    }
    TidingsClient::new(options.unchecked_into::<ClientOptions>()).expect("valid options")
}

async fn ready(sub: &tidings_client::client::Subscription) {
    JsFuture::from(sub.ready().unchecked_into::<Promise>())
        .await
        .expect("subscription acknowledged");
}

/// Publishes `id` on `topic` until the server delivers it to at least one connection (a
/// reconnecting client may not be resubscribed yet), then waits for `inbox` to get it.
async fn publish_until_received(topic: &str, id: &str, inbox: &Inbox, timeout_ms: f64) {
    let start = Date::now();
    loop {
        if publish(topic, id).await >= 1.0 {
            break;
        }
        assert!(
            Date::now() - start < timeout_ms,
            "{topic} never resubscribed"
        );
        sleep(100).await;
    }
    wait_for(&format!("event {id} on {topic}"), timeout_ms, || {
        inbox.has(id)
    })
    .await;
}

#[wasm_bindgen_test]
async fn connect_subscribe_and_receive_an_event_published_over_http() {
    let tokens = token_source(None);
    let client = client(&ws_url().await, &tokens, &[]);
    let inbox = Inbox::new();
    let sub = client
        .subscribe("list:1".into(), inbox.as_listener(), None)
        .unwrap();
    ready(&sub).await;
    assert_eq!(state(&client), "open");
    assert_eq!(publish("list:1", "e1").await, 1.0);
    wait_for("event e1", 10_000.0, || inbox.has("e1")).await;
    assert_eq!(*inbox.ids.borrow(), ["e1"]);
    // An event on another topic does not reach this listener.
    assert_eq!(publish("list:999", "other").await, 0.0);
    assert_eq!(*tokens.calls.borrow(), 1);
    client.close();
}

#[wasm_bindgen_test]
async fn listeners_share_a_subscription_and_unsubscribe_stops_delivery() {
    let tokens = token_source(None);
    let client = client(&ws_url().await, &tokens, &[]);
    let (a, b) = (Inbox::new(), Inbox::new());
    let sub_a = client
        .subscribe("list:2".into(), a.as_listener(), None)
        .unwrap();
    let sub_b = client
        .subscribe("list:2".into(), b.as_listener(), None)
        .unwrap();
    ready(&sub_a).await;
    ready(&sub_b).await;
    // Two listeners, one server subscription: the server delivers to one connection.
    assert_eq!(publish("list:2", "both").await, 1.0);
    wait_for("both listeners", 10_000.0, || {
        a.has("both") && b.has("both")
    })
    .await;

    sub_a.stop();
    sub_a.stop(); // idempotent
    assert_eq!(publish("list:2", "only-b").await, 1.0);
    wait_for("b gets only-b", 10_000.0, || b.has("only-b")).await;

    sub_b.stop();
    // The last listener left: the server stops delivering (after it read the unsubscribe).
    let start = Date::now();
    while publish("list:2", "after").await != 0.0 {
        assert!(Date::now() - start < 10_000.0, "server kept delivering");
        sleep(50).await;
    }
    sleep(300).await;
    assert!(!a.has("only-b") && !a.has("after") && !b.has("after"));
    assert_eq!(client.topics().len(), 0);
    client.close();
}

#[wasm_bindgen_test]
async fn reconnects_and_resubscribes_after_the_server_is_killed_or_restarted() {
    let tokens = token_source(None);
    let client = client(&ws_url().await, &tokens, &[]);
    let log = status_log(&client);
    let inbox = Inbox::new();
    let sub = client
        .subscribe("list:3".into(), inbox.as_listener(), None)
        .unwrap();
    ready(&sub).await;

    // SIGKILL: the connection drops without a close frame (1006), then the server comes back.
    harness("POST", "/restart?signal=KILL", None).await;
    wait_for("reconnecting", 10_000.0, || log.has("reconnecting")).await;
    publish_until_received("list:3", "after-kill", &inbox, 20_000.0).await;
    assert_eq!(state(&client), "open");
    assert!(*tokens.calls.borrow() >= 2, "a fresh token per connect");

    // SIGTERM: the server closes every socket with 1012 and the client comes back promptly.
    harness("POST", "/restart?signal=TERM", None).await;
    wait_for("close 1012", 10_000.0, || {
        log.seen
            .borrow()
            .iter()
            .any(|(_, code, _)| *code == Some(1012.0))
    })
    .await;
    publish_until_received("list:3", "after-restart", &inbox, 20_000.0).await;
    assert_eq!(log.last().0, "open");
    client.close();
}

#[wasm_bindgen_test]
async fn a_server_that_stops_answering_pings_is_detected_and_left() {
    const PING: f64 = 1000.0;
    const PONG: f64 = 1000.0;
    let tokens = token_source(None);
    let client = client(
        &ws_url().await,
        &tokens,
        &[
            ("pingIntervalMs", PING),
            ("pongTimeoutMs", PONG),
            ("connectTimeoutMs", 1000.0),
        ],
    );
    let log = status_log(&client);
    let inbox = Inbox::new();
    let sub = client
        .subscribe("list:4".into(), inbox.as_listener(), None)
        .unwrap();
    ready(&sub).await;

    harness("POST", "/freeze", None).await;
    let frozen_at = Date::now();
    // Detected within ping interval + pong timeout (plus scheduling slack on a busy machine).
    wait_for("keepalive to give up", PING + PONG + 4000.0, || {
        log.has("reconnecting")
    })
    .await;
    let detected_after = Date::now() - frozen_at;
    let reason = log
        .seen
        .borrow()
        .iter()
        .find(|(s, _, _)| s == "reconnecting")
        .and_then(|(_, _, r)| r.clone());
    assert_eq!(reason.as_deref(), Some("no pong within pongTimeoutMs"));
    assert!(detected_after >= PONG, "{detected_after}");

    harness("POST", "/thaw", None).await;
    publish_until_received("list:4", "after-thaw", &inbox, 20_000.0).await;
    assert_eq!(state(&client), "open");
    client.close();
}

#[wasm_bindgen_test]
async fn a_bad_token_ends_unauthorized_without_a_retry_loop() {
    let tokens = token_source(Some("not-a-jwt"));
    let client = client(&ws_url().await, &tokens, &[]);
    let log = status_log(&client);
    wait_for("unauthorized", 10_000.0, || {
        state(&client) == "unauthorized"
    })
    .await;
    // getToken was asked once more after the first 4001, then the client stopped.
    assert_eq!(*tokens.calls.borrow(), 2);
    let status = client.status();
    assert_eq!(get(&status, "closeCode").as_f64(), Some(4001.0));
    sleep(1500).await;
    assert_eq!(*tokens.calls.borrow(), 2, "no retry loop");
    assert_eq!(state(&client), "unauthorized");
    assert_eq!(log.count("unauthorized"), 1);
    // The handshakes completed, but the server never answered: never `open`, never
    // `reconnecting` (it never was open).
    assert_eq!(log.states(), ["connecting", "unauthorized"]);
    // A closed or refused client refuses new subscriptions with an error, not a hang.
    let inbox = Inbox::new();
    assert!(
        client
            .subscribe("list:5".into(), inbox.as_listener(), None)
            .is_err()
    );
    client.close();
}

#[wasm_bindgen_test]
async fn closing_the_client_closes_the_socket_and_stops_everything() {
    let tokens = token_source(None);
    let client = client(&ws_url().await, &tokens, &[("pingIntervalMs", 200.0)]);
    let log = status_log(&client);
    let inbox = Inbox::new();
    let sub = client
        .subscribe("list:6".into(), inbox.as_listener(), None)
        .unwrap();
    ready(&sub).await;
    assert_eq!(publish("list:6", "before").await, 1.0);

    client.close();
    assert_eq!(state(&client), "closed");
    assert_eq!(log.last().0, "closed");
    // The server sees the socket go away: nobody is subscribed to list:6 any more.
    let start = Date::now();
    while publish("list:6", "after").await != 0.0 {
        assert!(Date::now() - start < 10_000.0, "the socket stayed open");
        sleep(50).await;
    }
    // And nothing reconnects: no new token is fetched, the status stays closed.
    let calls = *tokens.calls.borrow();
    sleep(1000).await;
    assert_eq!(*tokens.calls.borrow(), calls);
    assert_eq!(publish("list:6", "later").await, 0.0);
    assert_eq!(log.count("closed"), 1);
    assert!(!inbox.has("after") && !inbox.has("later"));
    // A subscription's promise settles: rejected once the client is closed.
    let sub2 = client.subscribe("list:7".into(), inbox.as_listener(), None);
    assert!(sub2.is_err());
}

/// Dispatches a plain event named `kind` on `target` (the page's own `online` /
/// `visibilitychange` events, as the browser would fire them).
fn dispatch(target: &JsValue, kind: &str) {
    let event = web_sys::Event::new(kind).unwrap();
    let target: &web_sys::EventTarget = target.unchecked_ref();
    target.dispatch_event(&event).unwrap();
}

#[wasm_bindgen_test]
async fn online_and_visibility_events_check_liveness_at_once() {
    // A ping interval far beyond the test: only the liveness checks can detect the dead server.
    const PONG: f64 = 1000.0;
    let tokens = token_source(None);
    let client = client(
        &ws_url().await,
        &tokens,
        &[
            ("pingIntervalMs", 600_000.0),
            ("pongTimeoutMs", PONG),
            ("connectTimeoutMs", 1000.0),
        ],
    );
    let inbox = Inbox::new();
    let sub = client
        .subscribe("list:8".into(), inbox.as_listener(), None)
        .unwrap();
    ready(&sub).await;
    let document = get(&js_sys::global(), "document");
    assert_eq!(
        get(&document, "visibilityState").as_string().as_deref(),
        Some("visible")
    );

    for (target, kind) in [
        (document.clone(), "visibilitychange"),
        (js_sys::global().into(), "online"),
    ] {
        let log = status_log(&client);
        harness("POST", "/freeze", None).await;
        dispatch(&target, kind);
        wait_for(
            &format!("{kind} to detect the frozen server"),
            PONG + 5000.0,
            || log.has("reconnecting"),
        )
        .await;
        harness("POST", "/thaw", None).await;
        publish_until_received("list:8", kind, &inbox, 20_000.0).await;
    }
    client.close();
}

/// A `queryClient` stand-in that records the key of every `invalidateQueries` call (as JSON).
struct QueryLog {
    client: JsValue,
    _f: Closure<dyn FnMut(JsValue)>,
    keys: Rc<RefCell<Vec<String>>>,
}

impl QueryLog {
    fn bind(client: &TidingsClient) -> (Self, tidings_client::client::Disposer) {
        let keys = Rc::new(RefCell::new(Vec::new()));
        let k = keys.clone();
        let f = Closure::<dyn FnMut(JsValue)>::new(move |filters: JsValue| {
            let key = JSON::stringify(&get(&filters, "queryKey")).unwrap();
            k.borrow_mut().push(key.as_string().unwrap());
        });
        let qc: JsValue = Object::new().into();
        set(&qc, "invalidateQueries", f.as_ref());
        let disposer = client
            .bind_query_client(qc.clone().unchecked_into(), None)
            .unwrap();
        (
            Self {
                client: qc,
                _f: f,
                keys,
            },
            disposer,
        )
    }

    fn count(&self, key: &str) -> usize {
        self.keys.borrow().iter().filter(|k| *k == key).count()
    }
}

/// The server stays the same process (frozen, then thawed): the client reconnects with
/// `since`, the in-memory history answers `recovered: true`, and nothing is invalidated.
#[wasm_bindgen_test]
async fn a_recovered_reconnect_does_not_invalidate() {
    let tokens = token_source(None);
    let client = client(
        &ws_url().await,
        &tokens,
        &[
            ("pingIntervalMs", 1000.0),
            ("pongTimeoutMs", 1000.0),
            ("connectTimeoutMs", 1000.0),
        ],
    );
    let log = status_log(&client);
    let (queries, _binding) = QueryLog::bind(&client);
    let inbox = Inbox::new();
    let sub = client
        .subscribe("list:41".into(), inbox.as_listener(), None)
        .unwrap();
    ready(&sub).await;
    assert_eq!(publish("list:41", "r1").await, 1.0);
    wait_for("r1", 10_000.0, || inbox.has("r1")).await;
    assert_eq!(queries.count(r#"["lists","41"]"#), 1, "the event's own");

    harness("POST", "/freeze", None).await;
    wait_for("reconnecting", 10_000.0, || log.has("reconnecting")).await;
    harness("POST", "/thaw", None).await;
    wait_for("open again", 20_000.0, || log.count("open") >= 2).await;
    publish_until_received("list:41", "r2", &inbox, 20_000.0).await;
    // r2's own invalidation only: the reconnect recovered, so it did not invalidate.
    assert_eq!(queries.count(r#"["lists","41"]"#), 2, "{:?}", queries.keys);
    assert_eq!(*inbox.ids.borrow(), ["r1", "r2"], "no duplicate");
    let _ = &queries.client;
    client.close();
}

/// A restarted in-memory server has a new epoch: the client's `since` cannot be recovered,
/// so the reconnect invalidates the topic's queries (without any event).
#[wasm_bindgen_test]
async fn after_an_in_memory_restart_recovery_fails_and_the_topic_is_invalidated() {
    let tokens = token_source(None);
    let client = client(&ws_url().await, &tokens, &[]);
    let log = status_log(&client);
    let (queries, _binding) = QueryLog::bind(&client);
    let inbox = Inbox::new();
    let sub = client
        .subscribe("list:42".into(), inbox.as_listener(), None)
        .unwrap();
    ready(&sub).await;
    assert_eq!(publish("list:42", "k1").await, 1.0);
    wait_for("k1", 10_000.0, || inbox.has("k1")).await;
    assert_eq!(queries.count(r#"["lists","42"]"#), 1);

    harness("POST", "/restart?signal=KILL", None).await;
    wait_for("reconnecting", 10_000.0, || log.has("reconnecting")).await;
    wait_for("invalidation after the failed recovery", 20_000.0, || {
        queries.count(r#"["lists","42"]"#) == 2
    })
    .await;
    assert_eq!(state(&client), "open");
    // Live again, in the new epoch (its seq 1 is not mistaken for a duplicate).
    publish_until_received("list:42", "k2", &inbox, 20_000.0).await;
    assert_eq!(*inbox.ids.borrow(), ["k1", "k2"]);
    client.close();
}

/// Tokens that live 5 s on a server without leeway: the client refreshes each one in band
/// before it expires, so one connection outlives several tokens with no reconnect.
#[wasm_bindgen_test]
async fn short_lived_tokens_are_refreshed_in_band_without_reconnecting() {
    const TTL_MS: f64 = 5000.0;
    let tokens = scripted_token_source(|_| Err("/token?sub=u1&ttl=5"));
    let client = client(&ws_url().await, &tokens, &[]);
    let log = status_log(&client);
    let inbox = Inbox::new();
    let sub = client
        .subscribe("list:50".into(), inbox.as_listener(), None)
        .unwrap();
    ready(&sub).await;
    let start = Date::now();
    let mut n = 0;
    // Past three lifetimes of a token, events keep arriving on the same single connection.
    while Date::now() - start < 3.0 * TTL_MS + 1000.0 {
        n += 1;
        let id = format!("t{n}");
        assert_eq!(
            publish("list:50", &id).await,
            1.0,
            "one connection, subscribed"
        );
        wait_for(&format!("event {id}"), 10_000.0, || inbox.has(&id)).await;
        sleep(1000).await;
    }
    assert_eq!(state(&client), "open");
    assert_eq!(log.count("open"), 1, "{:?}", log.seen.borrow());
    assert!(!log.has("reconnecting"), "{:?}", log.seen.borrow());
    // One token to connect, then one per refresh.
    assert!(
        *tokens.calls.borrow() >= 4,
        "{} tokens",
        tokens.calls.borrow()
    );
    client.close();
}

/// A refresh whose `getToken` fails sends nothing: the server closes with 4002 when the
/// token expires and the client reconnects with a fresh token, as without refresh.
#[wasm_bindgen_test]
async fn a_failed_refresh_falls_back_to_4002_and_a_reconnect() {
    let tokens = scripted_token_source(|n| match n {
        1 => Err("/token?sub=u1&ttl=3"),
        2 => Err(""),
        _ => Err("/token?sub=u1"),
    });
    let client = client(&ws_url().await, &tokens, &[]);
    let log = status_log(&client);
    let inbox = Inbox::new();
    let sub = client
        .subscribe("list:51".into(), inbox.as_listener(), None)
        .unwrap();
    ready(&sub).await;
    wait_for("close 4002", 15_000.0, || {
        log.seen
            .borrow()
            .iter()
            .any(|(s, code, _)| s == "reconnecting" && *code == Some(4002.0))
    })
    .await;
    publish_until_received("list:51", "after-4002", &inbox, 20_000.0).await;
    assert_eq!(state(&client), "open");
    assert!(*tokens.calls.borrow() >= 3);
    client.close();
}

/// A session of the harness's SCRIPTED WebSocket server: the test writes every frame the
/// client receives and reads every frame it sent (a real server never skips a seq).
struct Script {
    name: &'static str,
}

impl Script {
    fn url(&self) -> String {
        let base = HARNESS.expect("TIDINGS_HARNESS is not set: run ./scripts/test-wasm");
        let host = base.trim_start_matches("http://");
        format!("ws://{host}/script/ws?name={}", self.name)
    }

    /// Sends `frames` (JSON texts) to the session's sockets, in order.
    async fn send(&self, frames: &[String]) {
        let body = format!("[{}]", frames.join(","));
        let path = format!("/script/send?name={}", self.name);
        let reply = JSON::parse(&harness("POST", &path, Some(&body)).await).unwrap();
        assert_eq!(
            get(&reply, "sockets").as_f64(),
            Some(1.0),
            "one client socket"
        );
    }

    /// The frames the client sent, parsed.
    async fn received(&self) -> Vec<JsValue> {
        let path = format!("/script/received?name={}", self.name);
        let list = JSON::parse(&harness("GET", &path, None).await).unwrap();
        js_sys::Array::from(&list)
            .iter()
            .map(|t| JSON::parse(&t.as_string().unwrap()).unwrap())
            .collect()
    }

    /// The client's `subscribe` frames for `topic`: the `since` of each, as JSON (`None`
    /// for a plain subscribe).
    async fn subscribes(&self, topic: &str) -> Vec<Option<String>> {
        self.received()
            .await
            .iter()
            .filter(|m| {
                get(m, "action").as_string().as_deref() == Some("subscribe")
                    && get(m, "topic").as_string().as_deref() == Some(topic)
            })
            .map(|m| {
                let since = get(m, "since");
                (!since.is_undefined()).then(|| JSON::stringify(&since).unwrap().into())
            })
            .collect()
    }

    /// The client's frames for `topic` as `action` or `action since`, in order.
    async fn actions(&self, topic: &str) -> Vec<String> {
        self.received()
            .await
            .iter()
            .filter(|m| get(m, "topic").as_string().as_deref() == Some(topic))
            .map(|m| {
                let action = get(m, "action").as_string().unwrap();
                let since = get(m, "since");
                if since.is_undefined() {
                    action
                } else {
                    format!(
                        "{action} {}",
                        String::from(JSON::stringify(&since).unwrap())
                    )
                }
            })
            .collect()
    }

    /// Waits until the client sent `count` frames about `topic`.
    async fn wait_actions(&self, topic: &str, count: usize) -> Vec<String> {
        let start = Date::now();
        loop {
            let actions = self.actions(topic).await;
            if actions.len() >= count {
                return actions;
            }
            assert!(
                Date::now() - start < 10_000.0,
                "timed out waiting for {count} frames on {topic}, got {actions:?}"
            );
            sleep(25).await;
        }
    }
}

fn scripted_event(topic: &str, id: &str, seq: u64, epoch: &str) -> String {
    format!(
        r#"{{"topic":"{topic}","event":"UPDATED","data":{{"entity_id":"{id}","payload":{{}},"user_id":"u1","timestamp":"2025-11-26T10:30:00Z"}},"seq":{seq},"epoch":"{epoch}"}}"#
    )
}

fn scripted_ack(topic: &str, recovered: Option<bool>) -> String {
    match recovered {
        None => format!(r#"{{"action":"subscribed","topic":"{topic}"}}"#),
        Some(r) => format!(r#"{{"action":"subscribed","topic":"{topic}","recovered":{r}}}"#),
    }
}

/// Subscribes `topic` on a scripted session and acknowledges it.
async fn scripted_subscribe(
    script: &Script,
    client: &TidingsClient,
    topic: &str,
    inbox: &Inbox,
) -> tidings_client::client::Subscription {
    let sub = client
        .subscribe(topic.into(), inbox.as_listener(), None)
        .unwrap();
    assert_eq!(script.wait_actions(topic, 1).await, ["subscribe"]);
    script.send(&[scripted_ack(topic, None)]).await;
    ready(&sub).await;
    sub
}

/// Events 3 and 4 never reach the client (as after a broken broker subscription): the gap at
/// 5 makes it resubscribe from 2, hold 5 and 6 back, and deliver the replay 3..6 in order,
/// each once, with no invalidation beyond the events' own.
#[wasm_bindgen_test]
async fn a_seq_gap_is_recovered_with_since_and_delivered_in_order_once() {
    let script = Script { name: "gap" };
    let tokens = token_source(Some("t"));
    let client = client(&script.url(), &tokens, &[]);
    let (queries, _binding) = QueryLog::bind(&client);
    let inbox = Inbox::new();
    let _sub = scripted_subscribe(&script, &client, "list:70", &inbox).await;
    let ev = |id: &str, seq| scripted_event("list:70", id, seq, "ep1");

    script.send(&[ev("g1", 1), ev("g2", 2)]).await;
    wait_for("g2", 10_000.0, || inbox.has("g2")).await;
    // The gap: 5 and 6 arrive, 3 and 4 never did.
    script.send(&[ev("g5", 5), ev("g6", 6)]).await;
    let actions = script.wait_actions("list:70", 3).await;
    assert_eq!(
        actions,
        [
            "subscribe",
            "unsubscribe",
            r#"subscribe {"seq":2,"epoch":"ep1"}"#
        ],
        "unsubscribe, then subscribe from the last delivered position"
    );
    sleep(200).await;
    assert_eq!(*inbox.ids.borrow(), ["g1", "g2"], "5 and 6 held back");

    // The server's answer: (unsubscribed, sent by the script itself) the replay, the ack.
    let replay: Vec<String> = (3..=6).map(|n| ev(&format!("g{n}"), n)).collect();
    script.send(&replay).await;
    script.send(&[scripted_ack("list:70", Some(true))]).await;
    script.send(&[ev("g7", 7)]).await;
    wait_for("g7", 10_000.0, || inbox.has("g7")).await;
    assert_eq!(
        *inbox.ids.borrow(),
        ["g1", "g2", "g3", "g4", "g5", "g6", "g7"]
    );
    // One invalidation per delivered event, none for the recovery (it recovered).
    assert_eq!(queries.count(r#"["lists","70"]"#), 7, "{:?}", queries.keys);
    assert_eq!(
        script.subscribes("list:70").await.len(),
        2,
        "one recovery only"
    );
    assert_eq!(state(&client), "open");
    client.close();
}

/// The stream restarted under a live connection (new epoch): the client resubscribes from
/// its old position, the server cannot recover it, the topic's queries are invalidated
/// exactly once, and the new epoch's events are delivered from then on.
#[wasm_bindgen_test]
async fn an_epoch_change_invalidates_once_then_delivers_the_new_epoch() {
    let script = Script { name: "epoch" };
    let tokens = token_source(Some("t"));
    let client = client(&script.url(), &tokens, &[]);
    let (queries, _binding) = QueryLog::bind(&client);
    let inbox = Inbox::new();
    let _sub = scripted_subscribe(&script, &client, "list:71", &inbox).await;

    script
        .send(&[
            scripted_event("list:71", "o1", 1, "old"),
            scripted_event("list:71", "o2", 2, "old"),
        ])
        .await;
    wait_for("o2", 10_000.0, || inbox.has("o2")).await;
    script
        .send(&[
            scripted_event("list:71", "n1", 1, "new"),
            scripted_event("list:71", "n2", 2, "new"),
        ])
        .await;
    let actions = script.wait_actions("list:71", 3).await;
    assert_eq!(actions[2], r#"subscribe {"seq":2,"epoch":"old"}"#);
    script.send(&[scripted_ack("list:71", Some(false))]).await;
    wait_for("the invalidation", 10_000.0, || {
        queries.count(r#"["lists","71"]"#) == 3
    })
    .await;
    script
        .send(&[scripted_event("list:71", "n3", 3, "new")])
        .await;
    wait_for("n3", 10_000.0, || inbox.has("n3")).await;
    // n1 and n2 were covered by the invalidation (the app refetches), not delivered late.
    assert_eq!(*inbox.ids.borrow(), ["o1", "o2", "n3"]);
    assert_eq!(
        queries.count(r#"["lists","71"]"#),
        4,
        "2 events + 1 invalidation + n3: {:?}",
        queries.keys
    );
    assert_eq!(script.subscribes("list:71").await.len(), 2);
    client.close();
}

/// A server whose every recovery answers `recovered: true` and then shows a new gap: the
/// client keeps trying, paced by the backoff (windows 100 ms doubling to 1 s here), not in
/// a tight loop, and delivers nothing out of order meanwhile.
#[wasm_bindgen_test]
async fn a_recovery_that_keeps_failing_is_paced_by_the_backoff() {
    let script = Script { name: "loop" };
    harness("POST", "/script/loop?name=loop", None).await;
    let tokens = token_source(Some("t"));
    let client = client(&script.url(), &tokens, &[]);
    let inbox = Inbox::new();
    let sub = client
        .subscribe("list:72".into(), inbox.as_listener(), None)
        .unwrap();
    ready(&sub).await;
    script
        .send(&[
            scripted_event("list:72", "l1", 1, "e"),
            scripted_event("list:72", "l3", 3, "e"),
        ])
        .await;
    let start = Date::now();
    sleep(3000).await;
    let recoveries = script.subscribes("list:72").await.len() - 1;
    let elapsed = Date::now() - start;
    // Unpaced, this loop runs as fast as the socket: thousands in 3 s. Paced, the expected
    // delays are 0, 100, 200, 400, 500, 500, … ms: about 8.
    assert!(
        (3..=20).contains(&recoveries),
        "{recoveries} recoveries in {elapsed} ms"
    );
    assert_eq!(*inbox.ids.borrow(), ["l1"], "nothing out of order");
    assert_eq!(state(&client), "open");
    client.close();
}

// ---- Honest status (issue 12) ----

/// When each state was first entered (`Date.now()`), and every status object seen by an
/// `everyChange` listener.
struct TimedLog {
    _listener: Closure<dyn FnMut(JsValue)>,
    entered: Rc<RefCell<Vec<(String, f64)>>>,
    every: Rc<RefCell<Vec<JsValue>>>,
}

impl TimedLog {
    fn new(client: &TidingsClient) -> Self {
        let entered = Rc::new(RefCell::new(Vec::<(String, f64)>::new()));
        let every = Rc::new(RefCell::new(Vec::new()));
        let (e, v) = (entered.clone(), every.clone());
        let listener = Closure::<dyn FnMut(JsValue)>::new(move |status: JsValue| {
            let state = get(&status, "state").as_string().unwrap();
            if e.borrow().last().map(|(s, _)| s) != Some(&state) {
                e.borrow_mut().push((state, Date::now()));
            }
            v.borrow_mut().push(status);
        });
        let options: JsValue = Object::new().into();
        set(&options, "everyChange", &JsValue::TRUE);
        let f: &JsValue = listener.as_ref();
        let _ = client.on_status(
            f.clone().unchecked_into::<StatusListener>(),
            Some(options.unchecked_into()),
        );
        Self {
            _listener: listener,
            entered,
            every,
        }
    }
    /// When `state` was last entered.
    fn at(&self, state: &str) -> Option<f64> {
        self.entered
            .borrow()
            .iter()
            .rev()
            .find(|(s, _)| s == state)
            .map(|(_, t)| *t)
    }
}

fn attempts(client: &TidingsClient) -> f64 {
    get(&client.status(), "attempts").as_f64().unwrap()
}

#[wasm_bindgen_test]
async fn server_down_at_first_connect_stays_connecting_until_it_is_up() {
    let url = ws_url().await;
    harness("POST", "/stop", None).await;
    let tokens = token_source(None);
    let client = client(&url, &tokens, &[]);
    let log = status_log(&client);
    let timed = TimedLog::new(&client);
    // Connection refused, again and again (100 ms first window, 1 s cap).
    wait_for("three attempts", 10_000.0, || attempts(&client) >= 3.0).await;
    assert_eq!(state(&client), "connecting");
    assert!(get(&client.status(), "attempt").as_f64().unwrap() >= 2.0);
    assert!(get(&client.status(), "closeCode").as_f64().is_some());
    harness("POST", "/start", None).await;
    wait_for("open", 10_000.0, || state(&client) == "open").await;
    // The state-change listener saw the current state first, then one change; the
    // everyChange listener also saw each attempt.
    assert_eq!(log.states(), ["connecting", "open"]);
    assert!(
        timed.every.borrow().len() > 3,
        "{}",
        timed.every.borrow().len()
    );
    assert!(
        timed
            .every
            .borrow()
            .iter()
            .all(|s| get(s, "state").as_string().unwrap() != "reconnecting"),
        "never reconnecting before a first open"
    );
    let status = client.status();
    assert_eq!(get(&status, "attempt"), JsValue::UNDEFINED);
    assert!(get(&status, "attempts").as_f64().unwrap() >= 3.0);
    client.close();
}

#[wasm_bindgen_test]
async fn the_offline_event_leaves_open_at_once_and_online_reconnects_at_once() {
    let tokens = token_source(None);
    let client = client(
        &ws_url().await,
        &tokens,
        // Far beyond the test: only the offline event can move the status.
        &[("pingIntervalMs", 600_000.0), ("pongTimeoutMs", 600_000.0)],
    );
    let inbox = Inbox::new();
    let sub = client
        .subscribe("list:off".into(), inbox.as_listener(), None)
        .unwrap();
    ready(&sub).await;
    assert_eq!(state(&client), "open");
    let log = status_log(&client);

    dispatch(&js_sys::global(), "offline");
    // Synchronously: no wait for a pong deadline.
    assert_eq!(state(&client), "reconnecting");
    assert_eq!(
        get(&client.status(), "closeReason").as_string().as_deref(),
        Some("the browser is offline")
    );
    // The socket was closed: the server stops delivering.
    let start = Date::now();
    while publish("list:off", "while-offline").await != 0.0 {
        assert!(Date::now() - start < 5000.0, "the socket stayed open");
        sleep(50).await;
    }
    // Retries are paused until `online`.
    let calls = *tokens.calls.borrow();
    let tried = attempts(&client);
    sleep(800).await;
    assert_eq!(*tokens.calls.borrow(), calls, "no retry while offline");
    assert_eq!(attempts(&client), tried);
    assert_eq!(state(&client), "reconnecting");

    let online_at = Date::now();
    dispatch(&js_sys::global(), "online");
    wait_for("open after online", 5000.0, || state(&client) == "open").await;
    let back_after = Date::now() - online_at;
    web_sys::console::log_1(&format!("online → open: {back_after} ms").into());
    assert!(back_after < 1000.0, "{back_after}");
    publish_until_received("list:off", "after-online", &inbox, 10_000.0).await;
    assert_eq!(log.states(), ["open", "reconnecting", "open"]);
    client.close();
}

#[wasm_bindgen_test]
async fn after_a_planned_restart_clients_are_back_within_a_second_of_the_server() {
    const CLIENTS: usize = 6;
    const DOWN_MS: i32 = 6000;
    let url = ws_url().await;
    let tokens = token_source(None);
    let mut clients = Vec::new();
    // The default delays (500 ms first window, 30 s cap): a grown backoff would wait 4–8 s.
    for _ in 0..CLIENTS {
        let c = client(
            &url,
            &tokens,
            &[("initialDelayMs", 500.0), ("maxDelayMs", 30_000.0)],
        );
        let timed = TimedLog::new(&c);
        clients.push((c, timed));
    }
    for (c, _) in &clients {
        wait_for("open", 10_000.0, || state(c) == "open").await;
    }
    harness("POST", "/stop?signal=TERM", None).await;
    for (c, _) in &clients {
        wait_for("reconnecting", 5000.0, || state(c) == "reconnecting").await;
        assert_eq!(get(&c.status(), "closeCode").as_f64(), Some(1012.0));
    }
    sleep(DOWN_MS).await;
    let started = JSON::parse(&harness("POST", "/start", None).await).unwrap();
    let listening_at = get(&started, "listeningAt").as_f64().unwrap();
    let mut back = Vec::new();
    for (c, timed) in &clients {
        wait_for("open after the restart", 10_000.0, || state(c) == "open").await;
        back.push(timed.at("open").unwrap() - listening_at);
    }
    back.sort_by(f64::total_cmp);
    web_sys::console::log_1(
        &format!("1012 restart ({DOWN_MS} ms down): server listening → open, ms: {back:?}").into(),
    );
    // Full jitter over a window of at most 1 s, plus a token fetch and a handshake.
    let worst = back[CLIENTS - 1];
    assert!(worst <= 1500.0, "{back:?}");
    for (c, _) in &clients {
        c.close();
    }
}

// ---- The API a React developer expects (issue 12) ----

#[wasm_bindgen_test]
async fn auto_connect_false_waits_for_connect_and_connect_restarts_after_unauthorized() {
    let url = ws_url().await;
    // Two refused tokens, then good ones (the user signed in again).
    let tokens = scripted_token_source(|n| {
        if n <= 2 {
            Ok("not-a-jwt".to_owned())
        } else {
            Err("/token?sub=u1")
        }
    });
    let options = js_sys::Object::new();
    set(&options, "url", &JsValue::from_str(&url));
    set(&options, "getToken", tokens.function.as_ref());
    set(&options, "autoConnect", &JsValue::FALSE);
    set(&options, "initialDelayMs", &JsValue::from(100.0));
    let client = TidingsClient::new(options.unchecked_into()).unwrap();
    let log = status_log(&client);
    assert_eq!(state(&client), "idle");
    assert_eq!(attempts(&client), 0.0);
    sleep(300).await;
    assert_eq!(*tokens.calls.borrow(), 0, "nothing before connect()");
    // Subscriptions made while idle wait for the connection.
    let inbox = Inbox::new();
    let sub = client
        .subscribe("list:api".into(), inbox.as_listener(), None)
        .unwrap();

    client.connect().unwrap();
    wait_for("unauthorized", 10_000.0, || {
        state(&client) == "unauthorized"
    })
    .await;
    assert_eq!(*tokens.calls.borrow(), 2);
    client.connect().unwrap();
    ready(&sub).await;
    assert_eq!(state(&client), "open");
    assert_eq!(
        log.states(),
        ["idle", "connecting", "unauthorized", "connecting", "open"]
    );
    // connect() while open does nothing.
    client.connect().unwrap();
    sleep(200).await;
    assert_eq!(*tokens.calls.borrow(), 3);
    assert_eq!(attempts(&client), 3.0);
    publish_until_received("list:api", "a1", &inbox, 10_000.0).await;

    // `unsubscribe` is a bound function: usable detached, as a React effect cleanup is.
    let sub: JsValue = sub.into();
    let unsubscribe: Function = get(&sub, "unsubscribe").unchecked_into();
    unsubscribe.call0(&JsValue::UNDEFINED).unwrap();
    unsubscribe.call0(&JsValue::UNDEFINED).unwrap(); // idempotent
    let start = Date::now();
    while publish("list:api", "after").await != 0.0 {
        assert!(Date::now() - start < 10_000.0, "still subscribed");
        sleep(50).await;
    }
    assert_eq!(client.topics().len(), 0);

    client.close();
    assert!(client.connect().is_err(), "close() is final");
}

/// A `skipped` frame (an event this connection was left out of) moves the topic's position:
/// the next event follows it, with no recovery, nothing delivered and nothing invalidated for
/// the skipped one.
#[wasm_bindgen_test]
async fn a_skipped_frame_keeps_the_position_without_delivering_or_recovering() {
    let script = Script { name: "skipped" };
    let tokens = token_source(Some("t"));
    let client = client(&script.url(), &tokens, &[]);
    let (queries, _binding) = QueryLog::bind(&client);
    let inbox = Inbox::new();
    let _sub = scripted_subscribe(&script, &client, "list:71", &inbox).await;
    let ev = |id: &str, seq| scripted_event("list:71", id, seq, "ep1");
    let skipped =
        |seq: u64| format!(r#"{{"action":"skipped","topic":"list:71","seq":{seq},"epoch":"ep1"}}"#);
    script
        .send(&[ev("s1", 1), skipped(2), skipped(3), ev("s4", 4)])
        .await;
    wait_for("s4", 10_000.0, || inbox.has("s4")).await;
    sleep(200).await;
    assert_eq!(*inbox.ids.borrow(), ["s1", "s4"]);
    assert_eq!(
        script.actions("list:71").await,
        ["subscribe"],
        "no recovery: 2 and 3 were skipped, not lost"
    );
    assert_eq!(queries.count(r#"["lists","71"]"#), 2, "{:?}", queries.keys);
    // A real gap after a skip is still recovered from the skipped position.
    script.send(&[skipped(5), ev("s7", 7)]).await;
    let actions = script.wait_actions("list:71", 3).await;
    assert_eq!(actions[2], r#"subscribe {"seq":5,"epoch":"ep1"}"#);
    client.close();
}

/// The client sends its connection id at the handshake: an event published with
/// `exclude_connection` set to `client.connectionId` does not reach it, the next one does.
#[wasm_bindgen_test]
async fn an_event_excluding_this_connection_does_not_reach_it() {
    let url = ws_url().await;
    let tokens = token_source(None);
    let other = client(&url, &tokens, &[]);
    let client = client(&url, &tokens, &[]);
    let id = client.connection_id();
    assert_eq!(id.len(), 22, "{id}");
    assert_eq!(client.connection_id(), id, "fixed for the client's life");
    assert_eq!(client.connection_id_header(), "tidings-connection-id");
    assert_ne!(other.connection_id(), id);
    other.close();
    let inbox = Inbox::new();
    let sub = client
        .subscribe("list:91".into(), inbox.as_listener(), None)
        .unwrap();
    ready(&sub).await;
    let event = format!(
        r#"{{"topic":"list:91","event":"UPDATED","data":{{"entity_id":"x1","payload":{{}},"user_id":"u1","timestamp":"2025-11-26T10:30:00Z"}},"exclude_connection":"{id}"}}"#
    );
    let reply = JSON::parse(&harness("POST", "/publish", Some(&event)).await).unwrap();
    assert_eq!(get(&reply, "status").as_f64(), Some(202.0));
    assert_eq!(
        get(&get(&reply, "body"), "delivered").as_f64(),
        Some(0.0),
        "left out"
    );
    assert_eq!(publish("list:91", "x2").await, 1.0);
    wait_for("x2", 10_000.0, || inbox.has("x2")).await;
    assert_eq!(*inbox.ids.borrow(), ["x2"]);
    client.close();
}

/// Issue 14: by default the token travels in the `tidings.token.` subprotocol, never in a URL
/// (here and in every test that ran before this one in the page), and the server answers with
/// the `tidings` marker only. `tokenTransport: "query"` (servers older than the subprotocol)
/// puts it in `?token=`.
#[wasm_bindgen_test]
async fn the_token_travels_in_a_subprotocol_and_never_in_a_websocket_url() {
    let tokens = token_source(None);
    let url = ws_url().await;
    let client = client(&url, &tokens, &[]);
    let inbox = Inbox::new();
    let sub = client
        .subscribe("list:14".into(), inbox.as_listener(), None)
        .unwrap();
    ready(&sub).await;
    assert_eq!(publish("list:14", "p1").await, 1.0);
    wait_for("event p1", 10_000.0, || inbox.has("p1")).await;
    client.close();

    // The query transport, marked so that it can be told apart below.
    let options: JsValue = Object::new().into();
    set(
        &options,
        "url",
        &JsValue::from_str(&format!("{url}?transport=query")),
    );
    set(&options, "getToken", tokens.function.as_ref());
    set(&options, "tokenTransport", &JsValue::from_str("query"));
    let old_way = TidingsClient::new(options.unchecked_into::<ClientOptions>()).unwrap();
    let sub = old_way
        .subscribe("list:14".into(), Inbox::new().as_listener(), None)
        .unwrap();
    ready(&sub).await;
    old_way.close();

    let sockets = recorded_sockets();
    // This test's first client's sockets: the URL plus its connection id only.
    let is_this = |u: &str| u.starts_with(&format!("{url}?cid=")) && !u.contains('&');
    let (mut by_protocol, mut by_query) = (0, 0);
    for (socket_url, protocols, chosen) in &sockets {
        if socket_url.contains("transport=query") {
            assert!(socket_url.contains("token=ey"), "{socket_url}");
            assert!(protocols.is_empty());
            by_query += 1;
            continue;
        }
        assert!(!socket_url.contains("token="), "a token in {socket_url}");
        if protocols.is_empty() {
            continue; // a client without a token
        }
        assert_eq!(protocols[0], "tidings");
        assert!(protocols[1].starts_with("tidings.token."));
        if is_this(socket_url) {
            by_protocol += 1;
            assert!(chosen == "tidings" || chosen.is_empty(), "{chosen}");
        }
    }
    assert!(by_protocol >= 1 && by_query == 1, "{sockets:?}");
    // The socket of this test's first client did open and was answered with the marker only.
    let first = sockets.iter().rev().find(|(u, ..)| is_this(u)).unwrap();
    assert_eq!(first.2, "tidings");
}

#[wasm_bindgen_test]
fn an_unknown_token_transport_is_refused() {
    let options: JsValue = Object::new().into();
    set(&options, "url", &JsValue::from_str("ws://127.0.0.1:9/ws"));
    set(&options, "tokenTransport", &JsValue::from_str("header"));
    assert!(TidingsClient::new(options.unchecked_into::<ClientOptions>()).is_err());
}

/// Issue 14: the server ends a subscription by itself (a refreshed token whose `topics` no
/// longer allows it): `onSubscriptionEnded` gets `{topic, reason}`, the topic's listener gets
/// nothing more and the client no longer holds it (so no reconnect resubscribes it: the
/// native `topics` test checks that part).
#[wasm_bindgen_test]
async fn a_subscription_the_server_ends_is_reported_and_dropped() {
    let script = Script { name: "ended" };
    let tokens = token_source(Some("t"));
    let ended = Rc::new(RefCell::new(Vec::<String>::new()));
    let on_ended = {
        let ended = ended.clone();
        Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
            let topic = get(&e, "topic").as_string().unwrap();
            let reason = get(&e, "reason").as_string().unwrap();
            ended.borrow_mut().push(format!("{topic} {reason}"));
        })
    };
    let options: JsValue = Object::new().into();
    set(&options, "url", &JsValue::from_str(&script.url()));
    set(&options, "getToken", tokens.function.as_ref());
    set(&options, "initialDelayMs", &JsValue::from(100.0));
    set(&options, "onSubscriptionEnded", on_ended.as_ref());
    record_sockets();
    let client = TidingsClient::new(options.unchecked_into::<ClientOptions>()).unwrap();
    let (kept, dropped) = (Inbox::new(), Inbox::new());
    let _a = scripted_subscribe(&script, &client, "list:80", &kept).await;
    let _b = scripted_subscribe(&script, &client, "list:81", &dropped).await;

    script
        .send(&[
            r#"{"action":"unsubscribed","topic":"list:81","reason":"Forbidden"}"#.to_owned(),
            r#"{"action":"refreshed"}"#.to_owned(),
            scripted_event("list:81", "x1", 1, "ep"),
            scripted_event("list:80", "k1", 1, "ep"),
        ])
        .await;
    wait_for("k1", 10_000.0, || kept.has("k1")).await;
    assert_eq!(*ended.borrow(), ["list:81 Forbidden"]);
    assert!(!dropped.has("x1"), "an ended topic's listener got an event");
    assert_eq!(client.topics(), ["list:80"]);
    client.close();
}

// ---- presence (issue 15) ----

/// One `onPresence` change: the user ids that joined, and those that left.
type Joins = (Vec<String>, Vec<String>);

/// What `onPresence` told, change by change.
struct PresenceLog {
    _listener: Closure<dyn FnMut(JsValue)>,
    changes: Rc<RefCell<Vec<Joins>>>,
}

impl PresenceLog {
    fn joined(&self, user: &str) -> usize {
        self.changes
            .borrow()
            .iter()
            .filter(|(j, _)| j.iter().any(|u| u == user))
            .count()
    }
    fn left(&self, user: &str) -> usize {
        self.changes
            .borrow()
            .iter()
            .filter(|(_, l)| l.iter().any(|u| u == user))
            .count()
    }
}

fn user_ids(array: &JsValue) -> Vec<String> {
    js_sys::Array::from(array)
        .iter()
        .map(|m| get(&m, "user_id").as_string().unwrap())
        .collect()
}

fn presence_log(client: &TidingsClient, topic: &str) -> PresenceLog {
    let changes = Rc::new(RefCell::new(Vec::new()));
    let c = changes.clone();
    let listener = Closure::<dyn FnMut(JsValue)>::new(move |change: JsValue| {
        c.borrow_mut().push((
            user_ids(&get(&change, "joined")),
            user_ids(&get(&change, "left")),
        ));
    });
    let f: &JsValue = listener.as_ref();
    // Stops with the client (close() drops every presence listener).
    let _stop = client.on_presence(topic.into(), f.clone().unchecked_into());
    PresenceLog {
        _listener: listener,
        changes,
    }
}

/// `client.presence(topic)` as (user id, info.name, connections).
fn present(client: &TidingsClient, topic: &str) -> Vec<(String, String, f64)> {
    let members: JsValue = client.presence(topic).into();
    js_sys::Array::from(&members)
        .iter()
        .map(|m| {
            (
                get(&m, "user_id").as_string().unwrap(),
                get(&get(&m, "info"), "name")
                    .as_string()
                    .unwrap_or_default(),
                get(&m, "connections").as_f64().unwrap(),
            )
        })
        .collect()
}

fn member(user: &str, name: &str, connections: f64) -> (String, String, f64) {
    (user.into(), name.into(), connections)
}

/// Subscribes with `presence` ("join" / "watch") and waits for the ack.
async fn subscribe_presence(
    client: &TidingsClient,
    topic: &str,
    presence: &str,
    inbox: &Inbox,
) -> tidings_client::client::Subscription {
    let options: JsValue = Object::new().into();
    set(&options, "presence", &JsValue::from_str(presence));
    let sub = client
        .subscribe(
            topic.into(),
            inbox.as_listener(),
            Some(options.unchecked_into()),
        )
        .unwrap();
    ready(&sub).await;
    sub
}

#[wasm_bindgen_test]
async fn presence_two_tabs_of_one_user_are_one_entry_seen_by_another_client() {
    let url = ws_url().await;
    let (mom_tokens, dad_tokens) = (
        token_source_at("/token?sub=p-mom&name=Mom"),
        token_source_at("/token?sub=p-dad&name=Dad"),
    );
    let inbox = Inbox::new();
    let dad = client(&url, &dad_tokens, &[]);
    let dad_log = presence_log(&dad, "list:p1");
    let _dad_sub = subscribe_presence(&dad, "list:p1", "watch", &inbox).await;
    let mom1 = client(&url, &mom_tokens, &[]);
    let _mom1_sub = subscribe_presence(&mom1, "list:p1", "join", &inbox).await;
    wait_for("Dad sees Mom", 5_000.0, || {
        present(&dad, "list:p1") == [member("p-mom", "Mom", 1.0)]
    })
    .await;
    // The joiner is in its own snapshot; the watcher is in nobody's.
    wait_for("Mom sees herself", 5_000.0, || {
        present(&mom1, "list:p1") == [member("p-mom", "Mom", 1.0)]
    })
    .await;

    // A second tab of Mom: the same entry, two connections.
    let mom2 = client(&url, &mom_tokens, &[]);
    let mom2_sub = subscribe_presence(&mom2, "list:p1", "join", &inbox).await;
    wait_for("two connections", 5_000.0, || {
        present(&dad, "list:p1") == [member("p-mom", "Mom", 2.0)]
    })
    .await;
    assert_eq!(dad_log.joined("p-mom"), 1, "one join for two tabs");

    // Closing one tab keeps her; the other leaving removes her.
    mom1.close();
    wait_for("one connection", 5_000.0, || {
        present(&dad, "list:p1") == [member("p-mom", "Mom", 1.0)]
    })
    .await;
    assert_eq!(dad_log.left("p-mom"), 0);
    mom2_sub.stop();
    wait_for("Mom gone", 5_000.0, || present(&dad, "list:p1").is_empty()).await;
    assert_eq!(dad_log.left("p-mom"), 1);
    assert_eq!(dad_log.joined("p-dad") + dad_log.left("p-dad"), 0);
    mom2.close();
    dad.close();
}

#[wasm_bindgen_test]
async fn presence_a_reconnect_delivers_only_the_difference_without_flicker() {
    let url = ws_url().await;
    let mom_tokens = token_source_at("/token?sub=p-mom&name=Mom");
    // Dad's first token dies in 3 s and its refresh fails: the server closes his connection
    // (4002) and he reconnects with a fresh one, while Mom stays.
    let dad_tokens = scripted_token_source(|n| match n {
        1 => Err("/token?sub=p-dad&name=Dad&ttl=3"),
        2 => Err(""),
        _ => Err("/token?sub=p-dad&name=Dad"),
    });
    let inbox = Inbox::new();
    let mom = client(&url, &mom_tokens, &[]);
    let _mom_sub = subscribe_presence(&mom, "list:p2", "join", &inbox).await;
    let dad = client(&url, &dad_tokens, &[]);
    let status = status_log(&dad);
    let dad_log = presence_log(&dad, "list:p2");
    let _dad_sub = subscribe_presence(&dad, "list:p2", "join", &inbox).await;
    wait_for("Dad sees Mom and himself", 5_000.0, || {
        present(&dad, "list:p2") == [member("p-mom", "Mom", 1.0), member("p-dad", "Dad", 1.0)]
            || present(&dad, "list:p2")
                == [member("p-dad", "Dad", 1.0), member("p-mom", "Mom", 1.0)]
    })
    .await;
    let before = present(&dad, "list:p2");
    wait_for("close 4002", 15_000.0, || {
        status
            .seen
            .borrow()
            .iter()
            .any(|(s, code, _)| s == "reconnecting" && *code == Some(4002.0))
    })
    .await;
    // While reconnecting the list is kept as it was.
    assert_eq!(present(&dad, "list:p2"), before);
    wait_for("open again", 10_000.0, || state(&dad) == "open").await;
    // Kid arrives after the reconnect: the new subscription watches again.
    let kid_tokens = token_source_at("/token?sub=p-kid&name=Kid");
    let kid = client(&url, &kid_tokens, &[]);
    let _kid_sub = subscribe_presence(&kid, "list:p2", "join", &inbox).await;
    wait_for("Dad sees Kid", 5_000.0, || {
        present(&dad, "list:p2").contains(&member("p-kid", "Kid", 1.0))
    })
    .await;
    // Mom, present throughout, never left and rejoined for the app; Dad (himself present
    // before and after his reconnect) neither; both kept their places.
    assert_eq!(dad_log.joined("p-mom"), 1, "{:?}", dad_log.changes.borrow());
    assert_eq!(dad_log.left("p-mom"), 0, "{:?}", dad_log.changes.borrow());
    assert_eq!(dad_log.joined("p-dad"), 1, "{:?}", dad_log.changes.borrow());
    assert_eq!(dad_log.left("p-dad"), 0, "{:?}", dad_log.changes.borrow());
    assert_eq!(present(&dad, "list:p2")[..2], before[..]);
    kid.close();
    mom.close();
    dad.close();
}

#[wasm_bindgen_test]
async fn presence_watch_then_join_on_one_topic_is_present_until_the_join_ends() {
    let url = ws_url().await;
    let (mom_tokens, dad_tokens) = (
        token_source_at("/token?sub=p-mom&name=Mom"),
        token_source_at("/token?sub=p-dad&name=Dad"),
    );
    let inbox = Inbox::new();
    let mom = client(&url, &mom_tokens, &[]);
    let _mom_sub = subscribe_presence(&mom, "list:p3", "watch", &inbox).await;
    let dad = client(&url, &dad_tokens, &[]);
    let _watch = subscribe_presence(&dad, "list:p3", "watch", &inbox).await;
    sleep(200).await;
    assert!(
        present(&mom, "list:p3").is_empty(),
        "a watcher is not present"
    );
    let join = subscribe_presence(&dad, "list:p3", "join", &inbox).await;
    wait_for("Dad present", 5_000.0, || {
        present(&mom, "list:p3") == [member("p-dad", "Dad", 1.0)]
    })
    .await;
    join.stop();
    wait_for("Dad watching only", 5_000.0, || {
        present(&mom, "list:p3").is_empty()
    })
    .await;
    // Still subscribed: events keep coming.
    publish_until_received("list:p3", "still-here", &inbox, 5_000.0).await;
    mom.close();
    dad.close();
}

/// A `getToken` that fetches `path` from the harness every time.
fn token_source_at(path: &'static str) -> TokenSource {
    scripted_token_source(move |_| Err(path))
}
