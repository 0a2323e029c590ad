//! The broker seam: who numbers a topic's events, keeps their history and carries them to
//! every node.
//!
//! A [`Broker`] takes an event's JSON (without `seq`/`epoch`), gives it the topic's next
//! `seq` and the stream's `epoch`, records it in the bounded history and makes it reach every
//! local subscriber (and, for a shared broker, every other node's); it answers history
//! queries for recovery and reports its health. The trait sits next to its two
//! implementations, after centrifuge's `broker.go` / `broker_memory.go` / `broker_redis.go`:
//!
//! - [`memory`] (the default): one node, no external service. It owns the streams (epoch,
//!   numbering, the bounded history ring and its counters, the expiry sweep). Its epochs
//!   change when the process restarts (history lost).
//! - [`redis`] (`Config::with_redis_url`, or [`RedisBroker::connect`] with
//!   [`Tidings::builder`](crate::Tidings::builder)): seq, epoch and history live in Redis (one
//!   Lua script per publish), and each node receives the events of the topics it has
//!   subscribers of through Redis pub/sub (a channel per topic), so a client recovers on any
//!   node.
//!
//! A broker never sees the hub: it gets a [`Deliver`] handle, the local subscribers' side of a
//! topic (queue an event, repair a gap, give a topic up), so nothing here imports `hub.rs`.

pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tidings_protocol::{StreamPosition, Topic, WSEvent};
use tokio_util::sync::CancellationToken;

use crate::audience::{Audience, AudienceError};

pub use self::memory::MemoryBroker;
#[cfg(feature = "redis")]
pub use self::redis::RedisBroker;

/// A boxed future, so that [`Broker`] stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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
pub trait Deliver: Send + Sync {
    /// Queues an event the broker numbered (`seq`) and serialized (`text`) for the local
    /// subscribers of `topic` that `audience` admits (the others get a `skipped` frame or
    /// nothing, see [`crate::audience`]), or reports a gap to repair first. `Queued` counts
    /// only the connections that got the event itself.
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
    /// How many of them `audience` admits (what a publish reports as delivered).
    fn admitted_count(&self, topic: &str, audience: &Audience) -> usize;
    /// Counts one publication queued for `delivered` connections that took `took`.
    fn published(&self, delivered: usize, took: Duration);
    /// Applies a control command another node sent ([`Broker::control`]: the JSON text of a
    /// disconnect or revocation) to this node's sessions. A node without sessions to control
    /// ignores it.
    fn control(&self, _command: &[u8]) {}
    /// Hands a presence change another node published on a topic's channel (a message the
    /// shared broker's listener recognizes by its `p` line) to this node's presence.
    fn presence(&self, _message: &[u8]) {}
    /// The broker's link to the other nodes broke and is back: presence changes may have been
    /// lost, so this node's presence watchers are resynchronized.
    fn presence_lost(&self) {}
}

/// What the hub hands presence messages to ([`Deliver::presence`]): set by the
/// [`Tidings`](crate::Tidings) handle to the presence store's relay, so that the broker and the
/// hub never import presence.
pub trait PresenceRelay: Send + Sync {
    /// One presence message received on a topic's channel.
    fn message(&self, payload: &[u8]);
    /// Messages may have been lost.
    fn lost(&self);
}

/// A shared handle delivers through what it points to (a broker's background task holds one).
impl<T: Deliver + ?Sized> Deliver for Arc<T> {
    fn deliver(
        &self,
        topic: &str,
        seq: u64,
        epoch: &str,
        text: Utf8Bytes,
        audience: &Audience,
    ) -> Delivered {
        (**self).deliver(topic, seq, epoch, text, audience)
    }

    fn repair(&self, topic: &str, from: &StreamPosition, recovery: Recovery) {
        (**self).repair(topic, from, recovery);
    }

    fn abandon(&self, topic: &str) {
        (**self).abandon(topic);
    }

    fn external_positions(&self) -> Vec<(Topic, StreamPosition)> {
        (**self).external_positions()
    }

    fn is_followed(&self, topic: &str) -> bool {
        (**self).is_followed(topic)
    }

    fn subscriber_count(&self, topic: &str) -> usize {
        (**self).subscriber_count(topic)
    }

    fn admitted_count(&self, topic: &str, audience: &Audience) -> usize {
        (**self).admitted_count(topic, audience)
    }

    fn published(&self, delivered: usize, took: Duration) {
        (**self).published(delivered, took);
    }

    fn control(&self, command: &[u8]) {
        (**self).control(command);
    }

    fn presence(&self, message: &[u8]) {
        (**self).presence(message);
    }

    fn presence_lost(&self) {
        (**self).presence_lost();
    }
}

/// What [`Tidings::publish`](crate::Tidings::publish) (and [`Broker::publish`]) did with an
/// event: the position the broker gave it, and how many local connections it was queued for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// The event's topic.
    pub topic: Topic,
    /// Its number in the topic's stream.
    pub seq: u64,
    /// The stream it was numbered in (a new one after the history was lost).
    pub epoch: Arc<str>,
    /// Local connections it was queued for: with the in-memory broker, the connections it was
    /// queued on; with Redis, the local connections subscribed when Redis took it (they
    /// receive it through this node's pub/sub subscription, like every other node's). Only
    /// connections in the event's audience count (not those sent a `skipped` frame).
    pub delivered: usize,
}

impl Published {
    /// The event's position, as a client's `since` names it.
    pub fn position(&self) -> StreamPosition {
        StreamPosition {
            seq: self.seq,
            epoch: self.epoch.to_string(),
        }
    }
}

/// A broker's receipt for one event before the topic is attached (see [`Published`]).
#[derive(Debug, Clone)]
pub(crate) struct Numbered {
    pub(crate) seq: u64,
    pub(crate) epoch: Arc<str>,
    pub(crate) delivered: usize,
}

impl Numbered {
    pub(crate) fn published(self, topic: Topic) -> Published {
        Published {
            topic,
            seq: self.seq,
            epoch: self.epoch,
            delivered: self.delivered,
        }
    }
}

/// What a subscribe with `since` found in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Whether every event after the position could be replayed.
    pub recovered: bool,
    /// The missed events, oldest first (empty when not recovered), as `(seq, JSON text,
    /// audience)`: a replay honours each event's [`Audience`] as the live delivery did.
    pub events: Vec<(u64, Utf8Bytes, Audience)>,
}

pub use crate::config::HistoryLimits;

/// What [`Deliver::deliver`] did with an event of the external broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// Queued for this many local connections (0: none here, or already delivered).
    Queued(usize),
    /// Not queued: the events after this position (the topic's last delivered one) never
    /// reached this node. Replay them ([`Deliver::repair`]), then hand the event in again.
    Gap(StreamPosition),
}

/// A fresh random epoch (16 hex digits).
pub fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The seam between the hub and where events are numbered, stored and fanned out between nodes.
///
/// Implemented by [`MemoryBroker`] and [`RedisBroker`]; hand another one to
/// [`TidingsBuilder::broker`](crate::TidingsBuilder::broker) (see `docs/ARCHITECTURE.md`,
/// "Adding a broker").
pub trait Broker: Send + Sync + 'static {
    /// Numbers `base` (an event's JSON text without `seq`/`epoch`, see [`base_text`]) on
    /// `topic`, records it in the history with its `audience` and delivers it to `local`'s
    /// subscribers (and other nodes'), with its position spliced in by [`with_position`].
    ///
    /// `audience` ([`Audience::everyone`] for most events) travels with the event: every
    /// node hands it to [`Deliver::deliver`] with the event, and [`Broker::history`] returns
    /// it with the event ([`Recovery::events`]), so that live deliveries and replays leave out
    /// the same subscribers. [`Published::delivered`] counts only the admitted ones. The
    /// caller has checked its bounds ([`Audience::check`]).
    fn publish<'a>(
        &'a self,
        local: &'a dyn Deliver,
        topic: Topic,
        base: String,
        audience: Audience,
    ) -> BoxFuture<'a, Result<Published, BrokerError>>;

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
    /// client can resume from "no event yet" without a refetch. Used for the position in a
    /// `subscribed` ack (`"position":true`) and for read stamps
    /// ([`Tidings::read_stamp`](crate::Tidings::read_stamp)). A broker that cannot tell
    /// answers an error: the ack then carries no position and the client refetches once.
    fn position<'a>(
        &'a self,
        _local: &'a dyn Deliver,
        _topic: &'a Topic,
    ) -> BoxFuture<'a, Result<StreamPosition, BrokerError>> {
        Box::pin(std::future::ready(Err(BrokerError::Unavailable(
            "this broker has no positions".to_owned(),
        ))))
    }

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

    /// Starts the broker's background work for the node whose subscribers `local` reaches
    /// (the in-memory sweep; Redis' pub/sub listener), until `stop`. Called once, inside a
    /// tokio runtime, when the [`Tidings`](crate::Tidings) handle is built.
    fn start(self: Arc<Self>, _local: Arc<dyn Deliver>, _stop: CancellationToken) {}

    /// Sends a control command (JSON text, see `control::Command`) to the other nodes, which
    /// apply it to their own sessions ([`Deliver::control`]); the caller has applied it
    /// locally. `keep_until` (Unix seconds): the command must also reach nodes that start or
    /// reconnect before then (a revocation). A single node (the memory broker) has no one to
    /// tell.
    fn control(
        &self,
        _command: String,
        _keep_until: Option<u64>,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Claims an `Idempotency-Key` (`key` already names its publisher) for `ttl` in a store
    /// every node shares; `None` when the broker has none (the node's own store is used).
    fn claim_key(
        &self,
        _key: String,
        _ttl: Duration,
    ) -> BoxFuture<'_, Result<Option<SharedClaim>, BrokerError>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Keeps `answer` under a key claimed with [`Broker::claim_key`] until `ttl`; `None` as
    /// `answer` releases the key (the request failed, a retry must run).
    fn settle_key(
        &self,
        _key: String,
        _answer: Option<String>,
        _ttl: Duration,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// What became of an `Idempotency-Key` in a store every node shares ([`Broker::claim_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedClaim {
    /// Claimed now: publish.
    New,
    /// A request holding it is still running.
    InFlight,
    /// Settled: the kept answer.
    Done(String),
}

/// Applies a control command received from another node (the JSON text
/// [`Broker::control`] sent).
pub(crate) type OnControl = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// The most a recovery replay may hold: half of a connection's outbound budget (messages and
/// bytes), as the connection's outbound queue allows (`Outbox::replay_fits`), so that the
/// live events following it still fit. A broker answers a larger replay `recovered: false`
/// without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayBound {
    /// Most events.
    pub events: usize,
    /// Most bytes of event text.
    pub bytes: usize,
}

impl ReplayBound {
    /// The bound for a connection whose outbound queue holds `capacity` messages and
    /// `max_bytes` bytes.
    pub fn for_outbox(capacity: usize, max_bytes: usize) -> Self {
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
#[cfg(feature = "redis")]
pub fn check_redis_url(url: &str) -> Result<(), BrokerError> {
    ::redis::Client::open(url)
        .map(drop)
        .map_err(|e| BrokerError::Unavailable(format!("invalid Redis URL: {e}")))
}

/// Without the `redis` feature no Redis URL is usable.
///
/// # Errors
/// Always [`BrokerError::Unavailable`].
#[cfg(not(feature = "redis"))]
pub fn check_redis_url(_url: &str) -> Result<(), BrokerError> {
    Err(BrokerError::Unavailable(
        "this build of tidings-server has no Redis broker (the `redis` feature is off)".into(),
    ))
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
        _topic: Topic,
        _base: String,
        _audience: Audience,
    ) -> BoxFuture<'a, Result<Published, BrokerError>> {
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

    fn degraded(&self) -> Option<String> {
        Some(self.0.clone())
    }
}

/// The JSON text of `event` without `seq` and `epoch` (publisher-supplied ones dropped): what
/// [`Broker::publish`] numbers.
///
/// # Errors
/// [`BrokerError::Serialize`] (cannot happen for events built by the protocol crate).
pub fn base_text(event: &WSEvent) -> Result<String, BrokerError> {
    let result = if event.seq.is_some() || event.epoch.is_some() {
        let mut bare = event.clone();
        bare.seq = None;
        bare.epoch = None;
        serde_json::to_string(&bare)
    } else {
        serde_json::to_string(event)
    };
    result.map_err(|e| {
        tracing::error!(topic = %event.topic, error = %e, "could not serialize event");
        BrokerError::Serialize
    })
}

/// `base` (a JSON object without `seq`/`epoch`) with `"seq":seq,"epoch":epoch` added before
/// its closing brace: the event is numbered without serializing it again. Epochs are
/// generated by tidings (hex digits), so they need no escaping.
pub fn with_position(base: &str, seq: u64, epoch: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::with_position;

    #[test]
    fn splicing_the_position() {
        assert_eq!(
            with_position(r#"{"a":1}"#, 7, "ab"),
            r#"{"a":1,"seq":7,"epoch":"ab"}"#
        );
    }
}
