//! The connection's lifecycle: fetch a token, open the WebSocket, resubscribe on open, act on
//! each decoded frame, keep the socket alive (ping / pong timeout), refresh the token in band,
//! recover a topic after a gap, and on a close or failure end the generation and wait out the
//! backoff before the next attempt (or stop for good).
//!
//! Every browser callback here goes through [`guarded`] (via [`timer`] or directly), and every
//! end of a connection through [`end`], which moves to the next generation
//! ([`Inner::next_generation`](super::state::Inner::next_generation)). Calls into application
//! code (`getToken` aside, which is awaited) are returned as [`Effect`]s and [`run`] after
//! the state borrow ends.

use std::rc::Rc;

use js_sys::Promise;
use tidings_protocol::{StreamPosition, Topic, WSClientMessage};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use super::effects::{Effect, invalidations_for_event, invalidations_for_topic, js_error, run};
use super::inbound::{Inbound, decode};
use super::state::{Inner, Phase, Shared, guarded, timer};
use crate::browser::{self, Socket, Timeout};
use crate::keepalive::{Keepalive, Tick};
use crate::presence::Presence;
use crate::refresh::{TokenRefresh, jwt_payload};
use crate::status::Decision;

/// Starts a connection attempt: fetch a token, then open a socket.
pub(super) fn start_attempt(rc: &Shared) {
    let (generation, get_token, token, effects) = {
        let mut inner = rc.borrow_mut();
        if inner.machine.is_final() {
            return;
        }
        inner.machine.attempt_started();
        (
            inner.next_generation(),
            inner.config.get_token.clone(),
            inner.config.token.clone(),
            inner.status_changed(),
        )
    };
    // The new attempt count; a listener may close the client (the generation moves).
    run(effects);
    if rc.borrow().generation() != generation {
        return;
    }
    let Some(get_token) = get_token else {
        open_socket(rc, generation, token);
        return;
    };
    // Application code: called with no borrow held.
    let result = get_token.call0(&JsValue::UNDEFINED);
    let weak = Rc::downgrade(rc);
    {
        let mut inner = rc.borrow_mut();
        if inner.generation() != generation {
            return; // getToken closed the client or started over
        }
        let timeout = timer(
            &weak,
            generation,
            inner.config.connect_timeout_ms,
            move |rc| {
                fail(rc, "getToken did not settle within connectTimeoutMs");
            },
        );
        inner.phase = Phase::FetchingToken { _timeout: timeout };
    }
    wasm_bindgen_futures::spawn_local(async move {
        let token = match result {
            Ok(v) => JsFuture::from(Promise::resolve(&v)).await,
            Err(e) => Err(e),
        };
        guarded(&weak, generation, |rc| match token {
            Ok(t) => match t.as_string() {
                Some(t) => open_socket(rc, generation, Some(t)),
                None => fail(rc, "getToken did not return a string"),
            },
            Err(e) => fail(rc, &format!("getToken failed: {}", describe(&e))),
        });
    });
}

fn open_socket(rc: &Shared, generation: u32, token: Option<String>) {
    let weak = Rc::downgrade(rc);
    let token_exp_ms = token.as_deref().and_then(token_exp_ms);
    let target = rc.borrow().config.socket_target(token.as_deref());
    let (url, protocols) = match target {
        Ok(target) => target,
        Err(why) => return fail(rc, why),
    };
    let (w1, w2, w3) = (weak.clone(), weak.clone(), weak.clone());
    let socket = Socket::open(
        &url,
        &protocols,
        move || guarded(&w1, generation, on_open),
        move |data| guarded(&w2, generation, |rc| on_message(rc, data)),
        move |code, reason| guarded(&w3, generation, |rc| on_close(rc, code, reason)),
    );
    let socket = match socket {
        Ok(socket) => socket,
        Err(e) => {
            let why = format!("could not create the WebSocket: {}", describe(&e));
            return fail(rc, &why);
        }
    };
    let mut inner = rc.borrow_mut();
    if inner.generation() != generation || inner.machine.is_final() {
        return; // dropping `socket` closes it
    }
    let timeout = timer(
        &weak,
        generation,
        inner.config.connect_timeout_ms,
        move |rc| {
            fail(rc, "no WebSocket handshake within connectTimeoutMs");
        },
    );
    inner.phase = Phase::Connecting {
        socket,
        _timeout: timeout,
        token_exp_ms,
    };
}

/// The handshake completed: resubscribe every topic, ping at once (the answer, or any earlier
/// frame, is what turns the status `open`: a server that refuses the token completes the
/// handshake and then closes with 4001), start the keepalive and the token refresh.
fn on_open(rc: &Shared) {
    let weak = Rc::downgrade(rc);
    {
        let mut inner = rc.borrow_mut();
        let generation = inner.generation();
        let Phase::Connecting {
            socket,
            token_exp_ms,
            ..
        } = std::mem::replace(&mut inner.phase, Phase::Idle)
        else {
            return;
        };
        let reconnect = inner.machine.socket_opened();
        for (topic, since) in inner.topics.on_open(reconnect) {
            // With the same presence as before: the new snapshot is compared with the roster.
            let presence = inner.topics.presence(&topic);
            if let Ok(topic) = Topic::new(topic) {
                socket.send(&subscribe(topic, since, presence));
            }
        }
        let now = js_sys::Date::now();
        let (mut keepalive, _) = Keepalive::start(
            inner.config.ping_interval_ms,
            inner.config.pong_timeout_ms,
            now,
        );
        // Answered by a pong (after the subscribes' acks); no answer within pongTimeoutMs
        // fails the attempt like a dead socket.
        socket.send(&WSClientMessage::Ping);
        let due = keepalive.ping_sent(now);
        // A fixed token cannot be refreshed: only `getToken` can give a newer one.
        let refresh = TokenRefresh::new(token_exp_ms.filter(|_| inner.config.get_token.is_some()));
        let refresh_timer = refresh
            .first_delay(now)
            .map(|delay| timer(&weak, generation, delay, refresh_token));
        inner.phase = Phase::Open {
            socket,
            keepalive,
            timer: timer(&weak, generation, due - now, on_keepalive_tick),
            refresh,
            refresh_timer,
        };
    }
}

/// A frame arrived: it proves the connection alive, then it is decoded once and acted on.
fn on_message(rc: &Shared, data: JsValue) {
    // Binary frames are not part of the protocol: ignore them.
    let Some(text) = data.as_string() else { return };
    let now = js_sys::Date::now();
    let weak = Rc::downgrade(rc);
    let (generation, first_answer) = {
        let mut inner = rc.borrow_mut();
        let mut open = false;
        if let Phase::Open { keepalive, .. } = &mut inner.phase {
            keepalive.frame_received(now);
            open = true;
        }
        inner.machine.frame_received();
        let first_answer = if open && !inner.machine.is_open() {
            // The server's first frame on this socket: now it is `open`.
            inner.machine.answered();
            inner.status_changed()
        } else {
            Vec::new()
        };
        (inner.generation(), first_answer)
    };
    // Status listeners run before the frame's own effects (a `ready` resolves on an open
    // client); one of them may close the client.
    run(first_answer);
    let effects = {
        let mut inner = rc.borrow_mut();
        if inner.generation() != generation {
            return;
        }
        let Ok(message) = decode(&text) else {
            return browser::report("tidings: a frame is not JSON", &JsValue::from_str(&text));
        };
        let mut effects = Vec::new();
        let recovery = |topic: &str, delay: f64| {
            let topic = topic.to_owned();
            timer(&weak, generation, delay, move |rc| {
                recover_topic(rc, &topic)
            })
        };
        match message {
            Inbound::Event {
                topic,
                seq,
                epoch,
                object,
            } => {
                let schedule = |delay| recovery(&topic, delay);
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
                    effects.push(Effect::Call(listener.clone(), object.clone()));
                }
                effects.extend(invalidations_for_event(&inner.bindings, &topic, &object));
            }
            Inbound::Subscribed {
                topic,
                recovered,
                position,
            } => {
                let schedule = |delay| recovery(&topic, delay);
                let random = js_sys::Math::random();
                if let Some(ack) = inner
                    .topics
                    .on_subscribed(&topic, recovered, position, now, random, schedule)
                {
                    for r in ack.ready {
                        effects.push(Effect::Call(r.resolve, JsValue::UNDEFINED));
                    }
                    if ack.invalidate {
                        effects.extend(invalidations_for_topic(&inner.bindings, &topic));
                    }
                    if let Some(since) = ack.resubscribe {
                        resubscribe(&inner, &topic, Some(since));
                    }
                }
            }
            Inbound::Skipped { topic, seq, epoch } => {
                // An event that was not for this connection (e.g. the echo of its own
                // change): its number is taken like a delivered event's, so the next one
                // follows without a recovery, and nothing reaches listeners or queries. A
                // `skipped` after a real gap schedules the recovery as an event would.
                let schedule = |delay| recovery(&topic, delay);
                let random = js_sys::Math::random();
                inner
                    .topics
                    .on_event(&topic, Some(seq), Some(&epoch), now, random, schedule);
            }
            Inbound::Refreshed => {
                if let Phase::Open {
                    refresh,
                    refresh_timer,
                    ..
                } = &mut inner.phase
                {
                    // The server now holds the new token's expiry: schedule the next refresh
                    // from it (nothing when it did not move forward).
                    if let Some(delay) = refresh.refreshed(now) {
                        *refresh_timer = Some(timer(&weak, generation, delay, refresh_token));
                    }
                }
            }
            Inbound::Error {
                topic: Some(topic),
                text,
            } => {
                let err = js_error(&format!("tidings: {topic}: {text}"));
                let refused = inner.topics.on_refused(&topic);
                if refused.is_empty() {
                    // After the ack: the subscription stands (e.g. a `join` refused because
                    // the topic has too many present users: it only watches).
                    browser::report("tidings: the server answered", &err);
                }
                for r in refused {
                    effects.push(Effect::Call(r.reject, err.clone()));
                }
            }
            Inbound::Ended { topic, reason } => {
                // The subscription is over for good on this token: drop it (no resubscribe),
                // and tell the app.
                if let Some(waiting) = inner.topics.on_ended(&topic) {
                    effects.extend(inner.sync_presence(&topic));
                    let err = js_error(&format!("tidings: {topic}: {reason}"));
                    for r in waiting {
                        effects.push(Effect::Call(r.reject, err.clone()));
                    }
                    let ended = js_sys::Object::new();
                    browser::set(&ended, "topic", &JsValue::from_str(&topic));
                    browser::set(&ended, "reason", &JsValue::from_str(&reason));
                    match &inner.config.on_subscription_ended {
                        Some(f) => effects.push(Effect::Call(f.clone(), ended.into())),
                        None => browser::report("tidings: the server ended a subscription", &ended),
                    }
                }
            }
            Inbound::Presence { topic, members } => {
                let change = inner.rosters.snapshot(&topic, members);
                effects.extend(inner.presence_changed(&topic, change));
            }
            Inbound::PresenceJoin { topic, member } => {
                let change = inner.rosters.join(&topic, member);
                effects.extend(inner.presence_changed(&topic, change));
            }
            Inbound::PresenceLeave { topic, user_id } => {
                let change = inner.rosters.leave(&topic, &user_id);
                effects.extend(inner.presence_changed(&topic, change));
            }
            Inbound::Error { topic: None, text } => {
                browser::report("tidings: the server answered", &JsValue::from_str(&text));
            }
            // "unsubscribed" and "pong" only prove liveness (recorded above).
            Inbound::Other => {}
        }
        effects
    };
    run(effects);
}

/// A topic's gap recovery is due (its timer is owned by the topic's entry: it dies with it,
/// or when the socket closes). Resubscribes `topic` from its last delivered position:
/// `unsubscribe` first, since the server answers a subscribe for a topic it already has with
/// `recovered: false` at once.
fn recover_topic(rc: &Shared, topic: &str) {
    let mut inner = rc.borrow_mut();
    let Some(since) = inner.topics.recover_now(topic) else {
        return;
    };
    resubscribe(&inner, topic, Some(since));
}

/// Sends `unsubscribe`, then `subscribe` with `since` (the server answers a subscribe for a
/// topic it already has with `recovered: false` at once, hence the unsubscribe first), and
/// with the topic's presence (a new snapshot follows the ack).
pub(super) fn resubscribe(inner: &Inner, topic: &str, since: Option<(u64, String)>) {
    let presence = inner.topics.presence(topic);
    if let (Some(socket), Ok(topic)) = (inner.socket(), Topic::new(topic.to_owned())) {
        socket.send(&WSClientMessage::Unsubscribe {
            topic: topic.clone(),
        });
        socket.send(&subscribe(topic, since, presence));
    }
}

/// The `subscribe` of `topic` from `since`, asking for the topic's position in the ack and
/// for `presence`.
pub(super) fn subscribe(
    topic: Topic,
    since: Option<(u64, String)>,
    presence: Presence,
) -> WSClientMessage {
    WSClientMessage::Subscribe {
        topic,
        since: since.map(|(seq, epoch)| StreamPosition { seq, epoch }),
        position: true,
        presence: presence.mode(),
    }
}

fn on_close(rc: &Shared, code: u16, reason: &str) {
    let effects = {
        let mut inner = rc.borrow_mut();
        if inner.machine.is_final() {
            return;
        }
        let decision = inner.machine.closed(code, reason, js_sys::Math::random());
        end(&mut inner, rc, decision)
    };
    run(effects);
}

/// Gives up on the current attempt or socket and retries with backoff. Called only from a
/// [`guarded`] callback of the current generation, or right after one with no application
/// code run in between.
fn fail(rc: &Shared, reason: &str) {
    let effects = {
        let mut inner = rc.borrow_mut();
        if inner.machine.is_final() {
            return;
        }
        let decision = inner.machine.failed(reason, js_sys::Math::random());
        end(&mut inner, rc, decision)
    };
    run(effects);
}

/// Acts on the machine's decision after a connection ended: the next generation (late
/// callbacks of the attempt that ended, such as a token that arrives after its timeout, are
/// ignored), then a reconnect timer or a stop for good.
fn end(inner: &mut Inner, rc: &Shared, decision: Decision) -> Vec<Effect> {
    let generation = inner.next_generation();
    inner.topics.on_close();
    match decision {
        Decision::Reconnect { delay_ms } => {
            let weak = Rc::downgrade(rc);
            inner.phase = Phase::Waiting {
                _timer: timer(&weak, generation, delay_ms, start_attempt),
            };
        }
        Decision::Stop => {
            inner.window_listeners.clear();
            // No connection will tell who comes and goes: nobody is shown present.
            let mut effects = Vec::new();
            let topics: Vec<String> = inner.topics.topics().map(str::to_owned).collect();
            for topic in topics {
                let gone = inner.rosters.unwatch(&topic);
                effects.extend(inner.presence_changed(&topic, gone));
                // Watched again, empty, for the snapshot of a connection `connect()` starts.
                effects.extend(inner.sync_presence(&topic));
            }
            effects.extend(inner.status_changed());
            return effects;
        }
    }
    inner.status_changed()
}

/// The refresh timer fired: fetch a token and send it in a `refresh`. A `getToken` that fails
/// (or settles after the connection ended) sends nothing: the server then closes with 4002
/// at the old token's expiry and the normal reconnect takes over.
fn refresh_token(rc: &Shared) {
    let (generation, get_token) = {
        let inner = rc.borrow();
        if !matches!(inner.phase, Phase::Open { .. }) {
            return;
        }
        (inner.generation(), inner.config.get_token.clone())
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
        guarded(&weak, generation, |rc| {
            let mut inner = rc.borrow_mut();
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
    });
}

/// Sends a ping now and returns the keepalive timer until its pong is due.
fn ping(rc: &Shared, generation: u32, socket: &Socket, keepalive: &mut Keepalive) -> Timeout {
    let now = js_sys::Date::now();
    socket.send(&WSClientMessage::Ping);
    let due = keepalive.ping_sent(now);
    timer(&Rc::downgrade(rc), generation, due - now, on_keepalive_tick)
}

fn on_keepalive_tick(rc: &Shared) {
    let dead = {
        let mut inner = rc.borrow_mut();
        let generation = inner.generation();
        let Phase::Open {
            socket,
            keepalive,
            timer: keepalive_timer,
            ..
        } = &mut inner.phase
        else {
            return;
        };
        let now = js_sys::Date::now();
        match keepalive.tick(now) {
            Tick::Ping => {
                *keepalive_timer = ping(rc, generation, socket, keepalive);
                false
            }
            Tick::WaitUntil(at) => {
                *keepalive_timer =
                    timer(&Rc::downgrade(rc), generation, at - now, on_keepalive_tick);
                false
            }
            Tick::Dead => true,
        }
    };
    if dead {
        fail(rc, "no pong within pongTimeoutMs");
    }
}

/// The page became visible: ping now, or retry now if waiting.
pub(super) fn check_liveness(rc: &Shared) {
    let retry_now = {
        let mut inner = rc.borrow_mut();
        let generation = inner.generation();
        match &mut inner.phase {
            Phase::Open {
                socket,
                keepalive,
                timer,
                ..
            } => {
                if keepalive.check_now() {
                    *timer = ping(rc, generation, socket, keepalive);
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

/// The browser's `online` event: retry at once, with a fresh backoff, when offline or waiting
/// for a retry; ping an open socket (it may have died silently meanwhile).
pub(super) fn went_online(rc: &Shared) {
    let retry_now = {
        let mut inner = rc.borrow_mut();
        let retry = matches!(inner.phase, Phase::Offline | Phase::Waiting { .. });
        if retry {
            inner.machine.online();
        }
        retry
    };
    if retry_now {
        start_attempt(rc);
    } else {
        check_liveness(rc);
    }
}

/// The browser's `offline` event: the socket (or the attempt, or the retry timer) is dropped
/// at once and nothing is retried until `online`; the status leaves `open` now rather than
/// after the pong timeout.
pub(super) fn went_offline(rc: &Shared) {
    let effects = {
        let mut inner = rc.borrow_mut();
        if inner.machine.is_final() || matches!(inner.phase, Phase::Idle | Phase::Offline) {
            return; // stopped, not started (`idle`), or already offline
        }
        inner.next_generation();
        inner.topics.on_close();
        inner.phase = Phase::Offline;
        inner.machine.offline();
        inner.status_changed()
    };
    run(effects);
}

/// `connect()`: starts the first attempt (`idle`), starts over after `unauthorized`, or
/// retries at once while waiting for a retry or offline. No-op while connecting or open.
pub(super) fn connect(rc: &Shared) -> bool {
    let start = {
        let mut inner = rc.borrow_mut();
        if !inner.machine.restart() {
            return false;
        }
        matches!(
            inner.phase,
            Phase::Idle | Phase::Waiting { .. } | Phase::Offline
        )
    };
    if start {
        start_attempt(rc);
    }
    true
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
