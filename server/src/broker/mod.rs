//! The broker seam: who numbers a topic's events, keeps their history and carries them to
//! every node.
//!
//! A [`Broker`] takes an event's JSON (without `seq`/`epoch`), gives it the topic's next
//! `seq` and the stream's `epoch`, records it in the bounded history and makes it reach every
//! local subscriber (and, for a shared broker, every other node's); it answers history
//! queries for recovery and reports its health. Two implementations, after centrifuge's
//! `broker_memory.go` / `broker_redis.go`:
//!
//! - [`memory`] (the default): one node, no external service. The [`Hub`] itself holds the
//!   history, so that a subscribe with `since` replays and joins atomically under the topic's
//!   lock. Its epochs change when the process restarts (history lost).
//! - [`redis`] (`Config::with_redis_url`): seq, epoch and history live in Redis (one Lua script
//!   per publish), and each node receives the events of the topics it has subscribers of
//!   through Redis pub/sub (a channel per topic), so a client recovers on any node.

pub(crate) mod memory;
pub(crate) mod redis;

use std::future::Future;
use std::pin::Pin;

use tidings_protocol::{StreamPosition, Topic};

use crate::hub::{Hub, Recovery};

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
}

/// The seam between the hub and where events are numbered, stored and fanned out between nodes.
pub(crate) trait Broker: Send + Sync + 'static {
    /// Numbers `base` (an event's JSON text without `seq`/`epoch`) on `topic`, records it in
    /// the history and delivers it to `hub`'s local subscribers (and other nodes'). Returns
    /// how many local connections it was (or will be) queued for.
    fn publish<'a>(
        &'a self,
        hub: &'a Hub,
        topic: &'a Topic,
        base: String,
    ) -> BoxFuture<'a, Result<usize, BrokerError>>;

    /// The events of `topic` after `since`, if the history still holds all of them and they
    /// fit in `bound` (else `recovered: false` and no events: a replay the connection could
    /// not take is not fetched).
    fn history<'a>(
        &'a self,
        hub: &'a Hub,
        topic: &'a Topic,
        since: &'a StreamPosition,
        bound: ReplayBound,
    ) -> BoxFuture<'a, Result<Recovery, BrokerError>>;

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
    /// event published after it reaches this node's subscribers. Gives up after a bounded
    /// wait while the broker is unavailable (its events do not arrive then anyway; the
    /// repair after the outage covers them).
    fn ready(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
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
        _hub: &'a Hub,
        _topic: &'a Topic,
        _base: String,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(async move { Err(BrokerError::Unavailable(self.0.clone())) })
    }

    fn history<'a>(
        &'a self,
        _hub: &'a Hub,
        _topic: &'a Topic,
        _since: &'a StreamPosition,
        _bound: ReplayBound,
    ) -> BoxFuture<'a, Result<Recovery, BrokerError>> {
        Box::pin(async move { Err(BrokerError::Unavailable(self.0.clone())) })
    }

    fn degraded(&self) -> Option<String> {
        Some(self.0.clone())
    }
}
