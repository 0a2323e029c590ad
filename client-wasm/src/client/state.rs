//! The client's state and the two rules every callback follows.
//!
//! One `Rc<RefCell<Inner>>` ([`Shared`]) holds everything: the options, the status machine, the
//! topics, the [`Phase`] of the connection (which owns the socket and its timers, so replacing
//! the phase cancels them), the listeners, the query-client bindings and the presence rosters
//! (which outlive the phase: a reconnect compares its snapshots with them). Browser callbacks
//! (socket handlers, timers, `getToken`'s promise) hold only a `Weak` to it plus the generation
//! of the connection attempt they belong to. [`Inner::next_generation`] is the one place the
//! generation moves (a new attempt, a connection that ended, `close()`), and [`guarded`] is the
//! one check every such callback passes: the client still exists and its generation is still
//! the callback's, so a callback of an old socket or attempt is a no-op and freeing the client
//! drops everything.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use js_sys::Function;
use wasm_bindgen::JsValue;

use super::effects::{Binding, Effect, Ready, status_to_js};
use super::options::Config;
use crate::browser::{self, Listener, Socket, Timeout};
use crate::keepalive::Keepalive;
use crate::presence::{Change, Presence, Rosters};
use crate::refresh::TokenRefresh;
use crate::status::{Status, StatusMachine};
use crate::topics::TopicSet;

/// The client's state, shared by the JS objects and the browser callbacks.
pub(super) type Shared = Rc<RefCell<Inner>>;

/// What the connection is doing.
pub(super) enum Phase {
    /// Nothing in flight (stopped, or between two steps).
    Idle,
    /// Waiting for `getToken`; the timer gives up after `connectTimeoutMs`.
    FetchingToken { _timeout: Timeout },
    /// Waiting out a reconnect delay (the timer starts the next attempt).
    Waiting { _timer: Timeout },
    /// The browser is offline: no socket and no timer until its `online` event.
    Offline,
    /// Handshake in progress, with its timeout and the expiry of its token (Unix ms).
    Connecting {
        socket: Socket,
        _timeout: Timeout,
        token_exp_ms: Option<f64>,
    },
    /// The handshake completed (the status turns `open` with the server's first frame), with
    /// the keepalive and its timer, and the token refresh and its timer (none
    /// without `getToken` or a readable `exp`).
    Open {
        socket: Socket,
        keepalive: Keepalive,
        timer: Timeout,
        refresh: TokenRefresh,
        refresh_timer: Option<Timeout>,
    },
}

pub(super) struct Inner {
    pub(super) config: Config,
    pub(super) machine: StatusMachine,
    pub(super) topics: TopicSet<Function, Ready, Timeout>,
    pub(super) phase: Phase,
    /// Increases with every connection attempt; callbacks of older ones are ignored. Moved
    /// only by [`Inner::next_generation`].
    generation: u32,
    /// `onStatus` listeners: id, function, and whether it wants every new status object
    /// (`everyChange`) rather than state changes only.
    pub(super) status_listeners: Vec<(u32, Function, bool)>,
    last_status: Status,
    status_js: JsValue,
    pub(super) bindings: Vec<Binding>,
    pub(super) window_listeners: Vec<Listener>,
    /// The present users of every topic subscribed with presence (kept across reconnects).
    pub(super) rosters: Rosters<JsValue>,
    /// `onPresence` listeners: id, topic, function.
    pub(super) presence_listeners: Vec<(u32, String, Function)>,
    /// The frozen empty array: every topic nobody is present on (the same object each time).
    no_members: JsValue,
    next_id: u32,
}

impl Inner {
    /// A client that has not started connecting yet.
    pub(super) fn new(
        config: Config,
        machine: StatusMachine,
        topics: TopicSet<Function, Ready, Timeout>,
    ) -> Self {
        let last_status = machine.status().clone();
        let status_js = status_to_js(&last_status);
        Self {
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
            rosters: Rosters::new(),
            presence_listeners: Vec::new(),
            no_members: frozen(js_sys::Array::new()),
            next_id: 0,
        }
    }

    /// The transition point: starts a new generation with nothing in flight. The old phase is
    /// dropped (its socket closed, its timers cancelled) and every callback of the old
    /// generation becomes a no-op. Returns the new generation.
    pub(super) fn next_generation(&mut self) -> u32 {
        self.generation = self.generation.wrapping_add(1);
        self.phase = Phase::Idle;
        self.generation
    }

    /// The current generation.
    pub(super) fn generation(&self) -> u32 {
        self.generation
    }

    /// A fresh id for a status listener or a query-client binding.
    pub(super) fn id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// The cached status object (`client.status`).
    pub(super) fn status_js(&self) -> JsValue {
        self.status_js.clone()
    }

    /// Refreshes the cached status object; effects notify the listeners if it changed: every
    /// `everyChange` listener, and the others only when the state itself changed.
    pub(super) fn status_changed(&mut self) -> Vec<Effect> {
        let status = self.machine.status();
        if *status == self.last_status {
            return Vec::new();
        }
        let state_changed = status.state != self.last_status.state;
        self.last_status = status.clone();
        self.status_js = status_to_js(status);
        self.status_listeners
            .iter()
            .filter(|(_, _, every)| *every || state_changed)
            .map(|(_, f, _)| Effect::Call(f.clone(), self.status_js.clone()))
            .collect()
    }

    /// `topic`'s present users as a frozen array: the same object until they change (fit for
    /// React's `useSyncExternalStore`).
    pub(super) fn presence_js(&mut self, topic: &str) -> JsValue {
        if let Some(members) = self.rosters.cached(topic) {
            return members.clone();
        }
        let members: js_sys::Array = self.rosters.members(topic).collect();
        if members.length() == 0 {
            return self.no_members.clone();
        }
        let members = frozen(members);
        self.rosters.cache(topic, members.clone());
        members
    }

    /// `topic`'s members changed (their cached array went with the change): its
    /// `onPresence` listeners are called with `{ topic, members, joined, left }`.
    pub(super) fn presence_changed(
        &mut self,
        topic: &str,
        change: Option<Change<JsValue>>,
    ) -> Vec<Effect> {
        let Some(change) = change else {
            return Vec::new();
        };
        if !self.presence_listeners.iter().any(|(_, t, _)| t == topic) {
            return Vec::new();
        }
        let object = js_sys::Object::new();
        browser::set(&object, "topic", &JsValue::from_str(topic));
        browser::set(&object, "members", &self.presence_js(topic));
        let joined: js_sys::Array = change.joined.into_iter().collect();
        browser::set(&object, "joined", &frozen(joined));
        let left: js_sys::Array = change.left.into_iter().collect();
        browser::set(&object, "left", &frozen(left));
        let object: JsValue = js_sys::Object::freeze(&object).into();
        self.presence_listeners
            .iter()
            .filter(|(_, t, _)| t == topic)
            .map(|(_, _, f)| Effect::Call(f.clone(), object.clone()))
            .collect()
    }

    /// Keeps `topic`'s roster while its subscription asks for presence, and drops it (everyone
    /// leaves, for the app) once it no longer does.
    pub(super) fn sync_presence(&mut self, topic: &str) -> Vec<Effect> {
        if self.topics.presence(topic) == Presence::None {
            let change = self.rosters.unwatch(topic);
            self.presence_changed(topic, change)
        } else {
            self.rosters.watch(topic);
            Vec::new()
        }
    }

    /// The open socket, if any.
    pub(super) fn socket(&self) -> Option<&Socket> {
        match &self.phase {
            Phase::Open { socket, .. } => Some(socket),
            _ => None,
        }
    }
}

/// `array`, frozen.
fn frozen(array: js_sys::Array) -> JsValue {
    js_sys::Object::freeze(&array).into()
}

/// Runs `f` with the client if it still exists and `generation` is still current: the guard
/// of every browser callback that belongs to one connection attempt.
pub(super) fn guarded(weak: &Weak<RefCell<Inner>>, generation: u32, f: impl FnOnce(&Shared)) {
    let Some(rc) = weak.upgrade() else { return };
    if rc.borrow().generation != generation {
        return;
    }
    f(&rc);
}

/// A timer of generation `generation` that calls `f` through [`guarded`] after `delay_ms`.
pub(super) fn timer(
    weak: &Weak<RefCell<Inner>>,
    generation: u32,
    delay_ms: f64,
    f: impl Fn(&Shared) + 'static,
) -> Timeout {
    let weak = weak.clone();
    Timeout::new(delay_ms, move || guarded(&weak, generation, &f))
}
