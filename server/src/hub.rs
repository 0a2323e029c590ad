//! The hub: which connections of this node are subscribed to which topic, and the fan-out to
//! them. Numbering, history and recovery belong to the broker ([`crate::broker`]); the hub
//! keeps only, per topic, the position it last delivered.
//!
//! Topics are spread over [`SHARDS`] independently locked maps (by a hash of the topic name),
//! so subscribing on one topic never waits for a broadcast on another. A broker hands every
//! event in through one path, `Hub::deliver_to` (its [`Deliver`] side, with the event's
//! audience), as one serialized [`Utf8Bytes`]: the hub takes its shard's read lock and pushes
//! a clone of those bytes (a reference-count increment) into each subscriber's outbound queue
//! without ever waiting for a socket. A subscriber whose queue is full or closed is dead: it
//! is counted out and removed from the topic right after the broadcast, and its connection
//! closes (4003 for a full queue).
//!
//! Each event comes with its [`Audience`]: a subscriber it leaves out gets a `skipped` frame
//! (if it tracks positions) or nothing, and is not counted as delivered, live, held or
//! replayed alike (see [`crate::audience`]). An event for everyone takes no per-subscriber
//! check: every subscriber gets the same shared bytes.
//!
//! Recovery takes one path for every broker: the subscriber is parked as *pending* (live
//! events are held back for it), the broker's history is read (at once in memory, fetched from
//! Redis), then the replay and the held events are merged by `seq`
//! (`Hub::subscribe_pending`, `Hub::finish_pending`), so a concurrent publish reaches it
//! once, never twice, never not at all.
//!
//! The hub holds no global state: it is a cheap `Clone` handle that travels in the app's state
//! (inside [`Tidings`](crate::Tidings)).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tidings_protocol::{StreamPosition, Topic, WSEvent};

use crate::audience::{Audience, Skipped};
use crate::broker::{Broker, Deliver, Delivered, MemoryBroker, Recovery, base_text};
use crate::metrics::Metrics;
use crate::outbox::Outbox;

/// Number of independently locked topic maps.
pub const SHARDS: usize = 64;

/// Identifies one connection inside the hub.
pub(crate) type ConnId = u64;

/// Connection ids are handed out by the server (a counter), never chosen by a client, so a
/// fixed-key hasher is safe here; it makes each of a topic's two maps 16 bytes smaller than
/// with a per-map random seed (one topic per user is the common case, see [`TopicState`]).
type ConnHasher = BuildHasherDefault<DefaultHasher>;

/// A topic's live subscribers. A topic of a per-user design has exactly one, which is kept
/// inline: such a topic allocates nothing beyond its entry, where a `HashMap` would allocate a
/// table of four slots (84 bytes, 96 with the allocator's rounding) for it.
enum Subscribers {
    /// No subscriber, or one.
    Few(Option<(ConnId, Arc<Outbox>)>),
    /// Two or more (back to `Few` only when the topic empties).
    Many(HashMap<ConnId, Arc<Outbox>, ConnHasher>),
}

impl Subscribers {
    /// Adds `id`; returns the outbox it replaced, if it was there.
    fn insert(&mut self, id: ConnId, outbox: Arc<Outbox>) -> Option<Arc<Outbox>> {
        match self {
            Self::Few(slot @ None) => {
                *slot = Some((id, outbox));
                None
            }
            Self::Few(Some((one, old))) if *one == id => Some(std::mem::replace(old, outbox)),
            Self::Few(slot) => {
                let mut map = HashMap::with_capacity_and_hasher(2, ConnHasher::default());
                if let Some((one, old)) = slot.take() {
                    map.insert(one, old);
                }
                map.insert(id, outbox);
                *self = Self::Many(map);
                None
            }
            Self::Many(map) => map.insert(id, outbox),
        }
    }

    fn remove(&mut self, id: &ConnId) -> Option<Arc<Outbox>> {
        match self {
            Self::Few(slot) => match slot {
                Some((one, _)) if one == id => slot.take().map(|(_, outbox)| outbox),
                _ => None,
            },
            Self::Many(map) => {
                let removed = map.remove(id);
                if map.is_empty() {
                    *self = Self::Few(None);
                }
                removed
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Few(slot) => usize::from(slot.is_some()),
            Self::Many(map) => map.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn iter(&self) -> impl Iterator<Item = (&ConnId, &Arc<Outbox>)> {
        let (one, many) = match self {
            Self::Few(slot) => (slot.as_ref().map(|(id, outbox)| (id, outbox)), None),
            Self::Many(map) => (None, Some(map.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    fn values(&self) -> impl Iterator<Item = &Arc<Outbox>> {
        self.iter().map(|(_, outbox)| outbox)
    }
}
type Shard = RwLock<HashMap<Topic, TopicState>>;

/// One topic: its live subscribers, the ones waiting for a history fetch, and the position
/// this node last delivered.
///
/// A topic costs what it holds: the position is allocated with the first event delivered
/// here, a single subscriber is kept inline and the recovering ones get a map only while
/// there are any, so a topic followed by one subscriber that never sees an event costs this
/// entry (80 bytes with its name's `String`, plus the name's bytes and its share of the
/// shard's table), which is what one topic per connection (a per-user topic) multiplies. The
/// entry goes with its last subscriber.
struct TopicState {
    subscribers: Subscribers,
    /// Recovering subscribers: live events are held back for them until their replay.
    pending: Pendings,
    /// Held while an event of this topic is queued, so that every subscriber sees the events
    /// in `seq` order. `None` until the first event delivered here.
    position: Mutex<Option<Box<Position>>>,
}

/// A topic's recovering subscribers: none almost always, so the map is allocated (and the
/// entry holds more than a null pointer for it) only while a connection recovers on the topic.
#[derive(Default)]
#[expect(
    clippy::box_collection,
    reason = "a null pointer in every topic entry instead of an empty map's 32 bytes"
)]
struct Pendings(Option<Box<HashMap<ConnId, Pending, ConnHasher>>>);

impl Pendings {
    fn insert(&mut self, id: ConnId, pending: Pending) -> Option<Pending> {
        self.0.get_or_insert_with(Box::default).insert(id, pending)
    }

    fn remove(&mut self, id: &ConnId) -> Option<Pending> {
        let map = self.0.as_mut()?;
        let removed = map.remove(id);
        if map.is_empty() {
            self.0 = None;
        }
        removed
    }

    fn get(&self, id: &ConnId) -> Option<&Pending> {
        self.0.as_ref()?.get(id)
    }

    fn get_mut(&mut self, id: &ConnId) -> Option<&mut Pending> {
        self.0.as_mut()?.get_mut(id)
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |map| map.len())
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn iter(&self) -> impl Iterator<Item = (&ConnId, &Pending)> {
        self.0.iter().flat_map(|map| map.iter())
    }

    fn values(&self) -> impl Iterator<Item = &Pending> {
        self.iter().map(|(_, pending)| pending)
    }
}

struct Pending {
    outbox: Arc<Outbox>,
    /// Tells this parking apart from an earlier one of the same connection on the same topic
    /// (unsubscribed and subscribed again while the first fetch was in flight).
    ticket: u64,
    held: Mutex<Vec<(u64, Utf8Bytes)>>,
    /// `None` while the history is fetched (events are held). `Some(seq)` once replayed but
    /// this node's pub/sub had not yet caught up with the replay: events up to `seq` are
    /// already with the client and are skipped, later ones go straight to the outbox.
    floor: Option<u64>,
}

/// The last event of a topic delivered here.
struct Position {
    /// The stream it belongs to.
    epoch: Arc<str>,
    /// Its `seq` (0: forgotten, the next event is taken as the first).
    last_seq: u64,
}

/// One numbered event on its way to a topic's subscribers, with what a subscriber left out
/// of its audience gets instead (see [`crate::audience`]).
struct Outgoing<'a> {
    seq: u64,
    text: &'a Utf8Bytes,
    audience: &'a Audience,
    /// The `skipped` frame, made the first time a subscriber is left out.
    skipped: Skipped<'a>,
}

impl<'a> Outgoing<'a> {
    fn new(
        topic: &'a str,
        seq: u64,
        epoch: &'a str,
        text: &'a Utf8Bytes,
        audience: &'a Audience,
    ) -> Self {
        Self {
            seq,
            text,
            audience,
            skipped: Skipped::new(topic, seq, epoch),
        }
    }

    /// What `outbox`'s connection gets of the event, and whether it is the event itself (not
    /// a `skipped` frame). An event for everyone is the shared bytes, with no other check.
    fn frame_for(&mut self, outbox: &Outbox) -> Option<(Utf8Bytes, bool)> {
        if self.audience.is_everyone() {
            return Some((self.text.clone(), true));
        }
        self.audience
            .frame_for(outbox, self.text, &mut self.skipped)
    }
}

/// Counters kept as the maps change, so that reading them (every `/metrics` scrape) costs the
/// same with ten topics or a million.
#[derive(Debug, Default)]
struct Totals {
    /// Entries in the topic maps.
    topics: AtomicUsize,
    /// Entries that have no position yet (no event delivered here).
    unnumbered: AtomicUsize,
    /// (connection, topic) pairs, live or pending.
    subscriptions: AtomicUsize,
}

/// Topic → subscribed connections, and the broadcast (see the module docs).
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Shard]>,
    hasher: RandomState,
    next_id: AtomicU64,
    /// The server's counters (the hub is the one part every path reaches).
    metrics: Metrics,
    totals: Totals,
    /// Where events are numbered and kept; told which topics this node follows.
    broker: Arc<dyn Broker>,
    /// The same broker when it is the in-memory one: its history answers at once (no fetch
    /// task) and the sync [`Hub::publish`] can use it.
    memory: Option<Arc<MemoryBroker>>,
    /// Applies control commands from other nodes (disconnect, revoke) to this node's
    /// sessions; set once by the [`Tidings`](crate::Tidings) handle that owns the sessions.
    on_control: std::sync::OnceLock<crate::broker::OnControl>,
    /// Takes presence messages from other nodes (issue 15); set once by the
    /// [`Tidings`](crate::Tidings) handle when its presence is shared (Redis).
    on_presence: std::sync::OnceLock<Arc<dyn crate::broker::PresenceRelay>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("topics", &self.topic_count())
            .field("in_memory_broker", &self.inner.memory.is_some())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub whose events go through `broker`; `memory` is the same broker when it is the
    /// in-memory one.
    pub(crate) fn new(broker: Arc<dyn Broker>, memory: Option<Arc<MemoryBroker>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Shard::default()).collect(),
                hasher: RandomState::new(),
                next_id: AtomicU64::new(1),
                metrics: Metrics::default(),
                totals: Totals::default(),
                broker,
                memory,
                on_control: std::sync::OnceLock::new(),
                on_presence: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Where control commands from other nodes go ([`Deliver::control`]); the first call wins.
    pub(crate) fn set_on_control(&self, on_control: crate::broker::OnControl) {
        let _ = self.inner.on_control.set(on_control);
    }

    /// Where presence messages from other nodes go ([`Deliver::presence`]); the first call
    /// wins.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn set_on_presence(&self, relay: Arc<dyn crate::broker::PresenceRelay>) {
        let _ = self.inner.on_presence.set(relay);
    }

    /// Publishes `event` synchronously through the in-memory broker and returns how many
    /// local connections it was queued for: a shortcut for code that cannot await, **in-memory
    /// broker only**. The publish API for every broker is
    /// [`Tidings::publish`](crate::Tidings::publish) (it reports the event's position and
    /// whether the broker took it); prefer it.
    ///
    /// Never waits for a socket: the event is serialized once and queued on each subscriber's
    /// bounded outbound queue. A subscriber whose queue is full is not counted, is removed
    /// from the topic and is closed with 4003 (slow consumer). The event gets the topic's next
    /// `seq` and its `epoch` (whatever the caller set is replaced) and is recorded in the
    /// topic's history.
    ///
    /// With another broker (Redis) nothing can be awaited here: the publication is handed to
    /// a task (inside a tokio runtime), its failure is only logged, and the return value is
    /// the number of local subscribers at the time of the call.
    pub fn publish(&self, event: WSEvent) -> usize {
        let Ok(base) = base_text(&event) else {
            return 0;
        };
        if let Some(memory) = &self.inner.memory {
            return memory
                .publish_now(self, &event.topic, &base, &Audience::everyone())
                .delivered;
        }
        let broker = self.inner.broker.clone();
        let hub = self.clone();
        let topic = event.topic;
        let count = self.subscriber_count(topic.as_str());
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let everyone = Audience::everyone();
                    if let Err(e) = broker.publish(&hub, topic.clone(), base, everyone).await {
                        tracing::warn!(%topic, error = %e, "publish through the broker failed");
                    }
                });
                count
            }
            Err(_) => {
                tracing::error!(%topic, "Hub::publish with the Redis broker needs a tokio runtime");
                0
            }
        }
    }

    /// The entry of `topic` in a write-locked shard map, created (and counted) if missing.
    fn entry<'m>(
        &self,
        topics: &'m mut HashMap<Topic, TopicState>,
        topic: &Topic,
    ) -> &'m mut TopicState {
        topics.entry(topic.clone()).or_insert_with(|| {
            self.inner.totals.topics.fetch_add(1, Ordering::Relaxed);
            self.inner.totals.unnumbered.fetch_add(1, Ordering::Relaxed);
            self.inner.broker.follow(topic, true);
            TopicState::new()
        })
    }

    /// Delivers an event that the broker numbered (`seq`) and serialized (`text`) to the local
    /// subscribers of `topic`: the one way in for every broker. Events at or below the topic's
    /// last delivered `seq` are dropped (already delivered).
    ///
    /// A topic's position is known once this node delivered one of its events (`last_seq >
    /// 0`); before that, any event is taken as the first. A known topic whose events skip
    /// numbers lost some on the way: nothing is queued and [`Delivered::Gap`] asks the caller
    /// to replay the missing ones ([`Hub::repair`]) and hand this event in again. A known
    /// topic on which a new epoch starts past `seq` 1 lost events of both streams: its
    /// subscribers are closed with 1013 (reconnect, then recover with `since`).
    ///
    /// `audience`: who the event is for (the others get a `skipped` frame or nothing and are
    /// not counted).
    pub(crate) fn deliver_to(
        &self,
        topic: &str,
        seq: u64,
        epoch: &str,
        text: Utf8Bytes,
        audience: &Audience,
    ) -> Delivered {
        let span = tracing::debug_span!("deliver", topic, seq, delivered = tracing::field::Empty);
        let _entered = span.enter();
        let delivered = self.deliver_in_span(topic, seq, epoch, text, audience);
        if let Delivered::Queued(count) = delivered {
            span.record("delivered", count);
        }
        delivered
    }

    /// [`Hub::deliver_to`] every subscriber.
    #[cfg(test)]
    fn deliver(&self, topic: &str, seq: u64, epoch: &str, text: Utf8Bytes) -> Delivered {
        self.deliver_to(topic, seq, epoch, text, &Audience::everyone())
    }

    fn deliver_in_span(
        &self,
        topic: &str,
        seq: u64,
        epoch: &str,
        text: Utf8Bytes,
        audience: &Audience,
    ) -> Delivered {
        let shard = self.shard(topic);
        let (delivered, dead) = {
            let topics = read(shard);
            let Some(state) = topics.get(topic) else {
                return Delivered::Queued(0);
            };
            let mut slot = lock(&state.position);
            // The first event delivered here is taken as the start of a stream, whatever
            // its seq.
            let fresh = slot.is_none();
            if fresh {
                self.inner.totals.unnumbered.fetch_sub(1, Ordering::Relaxed);
            }
            let position = slot.get_or_insert_with(|| {
                Box::new(Position {
                    epoch: epoch.into(),
                    last_seq: 0,
                })
            });
            let known = position.last_seq > 0;
            let new_epoch = fresh || *position.epoch != *epoch;
            if new_epoch {
                // A new stream (Redis lost the topic's keys): numbering starts over.
                position.epoch = epoch.into();
                if known && seq > 1 {
                    tracing::warn!(
                        topic,
                        seq,
                        "a new epoch began with missed events; closing its subscribers"
                    );
                    position.last_seq = seq;
                    let dead = state.close_all();
                    drop(slot);
                    drop(topics);
                    self.remove_dead(shard, topic, &dead);
                    return Delivered::Queued(0);
                }
            } else if seq <= position.last_seq {
                return Delivered::Queued(0);
            } else if known && seq > position.last_seq + 1 {
                return Delivered::Gap(StreamPosition {
                    seq: position.last_seq,
                    epoch: epoch.to_owned(),
                });
            }
            position.last_seq = seq;
            // Only a change from an epoch this node delivered lifts the replay floors: the
            // first event a node sees of a topic is a "new" epoch here, and a subscriber that
            // recovered through the history up to this very event must not get it a second
            // time (issue 17's chaos test found it delivered twice).
            state.queue(
                Outgoing::new(topic, seq, epoch, &text, audience),
                new_epoch && known,
            )
        };
        self.remove_dead(shard, topic, &dead);
        Delivered::Queued(delivered)
    }

    fn remove_dead(&self, shard: &Shard, topic: &str, dead: &[ConnId]) {
        if dead.is_empty() {
            return;
        }
        tracing::debug!(topic, count = dead.len(), "removing dead subscribers");
        let mut topics = write(shard);
        if let Some(state) = topics.get_mut(topic) {
            for id in dead {
                self.forget_subscriber(state, *id);
            }
        }
        self.drop_if_unused(&mut topics, topic);
    }

    /// Removes connection `id` from `state` (live or pending), keeping the count right.
    fn forget_subscriber(&self, state: &mut TopicState, id: ConnId) {
        let removed = usize::from(state.subscribers.remove(&id).is_some())
            + usize::from(state.pending.remove(&id).is_some());
        self.inner
            .totals
            .subscriptions
            .fetch_sub(removed, Ordering::Relaxed);
    }

    /// Drops `topic` from a write-locked shard map when nobody here follows it, and tells the
    /// broker (shard lock held: the calls of one topic stay in order).
    fn drop_if_unused(&self, topics: &mut HashMap<Topic, TopicState>, topic: &str) {
        if topics.get(topic).is_some_and(TopicState::is_unused) {
            if let Some((topic, state)) = topics.remove_entry(topic) {
                if lock(&state.position).is_none() {
                    self.inner.totals.unnumbered.fetch_sub(1, Ordering::Relaxed);
                }
                self.inner.broker.follow(&topic, false);
            }
            self.inner.totals.topics.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// How many connections are subscribed to `topic`.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        read(self.shard(topic))
            .get(topic)
            .map_or(0, |s| s.subscribers.len() + s.pending.len())
    }

    /// How many connections subscribed to `topic` `audience` admits (all of them for
    /// everyone: no per-subscriber check then).
    pub(crate) fn admitted_count(&self, topic: &str, audience: &Audience) -> usize {
        if audience.is_everyone() {
            return self.subscriber_count(topic);
        }
        read(self.shard(topic)).get(topic).map_or(0, |s| {
            s.subscribers
                .values()
                .chain(s.pending.values().map(|p| &p.outbox))
                .filter(|outbox| audience.admits(outbox.peer()))
                .count()
        })
    }

    /// How many topics this node tracks: with local subscribers, or with a stream the
    /// in-memory broker holds. Maintained counters: O(1), whatever the topic count. (A topic
    /// subscribed to again while its stream is still held counts twice until its next event.)
    pub fn topic_count(&self) -> usize {
        match &self.inner.memory {
            Some(memory) => {
                self.inner.totals.unnumbered.load(Ordering::Relaxed) + memory.stream_count()
            }
            None => self.inner.totals.topics.load(Ordering::Relaxed),
        }
    }

    /// How many (connection, topic) subscriptions exist. A maintained counter: O(1).
    pub fn subscription_count(&self) -> usize {
        self.inner.totals.subscriptions.load(Ordering::Relaxed)
    }

    /// Bytes of event text held by the in-memory history of every topic (bounded by
    /// [`Config::with_history_max_total_bytes`](crate::Config::with_history_max_total_bytes));
    /// 0 with another broker.
    pub fn history_bytes(&self) -> usize {
        self.inner.memory.as_ref().map_or(0, |m| m.history_bytes())
    }

    /// How many topics hold in-memory history (bounded by
    /// [`Config::with_max_history_topics`](crate::Config::with_max_history_topics)); 0 with
    /// another broker.
    pub fn history_topic_count(&self) -> usize {
        self.inner
            .memory
            .as_ref()
            .map_or(0, |m| m.history_topic_count())
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The position of the last event published on `topic`, if the in-memory broker holds
    /// its stream (`None` too before its first event, and with another broker).
    pub fn position(&self, topic: &str) -> Option<StreamPosition> {
        self.inner.memory.as_ref()?.position(topic)
    }

    pub(crate) fn next_conn_id(&self) -> ConnId {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The broker when it is not the in-memory one: recovery needs a history fetch (a task),
    /// and a first subscriber waits until the broker carries the topic here.
    pub(crate) fn external_broker(&self) -> Option<&Arc<dyn Broker>> {
        match self.inner.memory {
            Some(_) => None,
            None => Some(&self.inner.broker),
        }
    }

    /// Whether `topic` has an entry here (with an external broker: a local subscriber, live
    /// or pending, so the broker must carry its events to this node).
    pub(crate) fn is_followed(&self, topic: &str) -> bool {
        read(self.shard(topic)).contains_key(topic)
    }

    /// Adds connection `id` to `topic` (idempotent).
    pub(crate) fn subscribe(&self, topic: &Topic, id: ConnId, outbox: &Arc<Outbox>) {
        let mut topics = write(self.shard(topic.as_str()));
        let state = self.entry(&mut topics, topic);
        if state.subscribers.insert(id, outbox.clone()).is_none() {
            self.inner
                .totals
                .subscriptions
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds connection `id` to `topic` and queues `ack(position)` so that every event after
    /// `position` reaches the connection after the ack and every one up to it was published
    /// before (a `subscribe` with `"position":true`). In memory the position is read and the
    /// connection added while the topic's stream is locked (no event can be numbered in
    /// between); with an external broker the caller parks and asks the broker instead.
    pub(crate) fn subscribe_with_position(
        &self,
        topic: &Topic,
        id: ConnId,
        outbox: &Arc<Outbox>,
        ack: impl FnOnce(StreamPosition) -> Utf8Bytes,
    ) {
        let Some(memory) = &self.inner.memory else {
            return;
        };
        memory.at_position(topic.as_str(), |position| {
            self.subscribe(topic, id, outbox);
            let _ = outbox.push(ack(position));
        });
    }

    /// The current position of `topic` in the in-memory broker (`seq` 0 in the quiet epoch
    /// when it has had no event); `None` with an external broker (ask it: `Broker::position`).
    pub(crate) fn memory_position(&self, topic: &str) -> Option<StreamPosition> {
        Some(self.inner.memory.as_ref()?.read_position(topic))
    }

    /// Subscribe with `since`, in-memory broker: the same park → read → merge as with any
    /// broker ([`Hub::subscribe_pending`], the broker's history read, [`Hub::finish_pending`]),
    /// in one step because the in-memory history answers at once. An event published meanwhile is
    /// held and merged by `seq`: no gap, no duplicate. Returns whether it recovered.
    pub(crate) fn subscribe_since(
        &self,
        topic: &Topic,
        id: ConnId,
        outbox: &Arc<Outbox>,
        since: &StreamPosition,
        ack: impl FnOnce(bool, Option<StreamPosition>) -> Utf8Bytes,
    ) -> bool {
        let ticket = self.subscribe_pending(topic, id, outbox);
        let recovery = self.inner.memory.as_ref().map_or_else(
            || Recovery {
                recovered: false,
                events: Vec::new(),
            },
            |memory| memory.recover(topic.as_str(), since),
        );
        // Read after parking: every event past it is held for the connection.
        let current = self.memory_position(topic.as_str());
        self.finish_pending(topic, id, ticket, Some(since), recovery, current, ack)
    }

    /// Subscribe with `since`, step 1: parks the connection as pending
    /// (live events are held back for it) until [`Hub::finish_pending`]. Returns the ticket
    /// that names this parking.
    pub(crate) fn subscribe_pending(&self, topic: &Topic, id: ConnId, outbox: &Arc<Outbox>) -> u64 {
        let ticket = self.next_conn_id();
        let mut topics = write(self.shard(topic.as_str()));
        let previous = self.entry(&mut topics, topic).pending.insert(
            id,
            Pending {
                outbox: outbox.clone(),
                ticket,
                held: Mutex::new(Vec::new()),
                floor: None,
            },
        );
        if previous.is_none() {
            self.inner
                .totals
                .subscriptions
                .fetch_add(1, Ordering::Relaxed);
        }
        ticket
    }

    /// Step 2: queues the replay from `recovery` (or nothing when it failed), the ack, then
    /// the held events the client does not already have, and makes the connection a live
    /// subscriber. Does nothing when the connection left the topic meanwhile (or parked on it
    /// again: another `ticket`).
    ///
    /// A replay that would take the connection's outbound queue past half its budget
    /// ([`Outbox::replay_fits`]) is not queued and the ack says `recovered: false`: the client
    /// refetches instead of being closed with 4003 on every attempt.
    ///
    /// "Already has" is everything up to `since_seq` (delivered by the node the client was on
    /// before; this node's pub/sub may lag behind it) and the replay. When this node has not
    /// yet delivered up to there itself, the connection keeps a floor below which live
    /// events are skipped.
    ///
    /// `ack` gets the `recovered` flag and the position the ack may carry: after a recovery the
    /// one it replayed up to (in `since`'s epoch); otherwise `current` (the topic's position
    /// read after parking, `None` when unknown).
    ///
    /// Returns the `recovered` it acked (`false` too when it did nothing).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn finish_pending(
        &self,
        topic: &Topic,
        id: ConnId,
        ticket: u64,
        since: Option<&StreamPosition>,
        mut recovery: Recovery,
        current: Option<StreamPosition>,
        ack: impl FnOnce(bool, Option<StreamPosition>) -> Utf8Bytes,
    ) -> bool {
        let since_seq = since.map_or(0, |s| s.seq);
        let mut topics = write(self.shard(topic.as_str()));
        let Some(state) = topics.get_mut(topic.as_str()) else {
            return false;
        };
        let node_seq = lock(&state.position).as_ref().map_or(0, |p| p.last_seq);
        let Some(pending) = state.pending.get_mut(&id) else {
            return false;
        };
        if pending.floor.is_some() || pending.ticket != ticket {
            return false;
        }
        let outbox = pending.outbox.clone();
        let bytes = recovery.events.iter().map(|(_, t, _)| t.len()).sum();
        if recovery.recovered && !outbox.replay_fits(recovery.events.len(), bytes) {
            tracing::debug!(%topic, events = recovery.events.len(), bytes, "replay over the outbound budget; not recovered");
            recovery = Recovery {
                recovered: false,
                events: Vec::new(),
            };
        }
        let recovered = recovery.recovered;
        // Not recovered: another epoch, whose numbers say nothing about what the client has.
        let mut last = if recovered { since_seq } else { 0 };
        let epoch = since.map_or("", |s| s.epoch.as_str());
        for (seq, text, audience) in recovery.events {
            last = last.max(seq);
            // The audience of a replayed event is honoured as it was live.
            let mut event = Outgoing::new(topic.as_str(), seq, epoch, &text, &audience);
            if let Some((frame, _)) = event.frame_for(&outbox) {
                let _ = outbox.push(frame);
            }
        }
        let position = match since {
            Some(since) if recovered => Some(StreamPosition {
                seq: last,
                epoch: since.epoch.clone(),
            }),
            _ => current,
        };
        let _ = outbox.push(ack(recovered, position));
        let held = std::mem::take(&mut *lock(&pending.held));
        for (seq, text) in held {
            // A held event the replay already contained (published before the fetch read
            // the history, announced after the connection was parked) is skipped.
            if seq > last {
                last = seq;
                let _ = outbox.push(text);
            }
        }
        if node_seq >= last {
            state.pending.remove(&id);
            state.subscribers.insert(id, outbox);
        } else {
            pending.floor = Some(last);
        }
        recovered
    }

    /// Removes connection `id` from `topic`; a topic left without subscribers is dropped.
    pub(crate) fn unsubscribe(&self, topic: &str, id: ConnId) {
        let mut topics = write(self.shard(topic));
        if let Some(state) = topics.get_mut(topic) {
            self.forget_subscriber(state, id);
        }
        self.drop_if_unused(&mut topics, topic);
    }

    /// Whether connection `id` is still parked on `topic` under `ticket` (its history fetch
    /// is still wanted).
    pub(crate) fn pending_is_current(&self, topic: &str, id: ConnId, ticket: u64) -> bool {
        read(self.shard(topic))
            .get(topic)
            .and_then(|state| state.pending.get(&id))
            .is_some_and(|pending| pending.ticket == ticket && pending.floor.is_none())
    }

    /// The delivered position of every topic with local subscribers (external broker):
    /// `seq` 0 when this node has not delivered any event of it yet.
    pub(crate) fn external_positions(&self) -> Vec<(Topic, StreamPosition)> {
        let mut out = Vec::new();
        for shard in &self.inner.shards {
            for (topic, state) in read(shard).iter() {
                if state.subscribers.is_empty() && state.pending.is_empty() {
                    continue;
                }
                let slot = lock(&state.position);
                out.push((
                    topic.clone(),
                    slot.as_ref().map_or_else(
                        || StreamPosition {
                            seq: 0,
                            epoch: String::new(),
                        },
                        |position| StreamPosition {
                            seq: position.last_seq,
                            epoch: position.epoch.to_string(),
                        },
                    ),
                ));
            }
        }
        out
    }

    /// Delivers the events the external broker's history holds after `from` (the topic's
    /// delivered position, see [`Delivered::Gap`]) to the local subscribers of `topic`, in
    /// order, as if they had arrived live. When the history could not cover them
    /// (`recovery.recovered` false), every subscriber of the topic is closed with 1013 (it
    /// reconnects and its `since` resubscribe answers whether it can still recover) and the
    /// topic's position is forgotten. A subscriber whose outbound queue cannot take the
    /// replay ([`Outbox::replay_fits`]) is closed the same way rather than with 4003. Does
    /// nothing when the topic moved past `from` meanwhile.
    pub(crate) fn repair(&self, topic: &str, from: &StreamPosition, recovery: Recovery) {
        let shard = self.shard(topic);
        let dead = {
            let topics = read(shard);
            let Some(state) = topics.get(topic) else {
                return;
            };
            let mut slot = lock(&state.position);
            let Some(position) = slot.as_mut() else {
                return;
            };
            if position.last_seq != from.seq || *position.epoch != *from.epoch {
                return;
            }
            if !recovery.recovered {
                tracing::warn!(
                    topic,
                    "missed events cannot be replayed; closing the topic's subscribers"
                );
                position.last_seq = 0;
                state.close_all()
            } else {
                let events: Vec<_> = recovery
                    .events
                    .into_iter()
                    .filter(|(seq, _, _)| *seq > from.seq)
                    .collect();
                let bytes = events.iter().map(|(_, t, _)| t.len()).sum();
                let mut dead = state.close_unfit(events.len(), bytes);
                for (seq, text, audience) in events {
                    position.last_seq = seq;
                    let event = Outgoing::new(topic, seq, &from.epoch, &text, &audience);
                    dead.extend(state.queue(event, false).1);
                }
                dead
            }
        };
        self.remove_dead(shard, topic, &dead);
    }

    /// Closes every subscriber of `topic` with 1013 and forgets its position: this node may
    /// have missed events of it that nothing can replay any more.
    pub(crate) fn abandon(&self, topic: &str) {
        let shard = self.shard(topic);
        let dead = {
            let topics = read(shard);
            let Some(state) = topics.get(topic) else {
                return;
            };
            if let Some(position) = lock(&state.position).as_mut() {
                position.last_seq = 0;
            }
            state.close_all()
        };
        self.remove_dead(shard, topic, &dead);
    }

    fn shard_index(&self, topic: &str) -> usize {
        let hash = self.inner.hasher.hash_one(topic);
        // Truncating the hash is fine: any bits pick a shard.
        hash as usize % self.inner.shards.len()
    }

    fn shard(&self, topic: &str) -> &Shard {
        &self.inner.shards[self.shard_index(topic)]
    }
}

impl TopicState {
    fn new() -> Self {
        Self {
            subscribers: Subscribers::Few(None),
            pending: Pendings::default(),
            position: Mutex::new(None),
        }
    }

    /// Nobody here listens: the entry can go.
    fn is_unused(&self) -> bool {
        self.subscribers.is_empty() && self.pending.is_empty()
    }

    /// Queues `text` for every subscriber (held back for pending ones); returns the count and
    /// the dead subscribers.
    ///
    /// `new_epoch`: the stream started over, so replay floors no longer apply.
    ///
    /// A subscriber left out of the event's audience gets its `skipped` frame (or nothing, see
    /// [`crate::audience`]) and is not counted.
    fn queue(&self, mut event: Outgoing<'_>, new_epoch: bool) -> (usize, Vec<ConnId>) {
        let seq = event.seq;
        let mut delivered = 0;
        let mut dead = Vec::new();
        for (id, outbox) in self.subscribers.iter() {
            let Some((text, is_event)) = event.frame_for(outbox) else {
                continue;
            };
            match outbox.push(text) {
                Ok(()) => delivered += usize::from(is_event),
                Err(_) => dead.push(*id),
            }
        }
        for (id, pending) in self.pending.iter() {
            let Some((text, is_event)) = event.frame_for(&pending.outbox) else {
                continue;
            };
            if let Some(floor) = pending.floor {
                if seq > floor || new_epoch {
                    match pending.outbox.push(text) {
                        Ok(()) => delivered += usize::from(is_event),
                        Err(_) => dead.push(*id),
                    }
                }
                continue;
            }
            let mut held = lock(&pending.held);
            // Bounded like the outbound queue itself: a pending subscriber that would
            // overflow it is as slow as a live one.
            if held.len() >= pending.outbox.capacity() {
                pending
                    .outbox
                    .close(tidings_protocol::CloseCode::SlowConsumer);
                dead.push(*id);
            } else {
                held.push((seq, text));
                delivered += usize::from(is_event);
            }
        }
        (delivered, dead)
    }
}

impl TopicState {
    /// Closes every subscriber, live or pending, with 1013 (reconnect and recover) and
    /// returns them, to be removed.
    fn close_all(&self) -> Vec<ConnId> {
        let code = tidings_protocol::CloseCode::TryAgainLater;
        let mut dead = Vec::new();
        for (id, outbox) in self.subscribers.iter() {
            outbox.close(code);
            dead.push(*id);
        }
        for (id, pending) in self.pending.iter() {
            pending.outbox.close(code);
            dead.push(*id);
        }
        dead
    }

    /// Before a repair replay of `count` events (`bytes`): closes with 1013 the subscribers
    /// that could not take it within half their outbound budget and returns them, to be
    /// removed (the replay skips them: pushing to a closed outbox fails).
    fn close_unfit(&self, count: usize, bytes: usize) -> Vec<ConnId> {
        let code = tidings_protocol::CloseCode::TryAgainLater;
        let mut dead = Vec::new();
        for (id, outbox) in self.subscribers.iter() {
            if !outbox.replay_fits(count, bytes) {
                outbox.close(code);
                dead.push(*id);
            }
        }
        for (id, pending) in self.pending.iter() {
            let fits = match pending.floor {
                Some(_) => pending.outbox.replay_fits(count, bytes),
                None => lock(&pending.held).len() + count <= pending.outbox.capacity() / 2,
            };
            if !fits {
                pending.outbox.close(code);
                dead.push(*id);
            }
        }
        dead
    }
}

// A panic while a shard is locked cannot leave a map half-updated (every critical section is
// a single map operation), so a poisoned lock is still safe to use.
fn read(shard: &Shard) -> RwLockReadGuard<'_, HashMap<Topic, TopicState>> {
    shard.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(shard: &Shard) -> RwLockWriteGuard<'_, HashMap<Topic, TopicState>> {
    shard.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The hub as the brokers see it: only the local subscribers' side of a topic.
impl Deliver for Hub {
    fn deliver(
        &self,
        topic: &str,
        seq: u64,
        epoch: &str,
        text: Utf8Bytes,
        audience: &Audience,
    ) -> Delivered {
        Hub::deliver_to(self, topic, seq, epoch, text, audience)
    }

    fn repair(&self, topic: &str, from: &StreamPosition, recovery: Recovery) {
        Hub::repair(self, topic, from, recovery);
    }

    fn abandon(&self, topic: &str) {
        Hub::abandon(self, topic);
    }

    fn external_positions(&self) -> Vec<(Topic, StreamPosition)> {
        Hub::external_positions(self)
    }

    fn is_followed(&self, topic: &str) -> bool {
        Hub::is_followed(self, topic)
    }

    fn subscriber_count(&self, topic: &str) -> usize {
        Hub::subscriber_count(self, topic)
    }

    fn admitted_count(&self, topic: &str, audience: &Audience) -> usize {
        Hub::admitted_count(self, topic, audience)
    }

    fn published(&self, delivered: usize, took: Duration) {
        self.inner.metrics.published(delivered, took);
    }

    fn control(&self, command: &[u8]) {
        if let Some(on_control) = self.inner.on_control.get() {
            on_control(command);
        }
    }

    fn presence(&self, message: &[u8]) {
        if let Some(relay) = self.inner.on_presence.get() {
            relay.message(message);
        }
    }

    fn presence_lost(&self) {
        if let Some(relay) = self.inner.on_presence.get() {
            relay.lost();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{HistoryLimits, with_position};
    use std::time::Instant;
    use tidings_protocol::{EventData, EventType, Payload};

    impl Hub {
        /// Sweeps the in-memory broker's every shard now (what its background sweep does over
        /// a second).
        fn sweep_all(&self, now: Instant) {
            let memory = self.inner.memory.clone().unwrap();
            memory.sweep_all(self, now);
        }
    }

    /// A topic entry is what one topic per connection multiplies (each entry also takes a
    /// slot of its shard's table): its size should stay a choice. Printed with `--nocapture`.
    #[test]
    fn a_topic_entry_stays_small() {
        let subscribers = std::mem::size_of::<Subscribers>();
        let state = std::mem::size_of::<TopicState>();
        println!("Subscribers {subscribers} B, TopicState {state} B");
        assert!(subscribers <= 32, "Subscribers is {subscribers} bytes");
        assert!(state <= 56, "TopicState is {state} bytes");
    }

    #[test]
    fn subscribers_go_from_one_inline_to_a_map_and_back() {
        let outbox = Arc::new(Outbox::new(4));
        let mut subs = Subscribers::Few(None);
        assert!(subs.is_empty());
        assert!(subs.insert(1, outbox.clone()).is_none());
        assert!(subs.insert(1, outbox.clone()).is_some());
        assert_eq!(subs.len(), 1);
        assert!(subs.insert(2, outbox.clone()).is_none());
        assert!(subs.insert(3, outbox.clone()).is_none());
        assert!(matches!(subs, Subscribers::Many(_)));
        let mut ids: Vec<ConnId> = subs.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3]);
        assert!(subs.remove(&2).is_some());
        assert!(subs.remove(&2).is_none());
        assert_eq!(subs.values().count(), 2);
        assert!(subs.remove(&1).is_some());
        assert!(subs.remove(&3).is_some());
        assert!(matches!(subs, Subscribers::Few(None)));
        assert!(subs.remove(&3).is_none());
    }

    /// A position in epoch `e1`.
    fn at(seq: u64) -> StreamPosition {
        StreamPosition {
            seq,
            epoch: "e1".into(),
        }
    }

    fn memory_hub(config: &crate::Config) -> Hub {
        let memory = Arc::new(MemoryBroker::new(HistoryLimits::from_config(config)));
        Hub::new(memory.clone(), Some(memory))
    }

    fn event(topic: &str) -> WSEvent {
        WSEvent::new(
            Topic::new(topic).unwrap(),
            EventType::Added,
            EventData {
                entity_id: "1".into(),
                payload: Payload::from_json(r#"{"n":1}"#.into()).unwrap(),
                user_id: "7".into(),
                timestamp: "2025-11-26T10:30:00Z".into(),
            },
        )
    }

    fn hub(size: usize, ttl: Duration) -> Hub {
        let config = crate::Config::new("s")
            .with_history_size(size)
            .with_history_ttl(ttl);
        memory_hub(&config)
    }

    fn drain(outbox: &Outbox) -> Vec<String> {
        let mut batch = std::collections::VecDeque::new();
        let _ = outbox.take_now(&mut batch);
        batch.iter().map(|t| t.to_string()).collect()
    }

    fn seqs(texts: &[String]) -> Vec<u64> {
        texts
            .iter()
            .filter_map(|t| serde_json::from_str::<WSEvent>(t).ok())
            .map(|e| e.seq.unwrap())
            .collect()
    }

    #[tokio::test]
    async fn fan_out_isolation_and_dead_subscribers() {
        let hub = hub(0, Duration::from_secs(60));
        let a = Arc::new(Outbox::new(1));
        let b = Arc::new(Outbox::new(8));
        let topic = Topic::new("list:1").unwrap();
        hub.subscribe(&topic, 1, &a);
        hub.subscribe(&topic, 1, &a);
        hub.subscribe(&topic, 2, &b);
        assert_eq!(hub.subscriber_count("list:1"), 2);
        assert_eq!(hub.publish(event("list:2")), 0);
        assert_eq!(hub.publish(event("list:1")), 2);
        // `a` holds one message: the next one overflows it and it is dropped from the topic.
        assert_eq!(hub.publish(event("list:1")), 1);
        assert_eq!(hub.subscriber_count("list:1"), 1);
        assert!(a.is_closed());
        hub.unsubscribe("list:1", 2);
        hub.sweep_all(Instant::now());
        assert_eq!(hub.topic_count(), 0);
    }

    #[test]
    fn events_are_numbered_and_publisher_positions_replaced() {
        let hub = hub(10, Duration::from_secs(60));
        let out = Arc::new(Outbox::new(16));
        let topic = Topic::new("list:1").unwrap();
        hub.subscribe(&topic, 1, &out);
        let mut forged = event("list:1");
        forged.seq = Some(99);
        forged.epoch = Some("forged".into());
        hub.publish(forged);
        hub.publish(event("list:1"));
        let texts = drain(&out);
        assert_eq!(seqs(&texts), [1, 2]);
        let first: WSEvent = serde_json::from_str(&texts[0]).unwrap();
        assert_eq!(
            first.position(),
            hub.position("list:1")
                .map(|p| StreamPosition { seq: 1, ..p })
        );
        assert!(!texts[0].contains("forged"));
    }

    #[test]
    fn replay_since_and_failures() {
        let hub = hub(3, Duration::from_secs(60));
        let topic = Topic::new("list:1").unwrap();
        for _ in 0..5 {
            hub.publish(event("list:1"));
        }
        let pos = hub.position("list:1").unwrap();
        assert_eq!(pos.seq, 5);
        let ack = |r: bool, _| Utf8Bytes::from(format!("ack {r}"));
        // History holds 3..=5: since 2 replays 3, 4, 5; since 1 is too old.
        let out = Arc::new(Outbox::new(16));
        let since = StreamPosition {
            seq: 2,
            ..pos.clone()
        };
        assert!(hub.subscribe_since(&topic, 1, &out, &since, ack));
        let texts = drain(&out);
        assert_eq!(seqs(&texts), [3, 4, 5]);
        assert_eq!(texts.last().unwrap(), "ack true");
        let out = Arc::new(Outbox::new(16));
        let since = StreamPosition {
            seq: 1,
            ..pos.clone()
        };
        assert!(!hub.subscribe_since(&topic, 2, &out, &since, ack));
        assert_eq!(drain(&out), ["ack false"]);
        // Up to date: nothing to replay, recovered.
        let out = Arc::new(Outbox::new(16));
        assert!(hub.subscribe_since(&topic, 3, &out, &pos, ack));
        assert_eq!(drain(&out), ["ack true"]);
        // Another epoch, or a seq from the future.
        let out = Arc::new(Outbox::new(16));
        let other = StreamPosition {
            seq: 4,
            epoch: "other".into(),
        };
        assert!(!hub.subscribe_since(&topic, 4, &out, &other, ack));
        let future = StreamPosition { seq: 9, ..pos };
        assert!(!hub.subscribe_since(&topic, 5, &out, &future, ack));
    }

    #[test]
    fn history_expires_and_the_topic_is_dropped() {
        let ttl = Duration::from_secs(60);
        let hub = hub(10, ttl);
        hub.publish(event("list:1"));
        let pos = hub.position("list:1").unwrap();
        hub.sweep_all(Instant::now());
        assert_eq!(hub.topic_count(), 1, "recent history keeps the topic");
        hub.sweep_all(Instant::now() + ttl * 2);
        assert_eq!(hub.topic_count(), 0);
        // The topic starts a new epoch: the old position cannot be recovered.
        let out = Arc::new(Outbox::new(16));
        let topic = Topic::new("list:1").unwrap();
        assert!(!hub.subscribe_since(&topic, 1, &out, &pos, |_, _| "ack".into()));
        assert_ne!(hub.position("list:1").map(|p| p.epoch), Some(pos.epoch));
    }

    #[test]
    fn pending_subscribers_merge_replay_and_held_events() {
        let hub = hub(0, Duration::from_secs(60));
        let topic = Topic::new("list:1").unwrap();
        let out = Arc::new(Outbox::new(16));
        let ticket = hub.subscribe_pending(&topic, 1, &out);
        let text = |seq: u64| Utf8Bytes::from(with_position(r#"{"x":1}"#, seq, "e"));
        // 2 (the client's position, received on another node) reaches this node late, then
        // 3..=5 arrive live while the history (3..=5) is fetched, then 6.
        for seq in 2..=6 {
            hub.deliver("list:1", seq, "e", text(seq));
        }
        assert!(drain(&out).is_empty(), "held back");
        let recovery = Recovery {
            recovered: true,
            events: (3..=5)
                .map(|s| (s, text(s), Audience::everyone()))
                .collect(),
        };
        // A stale ticket (an earlier parking) changes nothing.
        hub.finish_pending(
            &topic,
            1,
            ticket + 1,
            Some(&at(2)),
            recovery.clone(),
            None,
            |r, _| format!("ack {r}").into(),
        );
        assert!(hub.pending_is_current("list:1", 1, ticket));
        hub.finish_pending(&topic, 1, ticket, Some(&at(2)), recovery, None, |r, _| {
            format!("ack {r}").into()
        });
        assert!(!hub.pending_is_current("list:1", 1, ticket));
        hub.deliver("list:1", 7, "e", text(7));
        hub.deliver("list:1", 7, "e", text(7));
        // This node's pub/sub lags: the replay (up to 9) is ahead of what it delivered (7).
        let out2 = Arc::new(Outbox::new(16));
        let ticket2 = hub.subscribe_pending(&topic, 2, &out2);
        let recovery = Recovery {
            recovered: true,
            events: (8..=9)
                .map(|s| (s, text(s), Audience::everyone()))
                .collect(),
        };
        hub.finish_pending(&topic, 2, ticket2, Some(&at(7)), recovery, None, |r, _| {
            format!("ack {r}").into()
        });
        for seq in 8..=10 {
            hub.deliver("list:1", seq, "e", text(seq));
        }
        let got2 = drain(&out2);
        let want2: Vec<String> = [8, 9]
            .iter()
            .map(|s| text(*s).to_string())
            .chain(["ack true".to_owned(), text(10).to_string()])
            .collect();
        assert_eq!(got2, want2);
        let got = drain(&out);
        let want: Vec<String> = [3, 4, 5]
            .iter()
            .map(|s| text(*s).to_string())
            .chain(["ack true".to_owned()])
            .chain((6..=10).map(|s| text(s).to_string()))
            .collect();
        assert_eq!(got, want);
    }

    /// The `seq` of each text (any JSON object with one).
    fn positions(texts: &[String]) -> Vec<u64> {
        texts
            .iter()
            .map(|t| {
                serde_json::from_str::<serde_json::Value>(t).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    fn text(seq: u64, epoch: &str) -> Utf8Bytes {
        Utf8Bytes::from(with_position(r#"{"x":1}"#, seq, epoch))
    }

    fn replay(seqs: std::ops::RangeInclusive<u64>) -> Recovery {
        Recovery {
            recovered: true,
            events: seqs
                .map(|s| (s, text(s, "e"), Audience::everyone()))
                .collect(),
        }
    }

    #[test]
    fn gaps_are_reported_then_repaired_in_order() {
        let hub = hub(0, Duration::from_secs(60));
        let topic = Topic::new("list:1").unwrap();
        let out = Arc::new(Outbox::new(64));
        hub.subscribe(&topic, 1, &out);
        // No position yet: the first event is taken whatever its seq.
        assert_eq!(
            hub.deliver("list:1", 4, "e", text(4, "e")),
            Delivered::Queued(1)
        );
        assert_eq!(
            hub.deliver("list:1", 5, "e", text(5, "e")),
            Delivered::Queued(1)
        );
        // 6 and 7 were lost: 8 is held back and the gap reported from 5.
        let Delivered::Gap(from) = hub.deliver("list:1", 8, "e", text(8, "e")) else {
            panic!("gap not reported");
        };
        assert_eq!((from.seq, from.epoch.as_str()), (5, "e"));
        assert_eq!(positions(&drain(&out)), [4, 5]);
        hub.repair("list:1", &from, replay(4..=8));
        assert_eq!(
            hub.deliver("list:1", 8, "e", text(8, "e")),
            Delivered::Queued(0)
        );
        assert_eq!(
            hub.deliver("list:1", 9, "e", text(9, "e")),
            Delivered::Queued(1)
        );
        // A stale repair (the topic moved on) changes nothing.
        hub.repair("list:1", &from, replay(6..=9));
        assert_eq!(positions(&drain(&out)), [6, 7, 8, 9]);
        // A gap the history cannot cover: the subscribers are told to reconnect.
        let Delivered::Gap(from) = hub.deliver("list:1", 12, "e", text(12, "e")) else {
            panic!("gap not reported");
        };
        let lost = Recovery {
            recovered: false,
            events: Vec::new(),
        };
        hub.repair("list:1", &from, lost);
        assert_eq!(
            out.close_code(),
            Some(tidings_protocol::CloseCode::TryAgainLater)
        );
        assert_eq!(hub.subscriber_count("list:1"), 0);
    }

    #[test]
    fn a_repair_merges_with_a_recovering_subscriber() {
        let hub = hub(0, Duration::from_secs(60));
        let topic = Topic::new("list:1").unwrap();
        let live = Arc::new(Outbox::new(64));
        hub.subscribe(&topic, 1, &live);
        hub.deliver("list:1", 1, "e", text(1, "e"));
        // A client recovering from seq 1 is parked; 2..=4 are lost on the way to this node.
        let out = Arc::new(Outbox::new(64));
        let ticket = hub.subscribe_pending(&topic, 2, &out);
        let Delivered::Gap(from) = hub.deliver("list:1", 5, "e", text(5, "e")) else {
            panic!("gap not reported");
        };
        hub.repair("list:1", &from, replay(2..=5));
        hub.deliver("list:1", 5, "e", text(5, "e"));
        // Its own fetch read up to 6 (published meanwhile, not yet delivered here).
        hub.finish_pending(
            &topic,
            2,
            ticket,
            Some(&at(1)),
            replay(2..=6),
            None,
            |r, _| format!("{{\"seq\":0,\"ack\":{r}}}").into(),
        );
        hub.deliver("list:1", 6, "e", text(6, "e"));
        hub.deliver("list:1", 7, "e", text(7, "e"));
        assert_eq!(positions(&drain(&live)), (1..=7).collect::<Vec<_>>());
        assert_eq!(positions(&drain(&out)), [2, 3, 4, 5, 6, 0, 7]);
    }

    #[test]
    fn the_first_event_a_node_sees_respects_a_replay_floor() {
        // A node that has delivered nothing of the topic yet (just restarted, or its first
        // subscriber of it) parks a client recovering from 18; the history it reads already
        // holds 19, which reaches the node's pub/sub only afterwards (issue 17's chaos test
        // found it delivered twice).
        let hub = hub(0, Duration::from_secs(60));
        let topic = Topic::new("list:1").unwrap();
        let out = Arc::new(Outbox::new(64));
        let ticket = hub.subscribe_pending(&topic, 1, &out);
        hub.finish_pending(
            &topic,
            1,
            ticket,
            Some(&at(18)),
            replay(19..=19),
            None,
            |r, _| format!("{{\"seq\":0,\"ack\":{r}}}").into(),
        );
        hub.deliver("list:1", 19, "e", text(19, "e"));
        hub.deliver("list:1", 20, "e", text(20, "e"));
        assert_eq!(positions(&drain(&out)), [19, 0, 20]);
    }

    #[test]
    fn a_repair_over_a_subscribers_budget_closes_it_with_1013() {
        let hub = hub(0, Duration::from_secs(60));
        let topic = Topic::new("list:1").unwrap();
        let small = Arc::new(Outbox::new(8));
        let large = Arc::new(Outbox::new(64));
        hub.subscribe(&topic, 1, &small);
        hub.subscribe(&topic, 2, &large);
        hub.deliver("list:1", 1, "e", text(1, "e"));
        let Delivered::Gap(from) = hub.deliver("list:1", 10, "e", text(10, "e")) else {
            panic!("gap not reported");
        };
        hub.repair("list:1", &from, replay(2..=10));
        assert_eq!(
            small.close_code(),
            Some(tidings_protocol::CloseCode::TryAgainLater),
            "not 4003"
        );
        assert_eq!(positions(&drain(&large)), (1..=10).collect::<Vec<_>>());
        assert_eq!(hub.subscriber_count("list:1"), 1);
    }

    #[test]
    fn a_new_epoch_past_its_start_closes_a_known_topic() {
        let hub = hub(0, Duration::from_secs(60));
        let topic = Topic::new("list:1").unwrap();
        let out = Arc::new(Outbox::new(16));
        hub.subscribe(&topic, 1, &out);
        hub.deliver("list:1", 1, "e", text(1, "e"));
        // The stream started over normally: delivered.
        assert_eq!(
            hub.deliver("list:1", 1, "f", text(1, "f")),
            Delivered::Queued(1)
        );
        // It started over and events of it were missed: told.
        assert_eq!(
            hub.deliver("list:1", 3, "g", text(3, "g")),
            Delivered::Queued(0)
        );
        assert_eq!(
            out.close_code(),
            Some(tidings_protocol::CloseCode::TryAgainLater)
        );
        // A new subscriber takes the stream from there.
        let out2 = Arc::new(Outbox::new(16));
        hub.subscribe(&topic, 2, &out2);
        assert_eq!(
            hub.deliver("list:1", 4, "g", text(4, "g")),
            Delivered::Queued(1)
        );
        // abandon: closed, and the next event is taken as the first.
        hub.abandon("list:1");
        assert_eq!(
            out2.close_code(),
            Some(tidings_protocol::CloseCode::TryAgainLater)
        );
        let out3 = Arc::new(Outbox::new(16));
        hub.subscribe(&topic, 3, &out3);
        assert_eq!(
            hub.deliver("list:1", 9, "g", text(9, "g")),
            Delivered::Queued(1)
        );
    }

    #[test]
    fn a_replay_over_the_outbound_budget_is_not_recovered() {
        let hub = hub(0, Duration::from_secs(60));
        let topic = Topic::new("list:1").unwrap();
        let out = Arc::new(Outbox::new(8));
        let ticket = hub.subscribe_pending(&topic, 1, &out);
        hub.finish_pending(&topic, 1, ticket, None, replay(1..=5), None, |r, _| {
            format!("ack {r}").into()
        });
        assert_eq!(drain(&out), ["ack false"]);
        assert_eq!(out.close_code(), None);
        assert_eq!(hub.subscriber_count("list:1"), 1);
    }

    #[test]
    fn an_event_that_cannot_be_kept_leaves_no_hole_in_the_history() {
        let config = crate::Config::new("s")
            .with_history_size(10)
            .with_history_max_topic_bytes(2048);
        let hub = memory_hub(&config);
        let topic = Topic::new("list:1").unwrap();
        let small = event("list:1");
        let mut huge = event("list:1");
        huge.data.payload =
            Payload::from_json(format!(r#"{{"blob":"{}"}}"#, "x".repeat(4096))).unwrap();
        hub.publish(small.clone());
        hub.publish(small.clone());
        assert!(hub.history_bytes() > 0);
        hub.publish(huge);
        assert_eq!(hub.history_bytes(), 0, "history emptied, not holed");
        assert_eq!(hub.history_topic_count(), 0);
        hub.publish(small);
        assert_eq!(hub.history_topic_count(), 1);
        let pos = hub.position("list:1").unwrap();
        assert_eq!(pos.seq, 4);
        let ack = |r: bool, _| Utf8Bytes::from(format!("ack {r}"));
        // Across the huge event (seq 3): not recoverable. After it: recovered.
        let out = Arc::new(Outbox::new(16));
        let since = StreamPosition {
            seq: 2,
            ..pos.clone()
        };
        assert!(!hub.subscribe_since(&topic, 1, &out, &since, ack));
        let since = StreamPosition { seq: 3, ..pos };
        assert!(hub.subscribe_since(&topic, 2, &out, &since, ack));
        assert_eq!(hub.subscription_count(), 2);
        hub.unsubscribe("list:1", 1);
        hub.unsubscribe("list:1", 2);
        assert_eq!(hub.subscription_count(), 0);
        assert_eq!(hub.topic_count(), 1, "history keeps the topic");
    }

    /// The in-memory position of `topic` and its history after `since` (test shorthands).
    fn read_position(hub: &Hub, topic: &str) -> StreamPosition {
        hub.memory_position(topic).unwrap()
    }

    fn recover(hub: &Hub, topic: &str, since: &StreamPosition) -> Recovery {
        hub.inner.memory.as_ref().unwrap().recover(topic, since)
    }

    #[test]
    fn a_quiet_topic_has_a_position_its_first_event_continues() {
        let hub = hub(8, Duration::from_secs(60));
        let quiet = read_position(&hub, "occasion:1");
        assert_eq!(quiet.seq, 0);
        assert_eq!(hub.topic_count(), 0, "asking costs no entry");
        // Subscribed with its position: the ack is queued under the lock, events follow it.
        let out = Arc::new(Outbox::new(8));
        let topic = Topic::new("occasion:1").unwrap();
        hub.subscribe_with_position(&topic, 1, &out, |at| {
            Utf8Bytes::from(format!("ack {} {}", at.seq, at.epoch))
        });
        hub.publish(event("occasion:1"));
        let got = drain(&out);
        assert_eq!(got[0], format!("ack 0 {}", quiet.epoch));
        assert_eq!(seqs(&got[1..]), [1]);
        // The first event is seq 1 of the quiet epoch: a client at {0, quiet} is replayed it.
        assert_eq!(read_position(&hub, "occasion:1").epoch, quiet.epoch);
        let replayed = recover(&hub, "occasion:1", &quiet);
        assert!(replayed.recovered);
        assert_eq!(replayed.events.len(), 1);
        // Another quiet topic recovers from {0, quiet} with nothing to replay.
        let other = read_position(&hub, "occasion:2");
        assert!(recover(&hub, "occasion:2", &other).recovered);
    }

    #[test]
    fn forgetting_a_numbered_topic_invalidates_quiet_positions() {
        let hub = hub(8, Duration::from_secs(1));
        let quiet = read_position(&hub, "occasion:2");
        assert!(recover(&hub, "occasion:2", &quiet).recovered);
        hub.publish(event("list:1"));
        // list:1's history expires and its stream is dropped: it could start over at seq 1,
        // so "no event since {0, quiet}" can no longer be promised.
        hub.sweep_all(Instant::now() + Duration::from_secs(5));
        assert_eq!(hub.topic_count(), 0);
        assert!(!recover(&hub, "occasion:2", &quiet).recovered);
        assert!(!recover(&hub, "list:1", &quiet).recovered);
        let now = read_position(&hub, "list:1");
        assert_ne!(now.epoch, quiet.epoch);
        assert!(recover(&hub, "list:1", &now).recovered);
    }

    #[test]
    fn an_event_no_stream_keeps_invalidates_quiet_positions() {
        // No history at all: an event on a topic nobody here follows is numbered without a
        // stream, so a client told "no event yet" must not be told it missed nothing.
        let hub = hub(0, Duration::from_secs(60));
        let quiet = read_position(&hub, "occasion:3");
        hub.publish(event("occasion:3"));
        assert!(!recover(&hub, "occasion:3", &quiet).recovered);
    }

    #[test]
    fn a_topic_holds_a_stream_only_once_it_has_events() {
        let hub = hub(10, Duration::from_secs(60));
        let topic = Topic::new("list:1").unwrap();
        let out = Arc::new(Outbox::new(16));
        hub.subscribe(&topic, 1, &out);
        assert_eq!(hub.topic_count(), 1);
        assert_eq!(hub.position("list:1"), None, "no event, no stream");
        hub.publish(event("list:1"));
        let first = hub.position("list:1").unwrap();
        assert_eq!(first.seq, 1);
        // Without history the numbering goes on while the topic has a subscriber.
        hub.sweep_all(Instant::now() + Duration::from_secs(120));
        assert_eq!(hub.history_bytes(), 0);
        hub.publish(event("list:1"));
        assert_eq!(
            hub.position("list:1").unwrap(),
            StreamPosition { seq: 2, ..first }
        );
        hub.unsubscribe("list:1", 1);
        hub.sweep_all(Instant::now() + Duration::from_secs(120));
        assert_eq!(hub.topic_count(), 0);
    }

    /// Records what the hub asks an external broker to follow.
    #[derive(Default)]
    struct Follows(Mutex<Vec<(String, bool)>>);

    impl Broker for Follows {
        fn publish<'a>(
            &'a self,
            _hub: &'a dyn Deliver,
            _topic: Topic,
            _base: String,
            _audience: Audience,
        ) -> crate::broker::BoxFuture<'a, Result<crate::broker::Published, crate::BrokerError>>
        {
            Box::pin(async { Err(crate::BrokerError::Serialize) })
        }

        fn history<'a>(
            &'a self,
            _hub: &'a dyn Deliver,
            _topic: &'a Topic,
            _since: &'a StreamPosition,
            _bound: crate::broker::ReplayBound,
        ) -> crate::broker::BoxFuture<'a, Result<Recovery, crate::BrokerError>> {
            Box::pin(async {
                Ok(Recovery {
                    recovered: false,
                    events: Vec::new(),
                })
            })
        }

        fn degraded(&self) -> Option<String> {
            None
        }

        fn follow(&self, topic: &Topic, on: bool) {
            lock(&self.0).push((topic.to_string(), on));
        }
    }

    #[test]
    fn an_external_broker_follows_the_topics_with_local_subscribers() {
        let follows = Arc::new(Follows::default());
        let hub = Hub::new(follows.clone(), None);
        let topic = Topic::new("list:1").unwrap();
        let out = Arc::new(Outbox::new(16));
        hub.subscribe(&topic, 1, &out);
        hub.subscribe(&topic, 2, &out);
        let ticket = hub.subscribe_pending(&topic, 3, &out);
        assert!(hub.is_followed("list:1"));
        hub.unsubscribe("list:1", 1);
        hub.unsubscribe("list:1", 2);
        let nothing = Recovery {
            recovered: true,
            events: Vec::new(),
        };
        hub.finish_pending(&topic, 3, ticket, None, nothing, None, |_, _| "ack".into());
        hub.unsubscribe("list:1", 3);
        assert!(!hub.is_followed("list:1"));
        hub.subscribe(&topic, 1, &out);
        assert_eq!(
            *lock(&follows.0),
            [
                ("list:1".to_owned(), true),
                ("list:1".to_owned(), false),
                ("list:1".to_owned(), true)
            ]
        );
    }

    /// An outbox of user `user` that tracks positions (or not).
    fn peer_outbox(user: &str, tracks: bool) -> Arc<Outbox> {
        let out = Outbox::new(64).with_peer(crate::audience::Peer {
            user: user.into(),
            connection_id: None,
        });
        if tracks {
            out.track_positions();
        }
        Arc::new(out)
    }

    #[test]
    fn the_audience_applies_to_held_and_repaired_events() {
        let hub = hub(0, Duration::from_secs(60));
        let topic = Topic::new("list:1").unwrap();
        let not7 = Audience::everyone().exclude_users(["7"]);
        let seven = peer_outbox("7", true);
        let seed7 = peer_outbox("7", false);
        let eight = peer_outbox("8", true);
        hub.subscribe(&topic, 1, &seed7);
        hub.subscribe(&topic, 2, &eight);
        hub.deliver("list:1", 1, "e", text(1, "e"));
        // Held for a recovering subscriber: the skipped frame is what is held.
        let ticket = hub.subscribe_pending(&topic, 3, &seven);
        assert_eq!(
            hub.deliver_to("list:1", 2, "e", text(2, "e"), &not7),
            Delivered::Queued(1),
            "only 8 got the event"
        );
        let nothing_missed = Recovery {
            recovered: true,
            events: Vec::new(),
        };
        hub.finish_pending(
            &topic,
            3,
            ticket,
            Some(&at(1)),
            nothing_missed,
            None,
            |r, _| format!("{{\"seq\":0,\"ack\":{r}}}").into(),
        );
        let got = drain(&seven);
        assert_eq!(
            got[1], r#"{"action":"skipped","topic":"list:1","seq":2,"epoch":"e"}"#,
            "{got:?}"
        );
        // A repair replays with each event's audience.
        let Delivered::Gap(from) = hub.deliver("list:1", 4, "e", text(4, "e")) else {
            panic!("gap not reported");
        };
        let repaired = Recovery {
            recovered: true,
            events: vec![
                (3, text(3, "e"), not7.clone()),
                (4, text(4, "e"), Audience::everyone()),
            ],
        };
        hub.repair("list:1", &from, repaired);
        let got = drain(&seven);
        assert!(got[0].contains(r#""action":"skipped""#) && got[0].contains(r#""seq":3"#));
        assert_eq!(positions(&got), [3, 4]);
        // The seed client of user 7 never saw 2 or 3, and nothing in their place.
        assert_eq!(positions(&drain(&seed7)), [1, 4]);
        assert_eq!(positions(&drain(&eight)), [1, 2, 3, 4]);
    }
}
