//! The in-memory broker: the default, for one node without any external service.
//!
//! It owns every topic's stream: the epoch, the `seq` numbering, the bounded history ring and
//! its byte counters, and the sweep that expires it. A publish numbers the event, splices the
//! position into its JSON once, records the shared bytes with the event's audience and hands
//! both to the node's local subscribers (the hub applies the audience per subscriber) through
//! the [`Deliver`] handle while the stream is locked, so two concurrent publishers on one topic
//! reach every subscriber in `seq` order. It never sees the hub itself.
//!
//! History is lost with the process; a restarted node hands out new epochs, so a client's old
//! position is answered `recovered: false`.
//!
//! Lock order (no cycle): a stream shard, then its stream, then whatever `Deliver` takes (the
//! hub's shard and the subscribers' queues). The hub never calls into this broker while it
//! holds a lock of its own ([`Broker::follow`] is a no-op here): whether a topic still has
//! local subscribers is read by the sweep through [`Deliver::is_followed`].

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use tidings_protocol::{StreamPosition, Topic};
use tokio_util::sync::CancellationToken;

use crate::audience::Audience;

use super::{
    BoxFuture, Broker, BrokerError, Deliver, Delivered, HistoryLimits, Numbered, Published,
    Recovery, ReplayBound, new_epoch, with_position,
};

/// Number of independently locked stream maps.
const SHARDS: usize = 64;

/// How often (at most) a shard is swept for expired history and streams nobody needs.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

type Shard = RwLock<HashMap<Topic, Mutex<Stream>>>;

/// The default broker (see the module docs).
pub struct MemoryBroker {
    shards: Box<[Shard]>,
    hasher: RandomState,
    limits: HistoryLimits,
    totals: Totals,
    /// The epoch of topics that have had no event (see [`QuietEpoch`]).
    quiet: QuietEpoch,
}

/// The epoch a position of a topic without a stream is given (`seq` 0), and a new stream
/// starts in, so that a client that learnt "no event yet" (a `subscribed` ack with
/// `"position":true`, or a read stamp) resumes across a reconnect without a refetch (`since`
/// `{0, quiet}` answers `recovered: true` with nothing to replay).
///
/// It must change whenever numbering is forgotten: a stream dropped by the sweep (its topic
/// would start over at `seq` 1), or an event numbered without a stream (nobody here follows
/// the topic and no history may keep it). A client holding the old quiet position would
/// otherwise be told it missed nothing. One counter for the whole broker: coarse but safe, a
/// bump costs one refetch per quiet topic on the next reconnect, never a lost event. A
/// restarted process has another `boot`.
#[derive(Debug)]
struct QuietEpoch {
    boot: String,
    generation: AtomicU64,
}

impl QuietEpoch {
    fn current(&self) -> String {
        format!(
            "{}-{:x}",
            self.boot,
            self.generation.load(Ordering::Relaxed)
        )
    }

    fn is(&self, since: &StreamPosition) -> bool {
        since.seq == 0 && since.epoch == self.current()
    }

    /// Positions of quiet topics handed out so far can no longer be trusted.
    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counters kept as the streams change, so that reading them (every `/metrics` scrape, every
/// history bound check) costs the same with ten topics or a million.
#[derive(Debug, Default)]
struct Totals {
    /// Streams held (topics that had an event and still have history or local subscribers).
    streams: AtomicUsize,
    /// Bytes of event text in all histories (charged with [`cost`]).
    history_bytes: AtomicUsize,
    /// Streams whose history is not empty.
    history_topics: AtomicUsize,
}

/// A topic's stream position and its recent events.
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

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("limits", &self.limits)
            .field("totals", &self.totals)
            .finish_non_exhaustive()
    }
}

impl MemoryBroker {
    /// A broker keeping history within `limits` (see the `Config::with_history_*` settings).
    pub fn new(limits: HistoryLimits) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            hasher: RandomState::new(),
            limits,
            totals: Totals::default(),
            quiet: QuietEpoch {
                boot: new_epoch(),
                generation: AtomicU64::new(0),
            },
        }
    }

    /// Numbers `base` (an event's JSON without `seq`/`epoch`) on `topic`, records it with
    /// `audience` and queues it for `local`'s subscribers in `audience`, synchronously (this
    /// broker never waits).
    pub(crate) fn publish_now(
        &self,
        local: &dyn Deliver,
        topic: &Topic,
        base: &str,
        audience: &Audience,
    ) -> Numbered {
        // Debug level: disabled by default, and then no field is formatted or allocated.
        let span = tracing::debug_span!("publish", %topic, delivered = tracing::field::Empty);
        let _entered = span.enter();
        let started = Instant::now();
        let published = self.publish_unmeasured(local, topic, base, audience);
        local.published(published.delivered, started.elapsed());
        span.record("delivered", published.delivered);
        published
    }

    fn publish_unmeasured(
        &self,
        local: &dyn Deliver,
        topic: &Topic,
        base: &str,
        audience: &Audience,
    ) -> Numbered {
        let shard = self.shard(topic.as_str());
        let now = Instant::now();
        {
            let streams = read(shard);
            if let Some(stream) = streams.get(topic.as_str()) {
                return self.append(local, topic, &mut lock(stream), base, audience, now);
            }
        }
        if !self.may_start_history() && !local.is_followed(topic.as_str()) {
            // Nobody here follows the topic and it could not keep the event for a later
            // recovery: a stream would only cost memory (a publisher spraying distinct topics
            // is bounded here). The event is numbered as the first of a stream nobody keeps,
            // and quiet positions handed out before no longer say "nothing missed".
            self.quiet.bump();
            return Numbered {
                seq: 1,
                epoch: new_epoch().into(),
                delivered: 0,
            };
        }
        let mut streams = write(shard);
        let stream = streams.entry(topic.clone()).or_insert_with(|| {
            self.totals.streams.fetch_add(1, Ordering::Relaxed);
            Mutex::new(Stream::new(self.quiet.current()))
        });
        let stream = stream.get_mut().unwrap_or_else(PoisonError::into_inner);
        self.append(local, topic, stream, base, audience, now)
    }

    /// Numbers, records and delivers one event on `stream` (locked by the caller).
    fn append(
        &self,
        local: &dyn Deliver,
        topic: &Topic,
        stream: &mut Stream,
        base: &str,
        audience: &Audience,
        now: Instant,
    ) -> Numbered {
        let seq = stream.last_seq + 1;
        stream.last_seq = seq;
        let text = Utf8Bytes::from(with_position(base, seq, &stream.epoch));
        self.record(stream, seq, &text, audience, now);
        // Delivered while the stream is locked: two concurrent publishers on one topic reach
        // every subscriber in `seq` order, and a history read never misses an event that a
        // parked subscriber did not get live.
        let delivered = match local.deliver(topic.as_str(), seq, &stream.epoch, text, audience) {
            Delivered::Queued(count) => count,
            Delivered::Gap(_) => {
                // Cannot happen: this broker hands every event over in order while the topic
                // has local subscribers. Should it, the subscribers reconnect and recover.
                local.abandon(topic.as_str());
                0
            }
        };
        Numbered {
            seq,
            // A reference count, not a copy.
            epoch: stream.epoch.clone(),
            delivered,
        }
    }

    /// Whether a topic without history may start keeping one (the history-topic cap).
    fn may_start_history(&self) -> bool {
        self.limits.size > 0
            && self.totals.history_topics.load(Ordering::Relaxed) < self.limits.max_topics
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
        let limits = self.limits;
        let totals = &self.totals;
        stream.expire(now, limits.ttl, totals);
        let len = cost(text, audience);
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
        stream.push_back(
            Entry {
                seq,
                at: now,
                text: text.clone(),
                audience: audience.clone(),
            },
            totals,
        );
    }

    /// The events of `topic` after `since` in the history, expired ones dropped first. A
    /// topic without a stream (no event yet, or forgotten) has no epoch a client could know.
    pub(crate) fn recover(&self, topic: &str, since: &StreamPosition) -> Recovery {
        let streams = read(self.shard(topic));
        match streams.get(topic) {
            Some(stream) => {
                let mut stream = lock(stream);
                stream.expire(Instant::now(), self.limits.ttl, &self.totals);
                stream.recover(since)
            }
            None => Recovery {
                recovered: self.quiet.is(since),
                events: Vec::new(),
            },
        }
    }

    /// The current position of `topic`: its last event's, or `seq` 0 in the quiet epoch when
    /// it has no stream (see [`QuietEpoch`]).
    pub(crate) fn read_position(&self, topic: &str) -> StreamPosition {
        self.position(topic).unwrap_or_else(|| StreamPosition {
            seq: 0,
            epoch: self.quiet.current(),
        })
    }

    /// Calls `then` with the current position of `topic` while no event of it can be numbered
    /// (the stream, or its shard when it has none, is locked): `then` subscribes the connection
    /// and queues its ack, so every event after the position reaches it after the ack and every
    /// one up to it was published before. `then` may take the hub's locks (the lock order: a
    /// stream shard, its stream, then the hub).
    pub(crate) fn at_position<R>(&self, topic: &str, then: impl FnOnce(StreamPosition) -> R) -> R {
        let streams = read(self.shard(topic));
        match streams.get(topic) {
            Some(stream) => {
                let stream = lock(stream);
                then(StreamPosition {
                    seq: stream.last_seq,
                    epoch: stream.epoch.to_string(),
                })
            }
            None => then(StreamPosition {
                seq: 0,
                epoch: self.quiet.current(),
            }),
        }
    }

    /// The position of the last event published on `topic` (`None` before its first event
    /// or once its stream was dropped: no epoch exists then).
    pub fn position(&self, topic: &str) -> Option<StreamPosition> {
        let streams = read(self.shard(topic));
        let stream = lock(streams.get(topic)?);
        Some(StreamPosition {
            seq: stream.last_seq,
            epoch: stream.epoch.to_string(),
        })
    }

    /// Streams held (topics with history, or with local subscribers since their first event).
    pub fn stream_count(&self) -> usize {
        self.totals.streams.load(Ordering::Relaxed)
    }

    /// Bytes of event text held by every history (bounded by
    /// [`Config::with_history_max_total_bytes`](crate::Config::with_history_max_total_bytes)).
    pub fn history_bytes(&self) -> usize {
        self.totals.history_bytes.load(Ordering::Relaxed)
    }

    /// How many topics hold history (bounded by
    /// [`Config::with_max_history_topics`](crate::Config::with_max_history_topics)).
    pub fn history_topic_count(&self) -> usize {
        self.totals.history_topics.load(Ordering::Relaxed)
    }

    /// Expires the history of shard `index` and drops the streams left with no history and
    /// no local subscriber (a later event starts a new epoch, so no client can mistake the
    /// new numbering for the old one).
    fn sweep(&self, local: &dyn Deliver, index: usize, now: Instant) {
        let ttl = self.limits.ttl;
        let totals = &self.totals;
        let mut streams = write(&self.shards[index]);
        let before = streams.len();
        let quiet = &self.quiet;
        streams.retain(|topic, stream| {
            let stream = stream.get_mut().unwrap_or_else(PoisonError::into_inner);
            stream.expire(now, ttl, totals);
            let keep = !stream.history.is_empty() || local.is_followed(topic.as_str());
            if !keep {
                // Its topic starts over at `seq` 1 (see `QuietEpoch`).
                quiet.bump();
            }
            keep
        });
        totals
            .streams
            .fetch_sub(before - streams.len(), Ordering::Relaxed);
    }

    /// Sweeps every shard now (what the background sweep does over a second).
    #[cfg(test)]
    pub(crate) fn sweep_all(&self, local: &dyn Deliver, now: Instant) {
        for i in 0..SHARDS {
            self.sweep(local, i, now);
        }
    }

    /// Sweeps every shard in turn until `stop`, one shard every [`SWEEP_INTERVAL`] /
    /// [`SHARDS`]: expired history is freed and abandoned streams are dropped even when no
    /// later publish comes, and no shard is locked for long. The only sweep: publishing does
    /// none.
    async fn sweep_forever(self: Arc<Self>, local: Arc<dyn Deliver>, stop: CancellationToken) {
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
            self.sweep(&*local, index, Instant::now());
            index = (index + 1) % SHARDS;
        }
    }

    fn shard(&self, topic: &str) -> &Shard {
        let hash = self.hasher.hash_one(topic);
        // Truncating the hash is fine: any bits pick a shard.
        &self.shards[hash as usize % self.shards.len()]
    }
}

impl Broker for MemoryBroker {
    fn publish<'a>(
        &'a self,
        local: &'a dyn Deliver,
        topic: Topic,
        base: String,
        audience: Audience,
    ) -> BoxFuture<'a, Result<Published, BrokerError>> {
        let numbered = self.publish_now(local, &topic, &base, &audience);
        Box::pin(std::future::ready(Ok(numbered.published(topic))))
    }

    fn history<'a>(
        &'a self,
        _local: &'a dyn Deliver,
        topic: &'a Topic,
        since: &'a StreamPosition,
        _bound: ReplayBound,
    ) -> BoxFuture<'a, Result<Recovery, BrokerError>> {
        // The replay is checked against the connection's budget where it is merged
        // (`Hub::finish_pending`): in memory the read costs no fetch worth sparing.
        let recovery = self.recover(topic.as_str(), since);
        Box::pin(std::future::ready(Ok(recovery)))
    }

    fn position<'a>(
        &'a self,
        _local: &'a dyn Deliver,
        topic: &'a Topic,
    ) -> BoxFuture<'a, Result<StreamPosition, BrokerError>> {
        Box::pin(std::future::ready(Ok(self.read_position(topic.as_str()))))
    }

    fn degraded(&self) -> Option<String> {
        None
    }

    fn start(self: Arc<Self>, local: Arc<dyn Deliver>, stop: CancellationToken) {
        // Expired history and abandoned streams are freed by one background sweep (no work
        // on the publish path, and no dependence on later traffic).
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(self.sweep_forever(local, stop));
            }
            Err(_) => tracing::warn!(
                "the in-memory broker started outside a tokio runtime: expired history is not swept"
            ),
        }
    }
}

impl Stream {
    /// A new stream in `epoch` (the quiet one: a client told "no event yet" continues from
    /// it), no event yet, made when a topic's first event arrives.
    fn new(epoch: String) -> Self {
        Self {
            epoch: epoch.into(),
            last_seq: 0,
            history: VecDeque::new(),
            bytes: 0,
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
        self.bytes -= cost(&entry.text, &entry.audience);
        totals
            .history_bytes
            .fetch_sub(cost(&entry.text, &entry.audience), Ordering::Relaxed);
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
        self.bytes += cost(&entry.text, &entry.audience);
        totals
            .history_bytes
            .fetch_add(cost(&entry.text, &entry.audience), Ordering::Relaxed);
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
fn cost(text: &Utf8Bytes, audience: &Audience) -> usize {
    text.len() + audience.cost() + ENTRY_OVERHEAD
}

/// Bytes of bookkeeping per history entry (the ring slot: seq, time and the shared-bytes
/// handle, plus the shared buffer's header), rounded up.
const ENTRY_OVERHEAD: usize = 96;

// A panic while a shard is locked cannot leave a map half-updated (every critical section is
// a single map operation), so a poisoned lock is still safe to use.
fn read(shard: &Shard) -> RwLockReadGuard<'_, HashMap<Topic, Mutex<Stream>>> {
    shard.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(shard: &Shard) -> RwLockWriteGuard<'_, HashMap<Topic, Mutex<Stream>>> {
    shard.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
