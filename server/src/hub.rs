//! The hub: which connections are subscribed to which topic, each topic's stream position and
//! (with the in-memory broker) its recent history, and the broadcast itself.
//!
//! Topics are spread over [`SHARDS`] independently locked maps (by a hash of the topic name),
//! so subscribing on one topic never waits for a broadcast on another. A broadcast serializes
//! the event once into a shared [`Utf8Bytes`], takes its shard's read lock, and pushes a
//! clone of those bytes (a reference-count increment) into each subscriber's
//! outbound queue without ever waiting for a socket. A subscriber whose queue is full or closed is
//! dead: it is counted out and removed from the topic right after the broadcast, and its
//! connection closes (4003 for a full queue).
//!
//! Recovery: every event gets the next `seq` of its topic and the topic stream's `epoch`,
//! spliced into the JSON text once (see [`with_position`]). With the in-memory broker the hub
//! itself is the history: the same shared bytes go into a bounded per-topic ring (last
//! [`Config::with_history_size`](crate::Config::with_history_size) events, none older than
//! [`Config::with_history_ttl`](crate::Config::with_history_ttl)). With an external broker
//! (Redis) the history lives there. Either way a subscribe with `since` takes one path: the
//! subscriber is parked as *pending* (live events are held back for it), the history is read
//! (at once in memory, fetched from Redis), then the replay and the held events are merged by
//! `seq`, so a concurrent publish reaches it once, never twice, never not at all.
//!
//! The hub holds no global state: it is a cheap `Clone` handle that travels in the app's state
//! (inside [`Tidings`](crate::Tidings)).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use tidings_protocol::{StreamPosition, Topic, WSEvent};

use crate::audience::{Audience, Skipped};
use crate::broker::{Broker, Deliver, Delivered, HistoryLimits, Recovery, new_epoch};
use crate::metrics::Metrics;
use crate::outbox::Outbox;

/// Number of independently locked topic maps.
pub const SHARDS: usize = 64;

/// Identifies one connection inside the hub.
pub(crate) type ConnId = u64;

/// How often (at most) a shard is swept for topics whose history has expired and that have
/// no subscriber left.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Connection ids are handed out by the server (a counter), never chosen by a client, so a
/// fixed-key hasher is safe here; it makes each of a topic's two maps 16 bytes smaller than
/// with a per-map random seed (one topic per user is the common case, see [`TopicState`]).
type ConnHasher = BuildHasherDefault<DefaultHasher>;
type Subscribers = HashMap<ConnId, Arc<Outbox>, ConnHasher>;
type Shard = RwLock<HashMap<Topic, TopicState>>;

/// One topic: its live subscribers, the ones waiting for a history fetch, and its stream.
///
/// A topic costs what it holds: the stream (epoch, position, history ring) is allocated when
/// the topic's first event arrives and freed with the entry, so a topic followed by one
/// subscriber that never sees an event costs this entry plus a one-subscriber map (a few
/// hundred bytes), which is what one topic per connection (a per-user topic) multiplies.
struct TopicState {
    subscribers: Subscribers,
    /// Recovering subscribers: live events are held back for them until their replay.
    pending: HashMap<ConnId, Pending, ConnHasher>,
    /// Held while an event of this topic is numbered and queued, so that every subscriber
    /// sees the events in `seq` order. `None` until the topic's first event.
    stream: Mutex<Option<Box<Stream>>>,
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

/// A topic's stream position and (in-memory broker) its recent events.
///
/// Invariant: `history` is contiguous and ends at `last_seq`, or is empty. An event that cannot
/// be recorded empties it, so a recovery never replays around a hole.
struct Stream {
    epoch: Arc<str>,
    /// The `seq` of the last event (0: none yet).
    last_seq: u64,
    history: VecDeque<Entry>,
    /// What `history` is charged against the byte bounds (see [`cost`]).
    bytes: usize,
}

struct Entry {
    seq: u64,
    at: Instant,
    text: Utf8Bytes,
    /// Who the event is for: a replay honours it as the live delivery did.
    audience: Audience,
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

/// Counters kept as the maps change, so that reading them (every `/metrics` scrape, every
/// history bound check) costs the same with ten topics or a million.
#[derive(Debug, Default)]
struct Totals {
    /// Entries in the topic maps.
    topics: AtomicUsize,
    /// (connection, topic) pairs, live or pending.
    subscriptions: AtomicUsize,
    /// Bytes of event text in all histories.
    history_bytes: AtomicUsize,
    /// Topics whose history is not empty.
    history_topics: AtomicUsize,
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
    limits: HistoryLimits,
    totals: Totals,
    /// `None`: the in-memory broker (this hub numbers events and keeps their history).
    /// `Some`: events go through an external broker and come back through [`Hub::deliver_to`].
    external: Option<Arc<dyn Broker>>,
    /// The epoch of in-memory topics that have had no event (see [`QuietEpoch`]).
    quiet: QuietEpoch,
}

/// The epoch a position of an in-memory topic without events is given (`seq` 0), and a new
/// topic's stream starts in, so that a client that learnt "no event yet" recovers across a
/// reconnect without a refetch (`since` `{0, quiet}`).
///
/// It must change whenever a topic with events is forgotten (dropped when unused, after its
/// history expired): that topic starts over at `seq` 1 without a stream, and a client holding
/// the old quiet position of it would otherwise be told it missed nothing. One counter for the
/// whole hub (bumped under the dropped topic's shard lock, read under the reader's): coarse
/// but safe, a bump costs one refetch per quiet topic on the next reconnect, never a lost
/// event. A restarted process has another `boot`.
struct QuietEpoch {
    boot: String,
    generation: AtomicU64,
}

impl Inner {
    /// Whether `since` is the position of an in-memory topic that has had no event (nothing
    /// to replay).
    fn is_quiet(&self, since: &StreamPosition) -> bool {
        self.external.is_none() && since.seq == 0 && since.epoch == self.quiet.current()
    }
}

impl QuietEpoch {
    fn current(&self) -> String {
        format!(
            "{}-{:x}",
            self.boot,
            self.generation.load(Ordering::Relaxed)
        )
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("topics", &self.topic_count())
            .field("external_broker", &self.inner.external.is_some())
            .finish_non_exhaustive()
    }
}

impl Hub {
    pub(crate) fn new(limits: HistoryLimits, external: Option<Arc<dyn Broker>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Shard::default()).collect(),
                hasher: RandomState::new(),
                next_id: AtomicU64::new(1),
                metrics: Metrics::default(),
                limits,
                totals: Totals::default(),
                external,
                quiet: QuietEpoch {
                    boot: new_epoch(),
                    generation: AtomicU64::new(0),
                },
            }),
        }
    }

    /// Publishes `event` synchronously and returns how many local connections it was queued
    /// for: the in-memory broker's shortcut, for code that cannot await. The publish API for
    /// every broker is [`Tidings::publish`](crate::Tidings::publish) (it reports whether the
    /// broker took the event); prefer it.
    ///
    /// Never waits for a socket: the event is serialized once and queued on each subscriber's
    /// bounded outbound queue. A subscriber whose queue is full is not counted, is removed
    /// from the topic and is closed with 4003 (slow consumer). Callable from any thread or
    /// handler.
    ///
    /// With the in-memory broker (the default) the event gets the topic's next `seq` and its
    /// `epoch` (whatever the caller set is replaced) and is recorded in the topic's history.
    /// With the Redis broker this cannot wait for Redis: the publication is handed to a task
    /// (call it inside a tokio runtime), its failure is only logged, and the return value is
    /// the number of local subscribers at the time of the call. Use
    /// [`Tidings::publish`](crate::Tidings::publish) to learn whether Redis took it.
    pub fn publish(&self, event: WSEvent) -> usize {
        self.publish_ref(&event)
    }

    /// As [`Hub::publish`], borrowing the event.
    pub fn publish_ref(&self, event: &WSEvent) -> usize {
        let Some(base) = base_text(event) else {
            return 0;
        };
        let audience = Audience::everyone();
        match &self.inner.external {
            None => self.publish_local(&event.topic, &base, &audience),
            Some(broker) => {
                let broker = broker.clone();
                let hub = self.clone();
                let topic = event.topic.clone();
                let count = self.subscriber_count(topic.as_str());
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => {
                        rt.spawn(async move {
                            if let Err(e) = broker.publish(&hub, &topic, base, audience).await {
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
        }
    }

    /// The in-memory broker's publish: numbers `base` (an event's JSON without `seq`/`epoch`),
    /// records it and queues it for every local subscriber.
    pub(crate) fn publish_local(&self, topic: &Topic, base: &str, audience: &Audience) -> usize {
        // Debug level: disabled by default, and then no field is formatted or allocated.
        let span = tracing::debug_span!("publish", %topic, delivered = tracing::field::Empty);
        let _entered = span.enter();
        let started = Instant::now();
        let delivered = self.publish_local_unmeasured(topic, base, audience);
        self.inner.metrics.published(delivered, started.elapsed());
        span.record("delivered", delivered);
        delivered
    }

    fn publish_local_unmeasured(&self, topic: &Topic, base: &str, audience: &Audience) -> usize {
        let index = self.shard_index(topic.as_str());
        let shard = &self.inner.shards[index];
        let now = Instant::now();
        let (delivered, dead) = {
            let topics = read(shard);
            if let Some(state) = topics.get(topic.as_str()) {
                self.append(topic, state, base, audience, now)
            } else if !self.may_start_history() {
                // Nobody follows the topic and it could not keep the event for a later
                // recovery: creating it would only cost memory (a publisher spraying
                // distinct topics is bounded here).
                return 0;
            } else {
                drop(topics);
                let mut topics = write(shard);
                let state = self.entry(&mut topics, topic);
                self.append(topic, state, base, audience, now)
            }
        };
        self.remove_dead(shard, topic.as_str(), &dead);
        delivered
    }

    /// Numbers, records and queues one event on `state` (shard lock held by the caller).
    fn append(
        &self,
        topic: &Topic,
        state: &TopicState,
        base: &str,
        audience: &Audience,
        now: Instant,
    ) -> (usize, Vec<ConnId>) {
        let mut slot = lock(&state.stream);
        let stream = slot.get_or_insert_with(|| Stream::boxed(self.inner.quiet.current()));
        let seq = stream.last_seq + 1;
        stream.last_seq = seq;
        let text = Utf8Bytes::from(with_position(base, seq, &stream.epoch));
        self.record(stream, seq, &text, audience, now);
        // Queued while the stream is locked: two concurrent publishers on one topic reach
        // every subscriber in `seq` order.
        state.queue(
            Outgoing::new(topic.as_str(), seq, &stream.epoch, &text, audience),
            false,
        )
    }

    /// Whether a topic without history may start keeping one (the history-topic cap).
    fn may_start_history(&self) -> bool {
        self.inner.limits.size > 0
            && self.inner.totals.history_topics.load(Ordering::Relaxed)
                < self.inner.limits.max_topics
    }

    /// Records event `seq` in `stream`'s history within every bound: count and bytes per
    /// topic, bytes in total (the topic makes room from its own oldest events), topics with
    /// history. An event that cannot be recorded empties the history instead, so the history
    /// stays contiguous and a recovery across the event answers `recovered: false`.
    fn record(
        &self,
        stream: &mut Stream,
        seq: u64,
        text: &Utf8Bytes,
        audience: &Audience,
        now: Instant,
    ) {
        let limits = self.inner.limits;
        let totals = &self.inner.totals;
        stream.expire(now, limits.ttl, totals);
        let entry = Entry {
            seq,
            at: now,
            text: text.clone(),
            audience: audience.clone(),
        };
        let len = cost(&entry);
        if limits.size == 0 || len > limits.max_topic_bytes || len > limits.max_total_bytes {
            stream.clear(totals);
            return;
        }
        while stream.history.len() >= limits.size
            || stream.bytes + len > limits.max_topic_bytes
            || totals.history_bytes.load(Ordering::Relaxed) + len > limits.max_total_bytes
        {
            if stream.pop_front(totals).is_none() {
                break;
            }
        }
        if totals.history_bytes.load(Ordering::Relaxed) + len > limits.max_total_bytes
            || (stream.history.is_empty() && !self.may_start_history())
        {
            // Other topics hold the whole budget: this one keeps nothing rather than evicting
            // theirs (one publisher cannot wipe everyone's recovery window).
            return;
        }
        stream.push_back(entry, totals);
    }

    /// The entry of `topic` in a write-locked shard map, created (and counted) if missing.
    fn entry<'m>(
        &self,
        topics: &'m mut HashMap<Topic, TopicState>,
        topic: &Topic,
    ) -> &'m mut TopicState {
        topics.entry(topic.clone()).or_insert_with(|| {
            self.inner.totals.topics.fetch_add(1, Ordering::Relaxed);
            if let Some(broker) = &self.inner.external {
                broker.follow(topic, true);
            }
            TopicState::new()
        })
    }

    /// Delivers an event that the external broker numbered (`seq`) and serialized (`text`) to
    /// the local subscribers of `topic`. Events at or below the topic's last delivered `seq`
    /// are dropped (already delivered).
    ///
    /// A topic's position is known once this node delivered one of its events (`last_seq >
    /// 0`); before that, any event is taken as the first. A known topic whose events skip
    /// numbers lost some on the way: nothing is queued and [`Delivered::Gap`] asks the caller
    /// to replay the missing ones ([`Hub::repair`]) and hand this event in again. A known
    /// topic on which a new epoch starts past `seq` 1 lost events of both streams: its
    /// subscribers are closed with 1013 (reconnect, then recover with `since`).
    /// `audience`: who the event is for (the others get a `skipped` frame or nothing).
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
            let mut slot = lock(&state.stream);
            let stream = slot.get_or_insert_with(|| Stream::boxed(new_epoch()));
            let known = stream.last_seq > 0;
            let new_epoch = *stream.epoch != *epoch;
            if new_epoch {
                // A new stream (Redis lost the topic's keys): numbering starts over.
                stream.epoch = epoch.into();
                if known && seq > 1 {
                    tracing::warn!(
                        topic,
                        seq,
                        "a new epoch began with missed events; closing its subscribers"
                    );
                    stream.last_seq = seq;
                    let dead = state.close_all();
                    drop(slot);
                    drop(topics);
                    self.remove_dead(shard, topic, &dead);
                    return Delivered::Queued(0);
                }
            } else if seq <= stream.last_seq {
                return Delivered::Queued(0);
            } else if known && seq > stream.last_seq + 1 {
                return Delivered::Gap(StreamPosition {
                    seq: stream.last_seq,
                    epoch: epoch.to_owned(),
                });
            }
            stream.last_seq = seq;
            state.queue(Outgoing::new(topic, seq, epoch, &text, audience), new_epoch)
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

    /// Drops `topic` from a write-locked shard map when nobody follows it and it keeps no
    /// history.
    fn drop_if_unused(&self, topics: &mut HashMap<Topic, TopicState>, topic: &str) {
        if topics.get(topic).is_some_and(TopicState::is_unused) {
            if let Some((topic, state)) = topics.remove_entry(topic) {
                self.forget_numbering(&state);
                self.unfollow(&topic);
            }
            self.inner.totals.topics.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A topic entry is dropped (shard lock held): if it had numbered events, positions of
    /// quiet topics handed out so far can no longer be trusted (see [`QuietEpoch`]).
    fn forget_numbering(&self, state: &TopicState) {
        if lock(&state.stream).as_ref().is_some_and(|s| s.last_seq > 0) {
            self.inner.quiet.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Tells an external broker that no local connection follows `topic` any more (shard
    /// lock held: the calls of one topic stay in order).
    fn unfollow(&self, topic: &Topic) {
        if let Some(broker) = &self.inner.external {
            broker.follow(topic, false);
        }
    }

    fn sweep(&self, index: usize, now: Instant) {
        let ttl = self.inner.limits.ttl;
        let totals = &self.inner.totals;
        let mut topics = write(&self.inner.shards[index]);
        let before = topics.len();
        topics.retain(|topic, state| {
            if let Some(stream) = lock(&state.stream).as_mut() {
                stream.expire(now, ttl, totals);
            }
            let unused = state.is_unused();
            if unused {
                self.forget_numbering(state);
                self.unfollow(topic);
            }
            !unused
        });
        totals
            .topics
            .fetch_sub(before - topics.len(), Ordering::Relaxed);
    }

    /// Sweeps every shard in turn until `stop`, one shard every [`SWEEP_INTERVAL`] /
    /// [`SHARDS`]: expired history is freed and abandoned topics are dropped even when no
    /// later publish comes, and no shard is locked for long. The only sweep: publishing does none.
    pub(crate) async fn sweep_forever(self, stop: tokio_util::sync::CancellationToken) {
        let step = SWEEP_INTERVAL / u32::try_from(SHARDS).unwrap_or(u32::MAX);
        let mut tick = tokio::time::interval(step);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut index = 0;
        loop {
            tokio::select! {
                // The server shut down (or the handle was dropped): nothing left to sweep.
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.sweep(index, Instant::now());
            index = (index + 1) % SHARDS;
        }
    }

    /// Sweeps every shard now (what the background sweep does over a second).
    #[cfg(test)]
    fn sweep_all(&self, now: Instant) {
        for i in 0..SHARDS {
            self.sweep(i, now);
        }
    }

    /// How many connections are subscribed to `topic`.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        read(self.shard(topic))
            .get(topic)
            .map_or(0, |s| s.subscribers.len() + s.pending.len())
    }

    /// How many topics the hub tracks (with subscribers or recent history). A maintained
    /// counter: O(1), whatever the topic count.
    pub fn topic_count(&self) -> usize {
        self.inner.totals.topics.load(Ordering::Relaxed)
    }

    /// How many (connection, topic) subscriptions exist. A maintained counter: O(1).
    pub fn subscription_count(&self) -> usize {
        self.inner.totals.subscriptions.load(Ordering::Relaxed)
    }

    /// Bytes of event text held by the in-memory history of every topic (bounded by
    /// [`Config::with_history_max_total_bytes`](crate::Config::with_history_max_total_bytes)).
    pub fn history_bytes(&self) -> usize {
        self.inner.totals.history_bytes.load(Ordering::Relaxed)
    }

    /// How many topics hold in-memory history (bounded by
    /// [`Config::with_max_history_topics`](crate::Config::with_max_history_topics)).
    pub fn history_topic_count(&self) -> usize {
        self.inner.totals.history_topics.load(Ordering::Relaxed)
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The position of the last event published on `topic`, if the in-memory history knows
    /// the topic (`None` too before its first event: no epoch exists yet).
    pub fn position(&self, topic: &str) -> Option<StreamPosition> {
        let topics = read(self.shard(topic));
        let slot = lock(&topics.get(topic)?.stream);
        let stream = slot.as_ref()?;
        Some(StreamPosition {
            seq: stream.last_seq,
            epoch: stream.epoch.to_string(),
        })
    }

    /// The current position of `topic` in memory: its last event's, or `seq` 0 in the quiet
    /// epoch when it has had none (see [`QuietEpoch`]). With an external broker the hub only
    /// knows what it delivered: ask the broker ([`Tidings::read_stamp`](crate::Tidings::read_stamp)).
    pub fn read_position(&self, topic: &str) -> StreamPosition {
        let topics = read(self.shard(topic));
        self.position_of(topics.get(topic))
    }

    /// The position of a topic entry (shard lock held by the caller).
    fn position_of(&self, state: Option<&TopicState>) -> StreamPosition {
        let quiet = || StreamPosition {
            seq: 0,
            epoch: self.inner.quiet.current(),
        };
        let Some(state) = state else {
            return quiet();
        };
        match lock(&state.stream).as_ref() {
            Some(stream) => StreamPosition {
                seq: stream.last_seq,
                epoch: stream.epoch.to_string(),
            },
            None => quiet(),
        }
    }

    /// The events of `topic` after `since` in the in-memory history (a read only: a
    /// subscriber joins atomically with [`Hub::subscribe_since`]).
    pub(crate) fn recover(&self, topic: &str, since: &StreamPosition) -> Recovery {
        let topics = read(self.shard(topic));
        match topics.get(topic) {
            Some(state) => {
                let mut slot = lock(&state.stream);
                Stream::recover_in(&mut slot, since, Instant::now(), &self.inner)
            }
            None => Recovery {
                recovered: self.inner.is_quiet(since),
                events: Vec::new(),
            },
        }
    }

    pub(crate) fn next_conn_id(&self) -> ConnId {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether recovery needs a history fetch from an external broker.
    pub(crate) fn external_broker(&self) -> Option<&Arc<dyn Broker>> {
        self.inner.external.as_ref()
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

    /// Adds connection `id` to `topic` (in-memory broker) and queues `ack(position)` under the
    /// topic's lock: every event after `position` reaches the connection after the ack, every
    /// one up to it was published before.
    pub(crate) fn subscribe_with_position(
        &self,
        topic: &Topic,
        id: ConnId,
        outbox: &Arc<Outbox>,
        ack: impl FnOnce(StreamPosition) -> Utf8Bytes,
    ) {
        let mut topics = write(self.shard(topic.as_str()));
        let state = self.entry(&mut topics, topic);
        if state.subscribers.insert(id, outbox.clone()).is_none() {
            self.inner
                .totals
                .subscriptions
                .fetch_add(1, Ordering::Relaxed);
        }
        let position = self.position_of(Some(state));
        let _ = outbox.push(ack(position));
    }

    /// Subscribe with `since`, in-memory broker: the same park → fetch → merge as with any
    /// broker ([`Hub::subscribe_pending`], the history read, [`Hub::finish_pending`]), in one
    /// step because the in-memory history answers at once. An event published meanwhile is
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
        let recovery = self.recover(topic.as_str(), since);
        self.finish_pending(topic, id, ticket, Some(since), recovery, ack)
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
    /// `ack` gets the `recovered` flag and the position the ack may carry: after a recovery
    /// the one it replayed up to (from `since`'s epoch); otherwise, in memory, the topic's
    /// current one; `None` when unknown (an external broker that did not recover).
    ///
    /// Returns the `recovered` it acked (`false` too when it did nothing).
    pub(crate) fn finish_pending(
        &self,
        topic: &Topic,
        id: ConnId,
        ticket: u64,
        since: Option<&StreamPosition>,
        mut recovery: Recovery,
        ack: impl FnOnce(bool, Option<StreamPosition>) -> Utf8Bytes,
    ) -> bool {
        let since_seq = since.map_or(0, |s| s.seq);
        let mut topics = write(self.shard(topic.as_str()));
        let Some(state) = topics.get_mut(topic.as_str()) else {
            return false;
        };
        let node_seq = lock(&state.stream).as_ref().map_or(0, |s| s.last_seq);
        let current = self
            .inner
            .external
            .is_none()
            .then(|| self.position_of(Some(state)));
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

    /// Removes connection `id` from `topic`; a topic left without subscribers or history is
    /// dropped.
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
                let slot = lock(&state.stream);
                out.push((
                    topic.clone(),
                    slot.as_ref().map_or_else(
                        || StreamPosition {
                            seq: 0,
                            epoch: String::new(),
                        },
                        |stream| StreamPosition {
                            seq: stream.last_seq,
                            epoch: stream.epoch.to_string(),
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
            let mut slot = lock(&state.stream);
            let Some(stream) = slot.as_mut() else {
                return;
            };
            if stream.last_seq != from.seq || *stream.epoch != *from.epoch {
                return;
            }
            if !recovery.recovered {
                tracing::warn!(
                    topic,
                    "missed events cannot be replayed; closing the topic's subscribers"
                );
                stream.last_seq = 0;
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
                    stream.last_seq = seq;
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
            if let Some(stream) = lock(&state.stream).as_mut() {
                stream.last_seq = 0;
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
            subscribers: HashMap::default(),
            pending: HashMap::default(),
            stream: Mutex::new(None),
        }
    }

    /// Nobody listens and no history is kept: the entry can go (a later event starts a new
    /// epoch, so no client can mistake the new numbering for the old one).
    fn is_unused(&self) -> bool {
        self.subscribers.is_empty()
            && self.pending.is_empty()
            && lock(&self.stream)
                .as_ref()
                .is_none_or(|stream| stream.history.is_empty())
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
        for (id, outbox) in &self.subscribers {
            let Some((text, is_event)) = event.frame_for(outbox) else {
                continue;
            };
            match outbox.push(text) {
                Ok(()) => delivered += usize::from(is_event),
                Err(_) => dead.push(*id),
            }
        }
        for (id, pending) in &self.pending {
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

impl Stream {
    /// A new stream in `epoch`, no event yet, allocated when a topic's first event arrives.
    fn boxed(epoch: String) -> Box<Self> {
        Box::new(Self {
            epoch: epoch.into(),
            last_seq: 0,
            history: VecDeque::new(),
            bytes: 0,
        })
    }

    /// What the stream in `slot` replays after `since`, once expired events are dropped. A
    /// topic without a stream (no event yet) has no epoch a client could know.
    fn recover_in(
        slot: &mut Option<Box<Self>>,
        since: &StreamPosition,
        now: Instant,
        inner: &Inner,
    ) -> Recovery {
        match slot.as_mut() {
            Some(stream) => {
                stream.expire(now, inner.limits.ttl, &inner.totals);
                stream.recover(since)
            }
            None => Recovery {
                recovered: inner.is_quiet(since),
                events: Vec::new(),
            },
        }
    }

    fn expire(&mut self, now: Instant, ttl: Duration, totals: &Totals) {
        while self
            .history
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.at) > ttl)
        {
            self.pop_front(totals);
        }
    }

    /// Drops the oldest event, keeping the byte and topic counts right.
    fn pop_front(&mut self, totals: &Totals) -> Option<Entry> {
        let entry = self.history.pop_front()?;
        self.bytes -= cost(&entry);
        totals
            .history_bytes
            .fetch_sub(cost(&entry), Ordering::Relaxed);
        if self.history.is_empty() {
            totals.history_topics.fetch_sub(1, Ordering::Relaxed);
        }
        // Shrinks a ring that once held a burst: an idle topic keeps no big buffer.
        if self.history.capacity() > 64 && self.history.len() < self.history.capacity() / 4 {
            self.history.shrink_to(self.history.len() * 2);
        }
        Some(entry)
    }

    fn push_back(&mut self, entry: Entry, totals: &Totals) {
        if self.history.is_empty() {
            totals.history_topics.fetch_add(1, Ordering::Relaxed);
        }
        self.bytes += cost(&entry);
        totals
            .history_bytes
            .fetch_add(cost(&entry), Ordering::Relaxed);
        self.history.push_back(entry);
    }

    fn clear(&mut self, totals: &Totals) {
        while self.pop_front(totals).is_some() {}
    }

    fn recover(&self, since: &StreamPosition) -> Recovery {
        let failed = Recovery {
            recovered: false,
            events: Vec::new(),
        };
        if *self.epoch != *since.epoch || since.seq > self.last_seq {
            return failed;
        }
        if since.seq == self.last_seq {
            return Recovery {
                recovered: true,
                events: Vec::new(),
            };
        }
        // The history must still hold the event right after `since`.
        match self.history.front() {
            Some(first) if first.seq <= since.seq + 1 => Recovery {
                recovered: true,
                events: self
                    .history
                    .iter()
                    .filter(|e| e.seq > since.seq)
                    .map(|e| (e.seq, e.text.clone(), e.audience.clone()))
                    .collect(),
            },
            _ => failed,
        }
    }
}

/// What one history entry is charged against the byte bounds: its text and audience plus the
/// entry and shared-buffer bookkeeping, so that a flood of tiny events is bounded as well as a
/// few huge ones.
fn cost(entry: &Entry) -> usize {
    entry.text.len() + entry.audience.cost() + ENTRY_OVERHEAD
}

/// Bytes of bookkeeping per history entry (the ring slot: seq, time and the shared-bytes
/// handle, plus the shared buffer's header), rounded up.
const ENTRY_OVERHEAD: usize = 96;

impl TopicState {
    /// Closes every subscriber, live or pending, with 1013 (reconnect and recover) and
    /// returns them, to be removed.
    fn close_all(&self) -> Vec<ConnId> {
        let code = tidings_protocol::CloseCode::TryAgainLater;
        let mut dead = Vec::new();
        for (id, outbox) in &self.subscribers {
            outbox.close(code);
            dead.push(*id);
        }
        for (id, pending) in &self.pending {
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
        for (id, outbox) in &self.subscribers {
            if !outbox.replay_fits(count, bytes) {
                outbox.close(code);
                dead.push(*id);
            }
        }
        for (id, pending) in &self.pending {
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

/// The JSON text of `event` without `seq` and `epoch` (publisher-supplied ones dropped).
pub(crate) fn base_text(event: &WSEvent) -> Option<String> {
    let result = if event.seq.is_some() || event.epoch.is_some() {
        let mut bare = event.clone();
        bare.seq = None;
        bare.epoch = None;
        serde_json::to_string(&bare)
    } else {
        serde_json::to_string(event)
    };
    match result {
        Ok(text) => Some(text),
        // Cannot happen for events built by the protocol crate; logged rather than
        // panicking in a caller's handler.
        Err(e) => {
            tracing::error!(topic = %event.topic, error = %e, "could not serialize event");
            None
        }
    }
}

/// `base` (a JSON object without `seq`/`epoch`) with `"seq":seq,"epoch":epoch` added before
/// its closing brace: the event is numbered without serializing it again. Epochs are
/// generated by tidings (hex digits), so they need no escaping.
pub(crate) fn with_position(base: &str, seq: u64, epoch: &str) -> String {
    let body = base.strip_suffix('}').unwrap_or(base);
    let mut text = String::with_capacity(base.len() + epoch.len() + 32);
    text.push_str(body);
    text.push_str(",\"seq\":");
    text.push_str(&seq.to_string());
    text.push_str(",\"epoch\":\"");
    text.push_str(epoch);
    text.push_str("\"}");
    text
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

    fn published(&self, delivered: usize, took: Duration) {
        self.inner.metrics.published(delivered, took);
    }

    fn publish_local(&self, topic: &Topic, base: &str, audience: &Audience) -> usize {
        Hub::publish_local(self, topic, base, audience)
    }

    fn recover(&self, topic: &str, since: &StreamPosition) -> Recovery {
        Hub::recover(self, topic, since)
    }

    fn read_position(&self, topic: &str) -> StreamPosition {
        Hub::read_position(self, topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_protocol::{EventData, EventType, Payload};

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
        Hub::new(HistoryLimits::from_config(&config), None)
    }

    fn drain(outbox: &Outbox) -> Vec<String> {
        let mut batch = Vec::new();
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
            |r, _| format!("ack {r}").into(),
        );
        assert!(hub.pending_is_current("list:1", 1, ticket));
        hub.finish_pending(&topic, 1, ticket, Some(&at(2)), recovery, |r, _| {
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
        hub.finish_pending(&topic, 2, ticket2, Some(&at(7)), recovery, |r, _| {
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

    /// A position in epoch `e1` (the epoch of [`text`]'s events in these tests).
    fn at(seq: u64) -> StreamPosition {
        StreamPosition {
            seq,
            epoch: "e1".into(),
        }
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
        hub.finish_pending(&topic, 2, ticket, Some(&at(1)), replay(2..=6), |r, _| {
            format!("{{\"seq\":0,\"ack\":{r}}}").into()
        });
        hub.deliver("list:1", 6, "e", text(6, "e"));
        hub.deliver("list:1", 7, "e", text(7, "e"));
        assert_eq!(positions(&drain(&live)), (1..=7).collect::<Vec<_>>());
        assert_eq!(positions(&drain(&out)), [2, 3, 4, 5, 6, 0, 7]);
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
        hub.finish_pending(&topic, 1, ticket, None, replay(1..=5), |r, _| {
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
        let hub = Hub::new(HistoryLimits::from_config(&config), None);
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

    #[test]
    fn a_quiet_topic_has_a_position_its_first_event_continues() {
        let hub = hub(8, Duration::from_secs(60));
        let quiet = hub.read_position("occasion:1");
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
        assert_eq!(hub.read_position("occasion:1").epoch, quiet.epoch);
        let replayed = hub.recover("occasion:1", &quiet);
        assert!(replayed.recovered);
        assert_eq!(replayed.events.len(), 1);
        // Another quiet topic recovers from {0, quiet} with nothing to replay.
        assert!(
            hub.recover("occasion:2", &hub.read_position("occasion:2"))
                .recovered
        );
    }

    #[test]
    fn forgetting_a_numbered_topic_invalidates_quiet_positions() {
        let hub = hub(8, Duration::from_secs(1));
        let quiet = hub.read_position("occasion:2");
        assert!(hub.recover("occasion:2", &quiet).recovered);
        hub.publish(event("list:1"));
        // list:1's history expires and the topic is dropped: it could start over at seq 1
        // without a stream, so "no event since {0, quiet}" can no longer be promised.
        hub.sweep_all(Instant::now() + Duration::from_secs(5));
        assert_eq!(hub.topic_count(), 0);
        assert!(!hub.recover("occasion:2", &quiet).recovered);
        assert!(!hub.recover("list:1", &quiet).recovered);
        let now = hub.read_position("list:1");
        assert_ne!(now.epoch, quiet.epoch);
        assert!(hub.recover("list:1", &now).recovered);
    }

    /// Records what the hub asks an external broker to follow.
    #[derive(Default)]
    struct Follows(Mutex<Vec<(String, bool)>>);

    impl Broker for Follows {
        fn publish<'a>(
            &'a self,
            _hub: &'a dyn Deliver,
            _topic: &'a Topic,
            _base: String,
            _audience: Audience,
        ) -> crate::broker::BoxFuture<'a, Result<usize, crate::BrokerError>> {
            Box::pin(async { Ok(0) })
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

        fn position<'a>(
            &'a self,
            _local: &'a dyn Deliver,
            _topic: &'a Topic,
        ) -> crate::broker::BoxFuture<'a, Result<StreamPosition, crate::BrokerError>> {
            Box::pin(async { Err(crate::BrokerError::Unavailable("test".into())) })
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
        let limits = HistoryLimits::from_config(&crate::Config::new("s"));
        let hub = Hub::new(limits, Some(follows.clone()));
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
        hub.finish_pending(&topic, 3, ticket, None, nothing, |_, _| "ack".into());
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
        hub.finish_pending(&topic, 3, ticket, Some(&at(1)), nothing_missed, |r, _| {
            format!("{{\"seq\":0,\"ack\":{r}}}").into()
        });
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

    #[test]
    fn splicing_the_position() {
        assert_eq!(
            with_position(r#"{"a":1}"#, 7, "ab"),
            r#"{"a":1,"seq":7,"epoch":"ab"}"#
        );
    }
}
