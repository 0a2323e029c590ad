//! The broker seam: who numbers a topic's events, keeps their history and carries them to
//! every node.
//!
//! A [`Broker`] takes an event's JSON (without `seq`/`epoch`), gives it the topic's next
//! `seq` and the stream's `epoch`, records it in the bounded history and makes it reach every
//! local subscriber (and, for a shared broker, every other node's); it answers history
//! queries for recovery and reports its health. Two implementations, after centrifuge's
//! `broker_memory.go` / `broker_redis.go`:
//!
//! - [`memory`] (the default): one node, no external service. The [`Hub`](crate::Hub) itself holds the
//!   history, so that a subscribe with `since` replays and joins atomically under the topic's
//!   lock. Its epochs change when the process restarts (history lost).
//! - [`redis`] (`Config::with_redis_url`): seq, epoch and history live in Redis (one Lua script
//!   per publish), and each node receives the events of the topics it has subscribers of
//!   through Redis pub/sub (a channel per topic), so a client recovers on any node.

pub(crate) mod memory;
pub(crate) mod redis;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tidings_protocol::{StreamPosition, Topic};

use crate::audience::{Audience, AudienceError};

pub(crate) use self::memory::MemoryBroker;
pub(crate) use self::redis::RedisBroker;

/// A boxed future, so that [`Broker`] stays object safe.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why the broker could not take a publication or answer a history query.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker's backing service cannot be reached (answered 503 by `POST /publish`).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The event could not be serialized (cannot happen for protocol-built events).
    #[error("event could not be serialized")]
    Serialize,
    /// The audience given with the event breaks a bound (nothing was published).
    #[error("invalid audience: {0}")]
    Audience(#[from] AudienceError),
}

/// What a broker may do to this node's local subscribers: the narrow handle it gets instead
/// of the hub (implemented by [`Hub`](crate::Hub)), so that the broker never depends on the
/// hub that holds it.
pub(crate) trait Deliver: Send + Sync {
    /// Queues an event the broker numbered (`seq`) and serialized (`text`) for the local
    /// subscribers of `topic` (those `audience` admits; see [`crate::audience`]), or reports a
    /// gap to repair first.
    fn deliver(
        &self,
        topic: &str,
        seq: u64,
        epoch: &str,
        text: Utf8Bytes,
        audience: &Audience,
    ) -> Delivered;
    /// Replays the events after `from` (the topic's delivered position) to the local
    /// subscribers, or closes them with 1013 when `recovery` could not cover them.
    fn repair(&self, topic: &str, from: &StreamPosition, recovery: Recovery);
    /// Closes every local subscriber of `topic` with 1013 and forgets its position.
    fn abandon(&self, topic: &str);
    /// The delivered position of every topic with local subscribers (`seq` 0: none yet).
    fn external_positions(&self) -> Vec<(Topic, StreamPosition)>;
    /// Whether `topic` has local subscribers (live or waiting for their history).
    fn is_followed(&self, topic: &str) -> bool;
    /// How many local connections follow `topic`.
    fn subscriber_count(&self, topic: &str) -> usize;
    /// Counts one publication queued for `delivered` connections that took `took`.
    fn published(&self, delivered: usize, took: Duration);
    /// The in-memory broker's publish: numbers, records and queues an event (the hub still
    /// holds the in-memory streams).
    fn publish_local(&self, topic: &Topic, base: &str, audience: &Audience) -> usize;
    /// The in-memory history of `topic` after `since`.
    fn recover(&self, topic: &str, since: &StreamPosition) -> Recovery;
    /// The in-memory position of `topic` (`seq` 0 in the quiet epoch when it has had no
    /// event).
    fn read_position(&self, topic: &str) -> StreamPosition;
}

/// What a subscribe with `since` found in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recovery {
    /// Whether every event after the position could be replayed.
    pub(crate) recovered: bool,
    /// The missed events (`seq`, text, audience), oldest first (empty when not recovered).
    pub(crate) events: Vec<(u64, Utf8Bytes, Audience)>,
}

/// Bounds of the in-memory history (see the `Config::with_history_*` settings).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HistoryLimits {
    pub(crate) size: usize,
    pub(crate) ttl: Duration,
    /// Most bytes of event text one topic keeps.
    pub(crate) max_topic_bytes: usize,
    /// Most bytes of event text all topics keep together.
    pub(crate) max_total_bytes: usize,
    /// Most topics holding history at once.
    pub(crate) max_topics: usize,
}

impl HistoryLimits {
    /// The limits configured in `config`.
    pub(crate) fn from_config(config: &crate::Config) -> Self {
        Self {
            size: config.history_size,
            ttl: config.history_ttl,
            max_topic_bytes: config.history_max_topic_bytes,
            max_total_bytes: config.history_max_total_bytes,
            max_topics: config.max_history_topics,
        }
    }
}

/// What [`Deliver::deliver`] did with an event of the external broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// Queued for this many local connections (0: none here, or already delivered).
    Queued(usize),
    /// Not queued: the events after this position (the topic's last delivered one) never
    /// reached this node. Replay them ([`Deliver::repair`]), then hand the event in again.
    Gap(StreamPosition),
}

/// A fresh random epoch (16 hex digits).
pub(crate) fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The seam between the hub and where events are numbered, stored and fanned out between nodes.
pub(crate) trait Broker: Send + Sync + 'static {
    /// Numbers `base` (an event's JSON text without `seq`/`epoch`) on `topic`, records it in
    /// the history (with `audience`) and delivers it to `hub`'s local subscribers (and other
    /// nodes') that `audience` admits. Returns how many local connections it was (or will be)
    /// queued for.
    fn publish<'a>(
        &'a self,
        local: &'a dyn Deliver,
        topic: &'a Topic,
        base: String,
        audience: Audience,
    ) -> BoxFuture<'a, Result<usize, BrokerError>>;

    /// The events of `topic` after `since`, if the history still holds all of them and they
    /// fit in `bound` (else `recovered: false` and no events: a replay the connection could
    /// not take is not fetched).
    fn history<'a>(
        &'a self,
        local: &'a dyn Deliver,
        topic: &'a Topic,
        since: &'a StreamPosition,
        bound: ReplayBound,
    ) -> BoxFuture<'a, Result<Recovery, BrokerError>>;

    /// The current position of `topic`: its last event's `seq` and epoch, or `seq` 0 in the
    /// epoch its first event will be numbered in (created now if it has none), so that a
    /// client can resume from "no event yet" without a refetch.
    fn position<'a>(
        &'a self,
        local: &'a dyn Deliver,
        topic: &'a Topic,
    ) -> BoxFuture<'a, Result<StreamPosition, BrokerError>>;

    /// `None` when healthy, else why the broker is degraded.
    fn degraded(&self) -> Option<String>;

    /// `topic` got its first local subscriber (`true`) or lost its last one (`false`). The
    /// hub calls this under the topic's lock, so the calls of one topic come in order; it
    /// must not block. A shared broker starts or stops carrying the topic's events to this
    /// node (Redis: one channel per topic), so a node hears only the topics it serves.
    fn follow(&self, _topic: &Topic, _on: bool) {}

    /// Whether every [`Broker::follow`] made so far is in effect: a new subscriber of a topic
    /// already followed may be confirmed at once.
    fn following(&self) -> bool {
        true
    }

    /// Resolves once every [`Broker::follow`] made before the call is in effect, so that an
    /// event published after it reaches this node's subscribers: `true`. Gives up after a
    /// bounded wait: `false` (while the broker is unavailable its events do not arrive anyway
    /// and the repair after the outage covers them; a caller whose broker is healthy must not
    /// confirm a subscription that is not in effect).
    fn ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(std::future::ready(true))
    }
}

/// The most a recovery replay may hold: half of a connection's outbound budget (messages and
/// bytes), as [`Outbox::replay_fits`](crate::outbox::Outbox::replay_fits) allows, so that the
/// live events following it still fit. A broker answers a larger replay `recovered: false`
/// without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplayBound {
    /// Most events.
    pub(crate) events: usize,
    /// Most bytes of event text.
    pub(crate) bytes: usize,
}

impl ReplayBound {
    /// The bound for a connection whose outbound queue holds `capacity` messages and
    /// `max_bytes` bytes.
    pub(crate) fn for_outbox(capacity: usize, max_bytes: usize) -> Self {
        Self {
            events: capacity / 2,
            bytes: max_bytes / 2,
        }
    }
}

/// Checks that `url` is a usable Redis URL (`redis://host:port[/db]`), as
/// [`Config::with_redis_url`](crate::Config::with_redis_url) expects.
///
/// # Errors
/// [`BrokerError::Unavailable`] with the parse error.
pub fn check_redis_url(url: &str) -> Result<(), BrokerError> {
    ::redis::Client::open(url)
        .map(drop)
        .map_err(|e| BrokerError::Unavailable(format!("invalid Redis URL: {e}")))
}

/// Stands in for a broker that could not be built (an invalid Redis URL): every publish and
/// history query fails and health says why. Keeps [`Tidings::new`](crate::Tidings::new)
/// infallible.
#[derive(Debug)]
pub(crate) struct UnusableBroker(pub(crate) String);

impl Broker for UnusableBroker {
    fn publish<'a>(
        &'a self,
        _local: &'a dyn Deliver,
        _topic: &'a Topic,
        _base: String,
        _audience: Audience,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(async move { Err(BrokerError::Unavailable(self.0.clone())) })
    }

    fn history<'a>(
        &'a self,
        _local: &'a dyn Deliver,
        _topic: &'a Topic,
        _since: &'a StreamPosition,
        _bound: ReplayBound,
    ) -> BoxFuture<'a, Result<Recovery, BrokerError>> {
        Box::pin(async move { Err(BrokerError::Unavailable(self.0.clone())) })
    }

    fn position<'a>(
        &'a self,
        _local: &'a dyn Deliver,
        _topic: &'a Topic,
    ) -> BoxFuture<'a, Result<StreamPosition, BrokerError>> {
        Box::pin(async move { Err(BrokerError::Unavailable(self.0.clone())) })
    }

    fn degraded(&self) -> Option<String> {
        Some(self.0.clone())
    }
}
