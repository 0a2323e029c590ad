//! The client's topics: listeners per topic (reference counted) and the server subscription
//! behind each.
//!
//! Several listeners on one topic share ONE server subscription: the first listener makes the
//! client send `subscribe`, the last one leaving makes it send `unsubscribe`. While the socket
//! is down nothing is sent; when it opens, every topic with listeners is subscribed again, which
//! is the queue of "subscribe/unsubscribe while disconnected" with the cancelling pairs already
//! removed.
//!
//! Each listener comes with a `ready` handle (`R`, a promise's resolve/reject pair in the
//! browser) that is handed back when the server acknowledges the topic. Acks are matched to
//! requests in order: a `subscribed` that answers a request whose topic has since been dropped
//! is skipped, so a new listener is never told "ready" by the ack of an older request.
//!
//! Recovery: each topic remembers the stream position (`seq`, `epoch`) of the last event it
//! delivered. After a reconnect the topic is subscribed again with `since` that position; the
//! server replays what was missed before its ack, and only an ack with `recovered: false` (or
//! a topic that had no position yet) invalidates the topic's queries. An event at or below
//! the remembered `seq` of the same epoch is a duplicate and is dropped.
//!
//! Gaps: the server numbers a topic's events without holes, so an event of the remembered
//! epoch with `seq` above the next one, or an event of another epoch, means events were lost
//! on the way (a broken broker subscription, a lost history). The topic then recovers on the
//! open socket: `unsubscribe`, then `subscribe` with `since` the last delivered position (the
//! server answers an already-subscribed topic `recovered: false` at once, hence the
//! unsubscribe first). The server replays what follows that position and acks
//! `recovered: true`, or acks `recovered: false` (history too short, epoch changed) and the
//! topic's queries are invalidated once, as after a failed reconnect.
//!
//! The event that revealed the gap is NOT delivered, nor is any later event of the topic that
//! does not follow the last delivered one, until the recovery ends: the server's replay
//! contains them (its history is everything up to the resubscribe), so listeners see each
//! event once and in `seq` order, and nothing is buffered in the client. When the replay does
//! not reach an event that was held back (`recovered: true` but still behind it), the topic
//! recovers again. One recovery at most is scheduled or in flight per topic, and a topic that
//! keeps needing one waits out the reconnect backoff: the first recovery starts at once, each
//! further one within the current backoff window after the previous one waits a full-jitter
//! delay over that window (doubling up to `maxDelayMs`); a topic quiet for longer than the
//! window starts over.

use std::collections::BTreeMap;

use crate::backoff::Backoff;
use crate::presence::Presence;

/// Identifies one listener (one `subscribe` call on the client).
pub type ListenerId = u32;

/// Where the server subscription of a topic stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Not requested on the current socket (or no socket).
    Unsent,
    /// `subscribe` sent, ack not yet received.
    Requested,
    /// Acknowledged: events flow.
    Active,
}

/// Where a topic's recovery stands (a subscribe with `since`).
#[derive(Debug)]
enum Recovery<T> {
    /// None scheduled or in flight.
    Idle,
    /// A gap was seen; the timer (`T`, made by the caller) calls [`TopicSet::recover_now`].
    Scheduled(T),
    /// A `subscribe` with `since` was sent (after a gap or a reconnect); its ack ends it.
    InFlight,
}

#[derive(Debug)]
struct Entry<L, R, T> {
    listeners: Vec<(ListenerId, L)>,
    /// The presence of each listener that asked for some: the server subscription carries
    /// the highest.
    presence: Vec<(ListenerId, Presence)>,
    waiting: Vec<(ListenerId, R)>,
    server: ServerState,
    invalidate_on_ack: bool,
    /// `seq` and `epoch` of the last event delivered on this topic.
    position: Option<(u64, String)>,
    recovery: Recovery<T>,
    /// The last event held back during a recovery (or that revealed the gap): the recovery
    /// must deliver up to it.
    ahead: Option<(u64, String)>,
    /// Paces repeated recoveries of this topic.
    backoff: Backoff,
    /// The position of a read of this topic's data (a response's read stamp) not yet
    /// compared with the subscription's position (the ack has not come yet).
    stamp: Option<(u64, String)>,
    /// Whether a read stamp was noted for this topic (the app's reads carry them).
    stamped: bool,
    /// When the last recovery was due to start (`Date.now()` ms).
    last_recovery_ms: Option<f64>,
}

impl<L, R, T> Entry<L, R, T> {
    /// The presence the server subscription carries: the highest of the listeners'.
    fn presence(&self) -> Presence {
        self.presence
            .iter()
            .map(|(_, p)| *p)
            .max()
            .unwrap_or_default()
    }

    /// The topic's presence changed while subscribed on an open socket: subscribe again with
    /// the new one from the last delivered position (`unsubscribe` first; see [`Resend`]). An
    /// ack still due answers the old request: `stale_acks` skips it.
    fn resend(&mut self, topic: &str, stale_acks: &mut Vec<(String, u32)>) -> Resend {
        if self.server == ServerState::Requested {
            skip_ack(stale_acks, topic);
        }
        self.server = ServerState::Requested;
        self.invalidate_on_ack = true;
        self.ahead = None;
        let since = self.position.clone();
        self.recovery = if since.is_some() {
            Recovery::InFlight
        } else {
            Recovery::Idle
        };
        Resend { since }
    }

    /// What a read stamped at `stamp` needs, the subscription being active at `position`.
    /// A resubscribe from the stamp is set up here (the caller sends it).
    fn compare_stamp(&mut self, stamp: (u64, String)) -> StampAction {
        match &self.position {
            Some((seq, epoch)) if *epoch == stamp.1 => {
                if *seq <= stamp.0 {
                    // Everything after the read is (or will be) delivered.
                    StampAction::None
                } else {
                    self.position = Some(stamp.clone());
                    self.recovery = Recovery::InFlight;
                    self.server = ServerState::Requested;
                    self.invalidate_on_ack = true;
                    self.ahead = None;
                    StampAction::Resubscribe(stamp)
                }
            }
            // A subscription that does not know its position (a server without positions):
            // nothing to compare with.
            None => StampAction::Invalidate,
            Some(_) => StampAction::Invalidate,
        }
    }

    /// Whether the position has reached `ahead` (or nothing is ahead).
    fn caught_up(&self) -> bool {
        match (&self.ahead, &self.position) {
            (None, _) => true,
            (Some((a, ae)), Some((p, pe))) => ae == pe && a <= p,
            (Some(_), None) => false,
        }
    }

    /// Schedules a recovery after the backoff's delay; `schedule` turns the delay into a timer.
    fn schedule(&mut self, now_ms: f64, random: f64, schedule: impl FnOnce(f64) -> T) {
        if self
            .last_recovery_ms
            .is_some_and(|last| now_ms - last > self.backoff.window_ms())
        {
            self.backoff.reset();
        }
        // The first recovery runs at once; only repeated ones are spread out.
        let random = if self.backoff.attempt() == 0 {
            0.0
        } else {
            random
        };
        let delay_ms = self.backoff.next_delay_ms(random);
        self.last_recovery_ms = Some(now_ms + delay_ms);
        self.recovery = Recovery::Scheduled(schedule(delay_ms));
    }
}

/// What [`TopicSet::add`] asks the caller to do.
#[derive(Debug, PartialEq)]
pub struct Added<R> {
    /// The new listener's id (for [`TopicSet::remove`]).
    pub id: ListenerId,
    /// Send `subscribe` for the topic now (first listener, socket open).
    pub send_subscribe: bool,
    /// ... with this `since`: a read of the topic was stamped before it was subscribed.
    pub since: Option<(u64, String)>,
    /// The topic is already acknowledged: settle this ready handle now.
    pub ready_now: Option<R>,
    /// The listener raised the topic's presence: subscribe again.
    pub resend: Option<Resend>,
}

/// A subscription to make again because its presence changed: send `unsubscribe`, then
/// `subscribe` with the topic's new presence and this `since` (the events in between are
/// replayed; the server sends a new snapshot, which the client's roster compares with what it
/// holds). The server has no "change the presence of a subscription" message: a resubscribe
/// is what a gap recovery already does.
#[derive(Debug, PartialEq, Eq)]
pub struct Resend {
    /// The last delivered position, when the topic has one.
    pub since: Option<(u64, String)>,
}

/// Counts one more `subscribed` ack of `topic` to skip: it answers a request that no longer
/// stands.
fn skip_ack(stale_acks: &mut Vec<(String, u32)>, topic: &str) {
    match stale_acks.iter_mut().find(|(t, _)| t == topic) {
        Some((_, n)) => *n += 1,
        None => stale_acks.push((topic.to_owned(), 1)),
    }
}

/// What [`TopicSet::remove`] asks the caller to do.
#[derive(Debug, PartialEq)]
pub struct Removed<R> {
    /// The listener's topic.
    pub topic: String,
    /// Send `unsubscribe` for the topic now (last listener, socket open).
    pub send_unsubscribe: bool,
    /// The listener's ready handle, if the ack had not come yet (reject it).
    pub unsettled: Option<R>,
    /// Other listeners remain and the topic's presence changed: subscribe again.
    pub resend: Option<Resend>,
}

/// What a `subscribed` ack settles.
#[derive(Debug, PartialEq)]
pub struct Acked<R> {
    /// Ready handles to resolve.
    pub ready: Vec<R>,
    /// The ack ends a resubscription after a reconnect or a gap: invalidate the topic's
    /// queries once.
    pub invalidate: bool,
    /// A read of the topic was stamped before the position this ack gave: events between
    /// the two were not delivered. Resubscribe from the stamp (`unsubscribe`, then
    /// `subscribe` with this `since`) to have them replayed.
    pub resubscribe: Option<(u64, String)>,
}

/// What a read stamp asks the caller to do ([`TopicSet::on_stamp`]).
#[derive(Debug, PartialEq, Eq)]
pub enum StampAction {
    /// Nothing now: the subscription delivers everything after the read, or the stamp is
    /// kept until the subscription's ack (or until the topic is subscribed).
    None,
    /// Events after the read came before the subscription: resubscribe from this position
    /// (`unsubscribe`, then `subscribe` with `since`) to have them replayed.
    Resubscribe((u64, String)),
    /// The read is of another epoch than the subscription: invalidate the topic's queries.
    Invalidate,
}

/// Stamps kept for topics without listeners yet (a read that ran before its subscription);
/// the oldest goes first.
const MAX_PENDING_STAMPS: usize = 64;

/// Topics → listeners, with the server-side state of each topic. `T` is the timer of a
/// scheduled gap recovery (dropping it cancels it).
#[derive(Debug)]
pub struct TopicSet<L, R, T = ()> {
    entries: BTreeMap<String, Entry<L, R, T>>,
    /// `subscribed` acks still to come for requests whose topic was dropped meanwhile (a short
    /// list: a plain Vec keeps the wasm smaller than a second map type).
    stale_acks: Vec<(String, u32)>,
    open: bool,
    next_id: ListenerId,
    /// The schedule each topic's recoveries start from.
    backoff: Backoff,
    /// Read stamps of topics without listeners (at most [`MAX_PENDING_STAMPS`]).
    pending_stamps: Vec<(String, (u64, String))>,
}

impl<L, R, T> Default for TopicSet<L, R, T> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            stale_acks: Vec::new(),
            open: false,
            next_id: 1,
            backoff: Backoff::new(
                crate::backoff::DEFAULT_INITIAL_DELAY_MS,
                crate::backoff::DEFAULT_MAX_DELAY_MS,
            ),
            pending_stamps: Vec::new(),
        }
    }
}

impl<L, R, T> TopicSet<L, R, T> {
    /// An empty set, socket closed.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set whose repeated gap recoveries are paced by `backoff` (the client's
    /// reconnect backoff settings).
    pub fn with_backoff(backoff: Backoff) -> Self {
        Self {
            backoff,
            ..Self::default()
        }
    }

    /// Adds a listener on `topic` (without presence).
    pub fn add(&mut self, topic: &str, listener: L, ready: R) -> Added<R> {
        self.add_with_presence(topic, listener, ready, Presence::None)
    }

    /// Adds a listener on `topic` that asks for `presence`.
    pub fn add_with_presence(
        &mut self,
        topic: &str,
        listener: L,
        ready: R,
        presence: Presence,
    ) -> Added<R> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let open = self.open;
        let mut send_subscribe = false;
        let mut since = None;
        let backoff = &self.backoff;
        let stamp = self
            .pending_stamps
            .iter()
            .position(|(t, _)| t == topic)
            .filter(|_| !self.entries.contains_key(topic))
            .map(|i| self.pending_stamps.remove(i).1);
        let entry = self.entries.entry(topic.to_owned()).or_insert_with(|| {
            let server = if open {
                send_subscribe = true;
                ServerState::Requested
            } else {
                ServerState::Unsent
            };
            // A read made before the subscription: subscribe from its position, so that
            // what was published after it is replayed (a failed replay invalidates).
            let stamped = stamp.is_some();
            if open {
                since = stamp.clone();
            }
            Entry {
                listeners: Vec::new(),
                presence: Vec::new(),
                waiting: Vec::new(),
                server,
                invalidate_on_ack: open && stamped,
                position: stamp.clone(),
                recovery: if open && stamped {
                    Recovery::InFlight
                } else {
                    Recovery::Idle
                },
                ahead: None,
                backoff: backoff.clone(),
                last_recovery_ms: None,
                stamp: None,
                stamped,
            }
        });
        entry.listeners.push((id, listener));
        let before = entry.presence();
        if presence != Presence::None {
            entry.presence.push((id, presence));
        }
        let resend = (!send_subscribe
            && open
            && entry.server != ServerState::Unsent
            && entry.presence() != before)
            .then(|| entry.resend(topic, &mut self.stale_acks));
        // A resend's ack settles the new listener too.
        let ready_now = if entry.server == ServerState::Active {
            Some(ready)
        } else {
            entry.waiting.push((id, ready));
            None
        };
        Added {
            id,
            send_subscribe,
            since,
            ready_now,
            resend,
        }
    }

    /// Removes a listener; `None` if it was already removed.
    pub fn remove(&mut self, id: ListenerId) -> Option<Removed<R>> {
        // Linear in the number of topics: a page has tens of them, not thousands.
        let (topic, entry) = self
            .entries
            .iter_mut()
            .find(|(_, e)| e.listeners.iter().any(|(i, _)| *i == id))?;
        let topic = topic.clone();
        let before = entry.presence();
        entry.listeners.retain(|(i, _)| *i != id);
        entry.presence.retain(|(i, _)| *i != id);
        let unsettled = entry
            .waiting
            .iter()
            .position(|(i, _)| *i == id)
            .map(|pos| entry.waiting.remove(pos).1);
        let mut send_unsubscribe = false;
        let mut resend = None;
        if entry.listeners.is_empty() {
            let server = entry.server;
            self.entries.remove(&topic);
            if self.open && server != ServerState::Unsent {
                send_unsubscribe = true;
                if server == ServerState::Requested {
                    skip_ack(&mut self.stale_acks, &topic);
                }
            }
        } else if self.open && entry.server != ServerState::Unsent && entry.presence() != before {
            resend = Some(entry.resend(&topic, &mut self.stale_acks));
        }
        Some(Removed {
            topic,
            send_unsubscribe,
            unsettled,
            resend,
        })
    }

    /// The socket opened: every topic is requested again. Returns the topics to subscribe, in
    /// name order, each with the position to resume from (`since`; only after a reconnect).
    /// `reconnect` marks them for one query invalidation unless their ack says `recovered`.
    pub fn on_open(&mut self, reconnect: bool) -> Vec<(String, Option<(u64, String)>)> {
        self.open = true;
        self.stale_acks.clear();
        self.entries
            .iter_mut()
            .map(|(topic, entry)| {
                entry.server = ServerState::Requested;
                entry.invalidate_on_ack = reconnect;
                // The first open resumes only from a read stamp (seeded as the position).
                let since = if reconnect || entry.stamped {
                    entry.position.clone()
                } else {
                    None
                };
                if since.is_some() && entry.stamped {
                    entry.invalidate_on_ack = true;
                }
                // Without `since` nothing is replayed: numbering starts afresh.
                if since.is_none() {
                    entry.position = None;
                }
                entry.recovery = if since.is_some() {
                    Recovery::InFlight
                } else {
                    Recovery::Idle
                };
                entry.ahead = None;
                (topic.clone(), since)
            })
            .collect()
    }

    /// An event arrived on `topic` with position (`seq`, `epoch`) when the server sent one.
    /// Returns whether to deliver it: `false` for a duplicate (at or below the remembered
    /// `seq` of the same epoch), and for an event that does not follow the last delivered one
    /// (a gap, or another epoch) on a topic that is acknowledged or recovering.
    ///
    /// The first such event schedules a recovery: `schedule(delay_ms)` is called once and
    /// returns the timer that calls [`TopicSet::recover_now`] after `delay_ms` (0 the first
    /// time, then the backoff's). `now_ms` is the current time, `random` a uniform number in
    /// `[0, 1)` for the jitter.
    pub fn on_event(
        &mut self,
        topic: &str,
        seq: Option<u64>,
        epoch: Option<&str>,
        now_ms: f64,
        random: f64,
        schedule: impl FnOnce(f64) -> T,
    ) -> bool {
        let (Some(entry), Some(seq), Some(epoch)) = (self.entries.get_mut(topic), seq, epoch)
        else {
            return true;
        };
        let follows = match &entry.position {
            None => true,
            Some((last, known)) if known == epoch => {
                if seq <= *last {
                    return false;
                }
                seq == *last + 1
            }
            Some(_) => false,
        };
        // A plain subscribe in flight starts a fresh stream: nothing to recover from yet.
        let checked =
            entry.server == ServerState::Active || !matches!(entry.recovery, Recovery::Idle);
        if follows || !checked {
            entry.position = Some((seq, epoch.to_owned()));
            return true;
        }
        // Held back: the recovery's replay delivers it in order.
        entry.ahead = Some((seq, epoch.to_owned()));
        if matches!(entry.recovery, Recovery::Idle) {
            entry.schedule(now_ms, random, schedule);
        }
        false
    }

    /// The recovery timer of `topic` fired: returns the position to resubscribe from (send
    /// `unsubscribe`, then `subscribe` with this `since`), or `None` when there is nothing
    /// to do any more (topic gone, socket closed, or caught up meanwhile).
    pub fn recover_now(&mut self, topic: &str) -> Option<(u64, String)> {
        let open = self.open;
        let entry = self.entries.get_mut(topic)?;
        if !matches!(entry.recovery, Recovery::Scheduled(_)) {
            return None;
        }
        entry.recovery = Recovery::Idle;
        if !open || entry.server != ServerState::Active || entry.caught_up() {
            return None;
        }
        let since = entry.position.clone()?;
        entry.recovery = Recovery::InFlight;
        entry.server = ServerState::Requested;
        entry.invalidate_on_ack = true;
        Some(since)
    }

    /// The socket is gone: nothing is subscribed on the server any more.
    pub fn on_close(&mut self) {
        self.open = false;
        self.stale_acks.clear();
        for entry in self.entries.values_mut() {
            entry.server = ServerState::Unsent;
            entry.invalidate_on_ack = false;
            // The reconnect resubscribes from the last delivered position.
            entry.recovery = Recovery::Idle;
            entry.ahead = None;
        }
    }

    /// The server acknowledged `subscribe` for `topic`; `recovered` is the ack's field (only
    /// present when the subscribe carried `since`). When the ack ends a recovery whose replay
    /// fell short of an event held back, another recovery is scheduled as in
    /// [`TopicSet::on_event`].
    ///
    /// `position` is the ack's (when the subscribe asked for it): every later event follows
    /// it, so it becomes the topic's position (a topic without events included: a reconnect
    /// then resumes it without invalidating). A read stamp kept for the topic is compared
    /// with it ([`Acked::resubscribe`]).
    #[allow(clippy::too_many_arguments)]
    pub fn on_subscribed(
        &mut self,
        topic: &str,
        recovered: Option<bool>,
        position: Option<(u64, String)>,
        now_ms: f64,
        random: f64,
        schedule: impl FnOnce(f64) -> T,
    ) -> Option<Acked<R>> {
        if let Some(pos) = self.stale_acks.iter().position(|(t, _)| t == topic) {
            let n = &mut self.stale_acks[pos].1;
            *n -= 1;
            if *n == 0 {
                self.stale_acks.swap_remove(pos);
            }
            return None;
        }
        let entry = self.entries.get_mut(topic)?;
        if entry.server != ServerState::Requested {
            return None;
        }
        entry.server = ServerState::Active;
        let recovering = matches!(entry.recovery, Recovery::InFlight);
        entry.recovery = Recovery::Idle;
        if recovered == Some(false) || (recovering && recovered.is_none()) {
            // The server replayed nothing: the next event starts the position afresh (or
            // follows the ack's), and whatever was held back is covered by the invalidation
            // below.
            entry.position = position.clone();
            entry.ahead = None;
        } else if let Some(at) = position.clone().filter(|_| recovered != Some(true)) {
            // A plain subscribe: events after the ack's position follow.
            entry.position = Some(at);
            entry.ahead = None;
        } else if recovering && !entry.caught_up() {
            // Recovered, yet short of an event already seen: try again, paced.
            entry.schedule(now_ms, random, schedule);
        } else {
            entry.ahead = None;
        }
        // Recovered: the missed events came before this ack, the queries are up to date.
        let mut invalidate =
            std::mem::take(&mut entry.invalidate_on_ack) && recovered != Some(true);
        let mut resubscribe = None;
        if let Some(stamp) = entry.stamp.take() {
            match entry.compare_stamp(stamp) {
                StampAction::None => {}
                StampAction::Invalidate => invalidate = true,
                StampAction::Resubscribe(since) => resubscribe = Some(since),
            }
        }
        Some(Acked {
            ready: entry.waiting.drain(..).map(|(_, r)| r).collect(),
            invalidate,
            resubscribe,
        })
    }

    /// A read of `topic`'s data was stamped at (`seq`, `epoch`) (the response's
    /// `tidings-positions` header): decides whether events after the read may be missing
    /// from what the subscription delivers.
    pub fn on_stamp(&mut self, topic: &str, seq: u64, epoch: &str) -> StampAction {
        let stamp = (seq, epoch.to_owned());
        let open = self.open;
        let Some(entry) = self.entries.get_mut(topic) else {
            self.pending_stamps.retain(|(t, _)| t != topic);
            if self.pending_stamps.len() >= MAX_PENDING_STAMPS {
                self.pending_stamps.remove(0);
            }
            self.pending_stamps.push((topic.to_owned(), stamp));
            return StampAction::None;
        };
        entry.stamped = true;
        match entry.server {
            ServerState::Active if open && matches!(entry.recovery, Recovery::Idle) => {
                entry.compare_stamp(stamp)
            }
            // Not subscribed yet (socket down): the subscribe resumes from the read.
            ServerState::Unsent if entry.position.is_none() => {
                entry.position = Some(stamp);
                StampAction::None
            }
            // Compared when the ack comes; the lowest of several reads is kept.
            _ => {
                entry.stamp = match entry.stamp.take() {
                    Some(old) if old.1 == stamp.1 && old.0 < stamp.0 => Some(old),
                    _ => Some(stamp),
                };
                StampAction::None
            }
        }
    }

    /// Whether a read stamp was noted for `topic` since it got listeners.
    pub fn is_stamped(&self, topic: &str) -> bool {
        self.entries.get(topic).is_some_and(|e| e.stamped)
    }

    /// The server refused `topic` with an error reply: returns the handles to reject.
    pub fn on_refused(&mut self, topic: &str) -> Vec<R> {
        match self.entries.get_mut(topic) {
            Some(entry) => entry.waiting.drain(..).map(|(_, r)| r).collect(),
            None => Vec::new(),
        }
    }

    /// The server ended `topic`'s subscription by itself (a refreshed token no longer allows
    /// it): the topic and its listeners are dropped, so no reconnect resubscribes it. Returns
    /// the unsettled ready handles to reject, or `None` when the topic was not held.
    pub fn on_ended(&mut self, topic: &str) -> Option<Vec<R>> {
        let entry = self.entries.remove(topic)?;
        Some(entry.waiting.into_iter().map(|(_, r)| r).collect())
    }

    /// The listeners of `topic` (none for an unknown topic).
    pub fn listeners(&self, topic: &str) -> impl Iterator<Item = &L> {
        self.entries
            .get(topic)
            .into_iter()
            .flat_map(|e| e.listeners.iter().map(|(_, l)| l))
    }

    /// The presence `topic`'s subscription asks for (`None` for a topic without listeners).
    pub fn presence(&self, topic: &str) -> Presence {
        self.entries
            .get(topic)
            .map(Entry::presence)
            .unwrap_or_default()
    }

    /// The server state of `topic`, if it has listeners.
    pub fn state(&self, topic: &str) -> Option<ServerState> {
        self.entries.get(topic).map(|e| e.server)
    }

    /// The topics that have listeners, in name order.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Drops everything (the client closed); returns the unsettled ready handles.
    pub fn clear(&mut self) -> Vec<R> {
        self.stale_acks.clear();
        std::mem::take(&mut self.entries)
            .into_values()
            .flat_map(|e| e.waiting.into_iter().map(|(_, r)| r))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The "timer" of a scheduled recovery is its delay, so tests can read it.
    type Set = TopicSet<&'static str, &'static str, f64>;

    impl Set {
        fn event(&mut self, topic: &str, seq: Option<u64>, epoch: Option<&str>) -> bool {
            self.event_at(topic, seq, epoch, 0.0)
        }

        fn event_at(
            &mut self,
            topic: &str,
            seq: Option<u64>,
            epoch: Option<&str>,
            now: f64,
        ) -> bool {
            self.on_event(topic, seq, epoch, now, 0.5, |delay| delay)
        }

        fn ack(&mut self, topic: &str, recovered: Option<bool>) -> Option<Acked<&'static str>> {
            self.ack_at(topic, recovered, 0.0)
        }

        fn ack_at(
            &mut self,
            topic: &str,
            recovered: Option<bool>,
            now: f64,
        ) -> Option<Acked<&'static str>> {
            self.on_subscribed(topic, recovered, None, now, 0.5, |delay| delay)
        }

        /// A `subscribed` ack with a position.
        fn ack_pos(
            &mut self,
            topic: &str,
            recovered: Option<bool>,
            seq: u64,
            epoch: &str,
        ) -> Option<Acked<&'static str>> {
            self.on_subscribed(
                topic,
                recovered,
                Some((seq, epoch.to_owned())),
                0.0,
                0.5,
                |delay| delay,
            )
        }

        /// The delay of the recovery scheduled on `topic`, if one is.
        fn scheduled(&self, topic: &str) -> Option<f64> {
            match self.entries.get(topic)?.recovery {
                Recovery::Scheduled(delay) => Some(delay),
                _ => None,
            }
        }
    }

    #[test]
    fn listeners_share_one_server_subscription() {
        let mut s = Set::new();
        s.on_open(false);
        let a = s.add("list:1", "a", "ra");
        assert!(a.send_subscribe);
        let b = s.add("list:1", "b", "rb");
        assert!(!b.send_subscribe, "second listener reuses the subscription");
        assert_eq!(
            s.listeners("list:1").copied().collect::<Vec<_>>(),
            ["a", "b"]
        );

        let ack = s.ack("list:1", None).unwrap();
        assert_eq!(ack.ready, ["ra", "rb"]);
        assert!(!ack.invalidate);
        // A third listener on an active topic is ready at once.
        let c = s.add("list:1", "c", "rc");
        assert_eq!(c.ready_now, Some("rc"));
        assert!(!c.send_subscribe);

        assert!(!s.remove(a.id).unwrap().send_unsubscribe);
        assert!(!s.remove(c.id).unwrap().send_unsubscribe);
        let last = s.remove(b.id).unwrap();
        assert!(last.send_unsubscribe, "last listener leaves");
        assert_eq!(last.topic, "list:1");
        assert_eq!(s.topics().count(), 0);
        assert!(s.remove(b.id).is_none(), "removing twice is a no-op");
    }

    #[test]
    fn offline_changes_are_applied_on_open() {
        let mut s = Set::new();
        let a = s.add("list:1", "a", "ra");
        let b = s.add("gifts:all", "b", "rb");
        let c = s.add("occasion:2", "c", "rc");
        assert!(!a.send_subscribe && !b.send_subscribe && !c.send_subscribe);
        let removed = s.remove(c.id).unwrap();
        assert!(!removed.send_unsubscribe, "nothing to undo on the server");
        assert_eq!(removed.unsettled, Some("rc"));
        assert_eq!(
            s.on_open(false),
            [("gifts:all".to_owned(), None), ("list:1".to_owned(), None)]
        );
        assert_eq!(s.state("list:1"), Some(ServerState::Requested));
    }

    #[test]
    fn reconnect_resubscribes_and_invalidates_once() {
        let mut s = Set::new();
        s.on_open(false);
        s.add("list:1", "a", "ra");
        s.ack("list:1", None).unwrap();
        s.on_close();
        assert_eq!(s.state("list:1"), Some(ServerState::Unsent));
        let b = s.add("list:1", "b", "rb");
        assert_eq!(b.ready_now, None, "not ready while disconnected");
        assert_eq!(s.on_open(true), [("list:1".to_owned(), None)]);
        let ack = s.ack("list:1", None).unwrap();
        assert!(ack.invalidate);
        assert_eq!(ack.ready, ["rb"]);
        assert!(s.ack("list:1", None).is_none(), "duplicate ack ignored");
    }

    #[test]
    fn stale_ack_does_not_settle_a_newer_request() {
        let mut s = Set::new();
        s.on_open(false);
        let a = s.add("list:1", "a", "ra");
        assert!(s.remove(a.id).unwrap().send_unsubscribe);
        let b = s.add("list:1", "b", "rb");
        assert!(b.send_subscribe);
        // Acks arrive in request order: subscribed (for a), unsubscribed, subscribed (for b).
        assert!(s.ack("list:1", None).is_none());
        assert_eq!(s.ack("list:1", None).unwrap().ready, ["rb"]);
    }

    #[test]
    fn refusal_and_clear_hand_back_unsettled_handles() {
        let mut s = Set::new();
        s.on_open(false);
        s.add("list:1", "a", "ra");
        s.add("list:2", "b", "rb");
        assert_eq!(s.on_refused("list:1"), ["ra"]);
        assert!(s.on_refused("nope").is_empty());
        assert_eq!(s.clear(), ["rb"]);
        assert_eq!(s.topics().count(), 0);
    }

    #[test]
    fn a_topic_the_server_ended_is_dropped_and_not_resubscribed() {
        let mut s = Set::new();
        s.on_open(false);
        let a = s.add("list:1", "a", "ra");
        s.add("list:2", "b", "rb");
        s.ack("list:1", None).unwrap();
        assert_eq!(s.on_ended("list:1"), Some(vec![]));
        assert_eq!(s.on_ended("list:2"), Some(vec!["rb"]));
        assert_eq!(s.on_ended("list:3"), None);
        assert_eq!(s.listeners("list:1").count(), 0);
        // The app's later unsubscribe is a no-op, and a reconnect resubscribes nothing.
        assert!(s.remove(a.id).is_none());
        s.on_close();
        assert!(s.on_open(true).is_empty());
    }

    #[test]
    fn reconnect_resumes_from_the_last_position_and_drops_duplicates() {
        let mut s = Set::new();
        s.on_open(false);
        s.add("list:1", "a", "ra");
        s.ack("list:1", None).unwrap();
        assert!(s.event("list:1", Some(1), Some("e")));
        assert!(s.event("list:1", Some(2), Some("e")));
        assert!(!s.event("list:1", Some(2), Some("e")), "duplicate");
        assert!(
            s.event("list:1", None, None),
            "a position-less event is delivered"
        );
        s.on_close();
        assert_eq!(
            s.on_open(true),
            [("list:1".to_owned(), Some((2, "e".to_owned())))]
        );
        // The replay (3) and a duplicate of it (2) before the ack: 2 is dropped.
        assert!(!s.event("list:1", Some(2), Some("e")));
        assert!(s.event("list:1", Some(3), Some("e")));
        let ack = s.ack("list:1", Some(true)).unwrap();
        assert!(!ack.invalidate, "recovered: nothing to refetch");
    }

    #[test]
    fn failed_recovery_invalidates_and_starts_over() {
        let mut s = Set::new();
        s.on_open(false);
        s.add("list:1", "a", "ra");
        s.ack("list:1", None).unwrap();
        assert!(s.event("list:1", Some(7), Some("old")));
        s.on_close();
        s.on_open(true);
        assert!(s.ack("list:1", Some(false)).unwrap().invalidate);
        // The new epoch numbers from 1 again and is delivered.
        assert!(s.event("list:1", Some(1), Some("new")));
        // A topic without a position after a reconnect invalidates (the old behaviour).
        s.add("list:2", "b", "rb");
        s.ack("list:2", None).unwrap();
        s.on_close();
        let open = s.on_open(true);
        assert_eq!(open[1], ("list:2".to_owned(), None));
        assert!(s.ack("list:2", None).unwrap().invalidate);
    }

    /// A topic acknowledged on an open socket, with events 1..=`last` of epoch `epoch` delivered.
    fn active(topic: &str, last: u64, epoch: &str) -> Set {
        let mut s = Set::new();
        s.on_open(false);
        s.add(topic, "a", "ra");
        s.ack(topic, None).unwrap();
        for seq in 1..=last {
            assert!(s.event(topic, Some(seq), Some(epoch)));
        }
        s
    }

    #[test]
    fn a_gap_holds_events_back_until_the_replay_delivers_them_in_order() {
        let mut s = active("list:1", 2, "e");
        // 3 and 4 were lost on the way: 5 reveals the gap and is not delivered.
        assert!(!s.event("list:1", Some(5), Some("e")));
        assert_eq!(
            s.scheduled("list:1"),
            Some(0.0),
            "the first recovery is immediate"
        );
        // Later live events are held back too, and no second recovery is scheduled.
        assert!(!s.event("list:1", Some(6), Some("e")));
        assert_eq!(s.scheduled("list:1"), Some(0.0));
        // The timer fires: resubscribe from the last DELIVERED position.
        assert_eq!(s.recover_now("list:1"), Some((2, "e".to_owned())));
        assert_eq!(s.state("list:1"), Some(ServerState::Requested));
        assert_eq!(s.recover_now("list:1"), None, "one recovery in flight");
        // A live event still queued before the server read the unsubscribe: held back.
        assert!(!s.event("list:1", Some(7), Some("e")));
        assert_eq!(s.scheduled("list:1"), None, "not while one is in flight");
        // The replay: everything after 2, in order, each once.
        for seq in 3..=7 {
            assert!(s.event("list:1", Some(seq), Some("e")), "replayed {seq}");
        }
        assert!(!s.event("list:1", Some(5), Some("e")), "duplicate");
        let ack = s.ack("list:1", Some(true)).unwrap();
        assert!(!ack.invalidate, "recovered: nothing to refetch");
        assert_eq!(s.scheduled("list:1"), None);
        assert_eq!(s.state("list:1"), Some(ServerState::Active));
        assert!(s.event("list:1", Some(8), Some("e")), "live again");
        // Position-less events (a seed server) are never held back.
        assert!(s.event("list:1", None, None));
    }

    #[test]
    fn an_epoch_change_recovers_invalidates_once_then_delivers_the_new_epoch() {
        let mut s = active("list:1", 7, "old");
        assert!(!s.event("list:1", Some(1), Some("new")));
        assert!(!s.event("list:1", Some(2), Some("new")));
        assert_eq!(s.recover_now("list:1"), Some((7, "old".to_owned())));
        assert!(
            !s.event("list:1", Some(3), Some("new")),
            "held until the ack"
        );
        // The old epoch cannot be recovered.
        let ack = s.ack("list:1", Some(false)).unwrap();
        assert!(ack.invalidate, "told once");
        assert_eq!(s.scheduled("list:1"), None, "and nothing more to recover");
        assert!(s.event("list:1", Some(4), Some("new")));
        assert!(s.event("list:1", Some(5), Some("new")));
        assert!(!s.event("list:1", Some(5), Some("new")), "duplicate");
        assert_eq!(s.scheduled("list:1"), None);
    }

    #[test]
    fn duplicates_are_not_gaps() {
        let mut s = active("list:1", 5, "e");
        assert!(!s.event("list:1", Some(3), Some("e")));
        assert!(!s.event("list:1", Some(5), Some("e")));
        assert_eq!(s.scheduled("list:1"), None);
        assert!(s.event("list:1", Some(6), Some("e")));
    }

    #[test]
    fn a_replay_that_falls_short_recovers_again_with_a_growing_delay() {
        let mut s = active("list:1", 2, "e");
        assert!(!s.event("list:1", Some(9), Some("e")));
        let mut delays = vec![s.scheduled("list:1").unwrap()];
        // A server that keeps answering `recovered: true` without reaching 9: every ack
        // schedules another recovery, each further out (random 0.5 → half the window).
        for _ in 0..8 {
            assert!(s.recover_now("list:1").is_some());
            let ack = s.ack("list:1", Some(true)).unwrap();
            assert!(!ack.invalidate);
            delays.push(s.scheduled("list:1").expect("recovers again"));
        }
        assert_eq!(
            delays,
            [
                0.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 15_000.0, 15_000.0, 15_000.0
            ]
        );
        // Once the replay reaches it, the topic is healthy again.
        assert_eq!(s.recover_now("list:1"), Some((2, "e".to_owned())));
        for seq in 3..=9 {
            assert!(s.event("list:1", Some(seq), Some("e")));
        }
        s.ack("list:1", Some(true)).unwrap();
        assert_eq!(s.scheduled("list:1"), None);
    }

    #[test]
    fn the_recovery_backoff_starts_over_after_a_quiet_window() {
        let mut s = active("list:1", 1, "e");
        assert!(!s.event_at("list:1", Some(3), Some("e"), 1000.0));
        assert_eq!(s.scheduled("list:1"), Some(0.0));
        s.recover_now("list:1").unwrap();
        assert!(s.event_at("list:1", Some(2), Some("e"), 1010.0));
        assert!(s.event_at("list:1", Some(3), Some("e"), 1010.0));
        s.ack_at("list:1", Some(true), 1020.0).unwrap();
        // Another gap soon after: paced.
        assert!(!s.event_at("list:1", Some(5), Some("e"), 1100.0));
        assert_eq!(s.scheduled("list:1"), Some(500.0));
        s.recover_now("list:1").unwrap();
        assert!(s.event_at("list:1", Some(4), Some("e"), 1700.0));
        assert!(s.event_at("list:1", Some(5), Some("e"), 1700.0));
        s.ack_at("list:1", Some(true), 1700.0).unwrap();
        // A gap long after the last recovery (beyond its 2 s window): immediate again.
        assert!(!s.event_at("list:1", Some(7), Some("e"), 10_000.0));
        assert_eq!(s.scheduled("list:1"), Some(0.0));
    }

    #[test]
    fn a_gap_in_a_reconnect_replay_recovers_after_its_ack() {
        let mut s = active("list:1", 2, "e");
        s.on_close();
        assert_eq!(
            s.on_open(true),
            [("list:1".to_owned(), Some((2, "e".to_owned())))]
        );
        assert!(s.event("list:1", Some(3), Some("e")));
        assert!(
            !s.event("list:1", Some(5), Some("e")),
            "a hole in the replay"
        );
        assert_eq!(
            s.scheduled("list:1"),
            None,
            "the resubscribe is still in flight"
        );
        let ack = s.ack("list:1", Some(true)).unwrap();
        assert!(!ack.invalidate);
        assert!(s.scheduled("list:1").is_some(), "short of 5: recover again");
        assert_eq!(s.recover_now("list:1"), Some((3, "e".to_owned())));
    }

    #[test]
    fn a_plain_subscribe_in_flight_is_not_checked_for_gaps() {
        let mut s = Set::new();
        s.on_open(false);
        s.add("list:1", "a", "ra");
        // Events may come before the ack of a subscribe without `since`: a fresh stream.
        assert!(s.event("list:1", Some(40), Some("e")));
        assert!(s.event("list:1", Some(42), Some("e")));
        assert_eq!(s.scheduled("list:1"), None);
        s.ack("list:1", None).unwrap();
        assert!(
            !s.event("list:1", Some(44), Some("e")),
            "acknowledged: checked"
        );
        assert!(s.scheduled("list:1").is_some());
    }

    #[test]
    fn closing_or_leaving_cancels_a_recovery() {
        // Closed while scheduled: the timer is dropped; the reconnect resumes from the last
        // delivered position, not from the held-back event.
        let mut s = active("list:1", 2, "e");
        assert!(!s.event("list:1", Some(5), Some("e")));
        s.on_close();
        assert_eq!(s.scheduled("list:1"), None);
        assert_eq!(s.recover_now("list:1"), None);
        assert_eq!(
            s.on_open(true),
            [("list:1".to_owned(), Some((2, "e".to_owned())))]
        );
        // Every listener left while in flight: the ack is stale and nothing is recovered.
        let mut s = active("list:2", 2, "e");
        assert!(!s.event("list:2", Some(5), Some("e")));
        s.recover_now("list:2").unwrap();
        let removed = s.remove(1).unwrap();
        assert!(removed.send_unsubscribe);
        assert!(s.ack("list:2", Some(true)).is_none());
        assert_eq!(s.recover_now("list:2"), None);
        // Left while scheduled: the timer fires for nothing.
        let mut s = active("list:3", 2, "e");
        assert!(!s.event("list:3", Some(5), Some("e")));
        s.remove(1).unwrap();
        assert_eq!(s.recover_now("list:3"), None);
    }

    #[test]
    fn the_acks_position_is_resumed_from_after_a_reconnect() {
        let mut s = Set::new();
        s.on_open(false);
        s.add("occasion:1", "a", "ra");
        let ack = s.ack_pos("occasion:1", None, 0, "q").unwrap();
        assert!(!ack.invalidate && ack.resubscribe.is_none());
        s.on_close();
        // A topic that never had an event resumes from seq 0: no invalidation if recovered.
        assert_eq!(
            s.on_open(true),
            [("occasion:1".into(), Some((0, "q".into())))]
        );
        assert!(
            !s.ack_pos("occasion:1", Some(true), 0, "q")
                .unwrap()
                .invalidate
        );
        // The first event after the ack's position follows it; a skipped one is a gap.
        assert!(s.event("occasion:1", Some(1), Some("q")));
        assert!(!s.event("occasion:1", Some(3), Some("q")));
    }

    #[test]
    fn a_read_stamped_before_the_acks_position_resubscribes_from_the_stamp() {
        let mut s = Set::new();
        s.on_open(false);
        s.add("list:1", "a", "ra");
        // The read's response arrives before the ack: kept until then.
        assert_eq!(s.on_stamp("list:1", 4, "e"), StampAction::None);
        assert!(s.is_stamped("list:1"));
        // Event 5 was published after the read, before the subscription: not delivered.
        let ack = s.ack_pos("list:1", None, 5, "e").unwrap();
        assert_eq!(ack.resubscribe, Some((4, "e".into())));
        // The replay delivers event 5 (it follows the stamp), then the ack ends it.
        assert!(s.event("list:1", Some(5), Some("e")));
        let ack = s.ack_pos("list:1", Some(true), 5, "e").unwrap();
        assert!(!ack.invalidate && ack.resubscribe.is_none());
        // A stamp at or after the subscription's position needs nothing.
        assert_eq!(s.on_stamp("list:1", 5, "e"), StampAction::None);
        assert_eq!(s.on_stamp("list:1", 9, "e"), StampAction::None);
        // Behind it: resubscribe now; another epoch: invalidate.
        assert_eq!(
            s.on_stamp("list:1", 3, "e"),
            StampAction::Resubscribe((3, "e".into()))
        );
        assert!(s.event("list:1", Some(4), Some("e")));
        s.ack_pos("list:1", Some(true), 5, "e").unwrap();
        assert_eq!(s.on_stamp("list:1", 3, "other"), StampAction::Invalidate);
    }

    #[test]
    fn a_read_stamped_before_the_subscription_subscribes_from_it() {
        let mut s = Set::new();
        s.on_open(false);
        assert_eq!(s.on_stamp("list:2", 7, "e"), StampAction::None);
        let added = s.add("list:2", "a", "ra");
        assert!(added.send_subscribe);
        assert_eq!(added.since, Some((7, "e".into())));
        assert!(s.is_stamped("list:2"));
        // Not recovered (history too short): the queries are invalidated once.
        assert!(s.ack_pos("list:2", Some(false), 9, "e").unwrap().invalidate);
        // Stamps of topics never subscribed are bounded.
        for i in 0..(MAX_PENDING_STAMPS as u64 + 10) {
            s.on_stamp(&format!("t:{i}"), i, "e");
        }
        assert_eq!(s.pending_stamps.len(), MAX_PENDING_STAMPS);
    }

    #[test]
    fn a_topic_carries_the_highest_presence_of_its_listeners() {
        let mut s = Set::new();
        // Socket down: levels are only remembered (the open sends them).
        let plain = s.add("list:1", "a", "ra");
        let watch = s.add_with_presence("list:1", "w", "rw", Presence::Watch);
        assert_eq!(watch.resend, None);
        assert_eq!(s.presence("list:1"), Presence::Watch);
        s.on_open(false);
        s.ack_pos("list:1", None, 5, "e").unwrap();
        // The same level again: nothing to send.
        let watch2 = s.add_with_presence("list:1", "w2", "rw2", Presence::Watch);
        assert_eq!((watch2.resend, watch2.ready_now), (None, Some("rw2")));
        assert!(s.remove(watch2.id).unwrap().resend.is_none());
        // A join raises it: subscribe again from the position; the new listener waits for
        // that ack, which (recovered) invalidates nothing.
        let join = s.add_with_presence("list:1", "j", "rj", Presence::Join);
        assert_eq!(
            join.resend,
            Some(Resend {
                since: Some((5, "e".into()))
            })
        );
        assert_eq!(join.ready_now, None);
        assert_eq!(s.presence("list:1"), Presence::Join);
        let ack = s.ack_pos("list:1", Some(true), 5, "e").unwrap();
        assert_eq!(ack.ready, ["rj"]);
        assert!(!ack.invalidate);
        assert!(s.event("list:1", Some(6), Some("e")));
        // The join leaves: back to watch, from the new position.
        let removed = s.remove(join.id).unwrap();
        assert!(!removed.send_unsubscribe);
        assert_eq!(
            removed.resend,
            Some(Resend {
                since: Some((6, "e".into()))
            })
        );
        assert_eq!(s.presence("list:1"), Presence::Watch);
        // Not recovered: the topic's queries are invalidated once, as after a gap.
        assert!(s.ack_pos("list:1", Some(false), 9, "e").unwrap().invalidate);
        // The watcher leaves, a plain listener remains: none.
        assert!(s.remove(watch.id).unwrap().resend.is_some());
        assert_eq!(s.presence("list:1"), Presence::None);
        s.ack("list:1", Some(true));
        // The last listener: a plain unsubscribe.
        let last = s.remove(plain.id).unwrap();
        assert!(last.send_unsubscribe && last.resend.is_none());
        assert_eq!(s.presence("list:1"), Presence::None);
    }

    #[test]
    fn a_presence_change_before_the_ack_skips_the_old_ack() {
        let mut s = Set::new();
        s.on_open(false);
        let a = s.add("list:1", "a", "ra");
        assert!(a.send_subscribe);
        let j = s.add_with_presence("list:1", "j", "rj", Presence::Join);
        // No position yet: subscribe again without `since`.
        assert_eq!(j.resend, Some(Resend { since: None }));
        // The ack of the first request answers a subscribe that no longer stands.
        assert_eq!(s.ack_pos("list:1", None, 3, "e"), None);
        assert_eq!(s.state("list:1"), Some(ServerState::Requested));
        let ack = s.ack_pos("list:1", None, 3, "e").unwrap();
        assert_eq!(ack.ready, ["ra", "rj"]);
        assert!(ack.invalidate, "events between the two may be missed");
        assert_eq!(s.state("list:1"), Some(ServerState::Active));
        // The first listener to ask for presence on a new topic sends it with the subscribe.
        let w = s.add_with_presence("list:2", "w", "rw", Presence::Watch);
        assert!(w.send_subscribe && w.resend.is_none());
        assert_eq!(s.presence("list:2"), Presence::Watch);
        // A reconnect keeps the levels.
        s.on_close();
        assert_eq!(s.presence("list:1"), Presence::Join);
        let removed = s.remove(j.id).unwrap();
        assert_eq!(
            removed.resend, None,
            "socket down: the open sends the level"
        );
        assert_eq!(s.presence("list:1"), Presence::None);
    }
}
