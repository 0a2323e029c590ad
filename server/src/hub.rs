//! The hub: which connections are subscribed to which topic, and the broadcast itself.
//!
//! Topics are spread over [`SHARDS`] independently locked maps (by a hash of the topic name),
//! so subscribing on one topic never waits for a broadcast on another. A broadcast serializes
//! the event once into a shared [`Utf8Bytes`], takes its shard's read lock, and pushes a
//! clone of those bytes (a reference-count increment) into each subscriber's
//! outbound queue without ever waiting for a socket. A subscriber whose queue is full or closed is
//! dead: it is counted out and removed from the topic right after the broadcast, and its
//! connection closes (4003 for a full queue).
//!
//! The hub holds no global state: it is a cheap `Clone` handle that travels in the app's state
//! (inside [`Tidings`](crate::Tidings)).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::extract::ws::Utf8Bytes;
use tidings_protocol::{Topic, WSEvent};

use crate::metrics::Metrics;
use crate::outbox::Outbox;

/// Number of independently locked topic maps.
pub const SHARDS: usize = 64;

/// Identifies one connection inside the hub.
pub(crate) type ConnId = u64;

type Subscribers = HashMap<ConnId, Arc<Outbox>>;
type Shard = RwLock<HashMap<Topic, Subscribers>>;

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
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("topics", &self.topic_count())
            .finish_non_exhaustive()
    }
}

impl Hub {
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Shard::default()).collect(),
                hasher: RandomState::new(),
                next_id: AtomicU64::new(1),
                metrics: Metrics::default(),
            }),
        }
    }

    /// Sends `event` to every connection subscribed to exactly `event.topic` and returns how
    /// many connections it was queued for.
    ///
    /// Never waits for a socket: the event is serialized once and queued on each subscriber's
    /// bounded outbound queue. A subscriber whose queue is full is not counted, is removed
    /// from the topic and is closed with 4003 (slow consumer). Callable from any thread or
    /// handler.
    pub fn publish(&self, event: WSEvent) -> usize {
        self.publish_ref(&event)
    }

    /// As [`Hub::publish`], borrowing the event.
    pub fn publish_ref(&self, event: &WSEvent) -> usize {
        let started = std::time::Instant::now();
        let delivered = self.publish_unmeasured(event);
        self.inner.metrics.published(delivered, started.elapsed());
        delivered
    }

    fn publish_unmeasured(&self, event: &WSEvent) -> usize {
        match serde_json::to_string(event) {
            Ok(text) => self.broadcast(event.topic.as_str(), Utf8Bytes::from(text)),
            // Cannot happen for events built by the protocol crate; logged rather than
            // panicking in a caller's handler.
            Err(e) => {
                tracing::error!(topic = %event.topic, error = %e, "could not serialize event");
                0
            }
        }
    }

    /// Queues an already serialized text frame for every subscriber of `topic`; returns how
    /// many connections it was queued for.
    pub(crate) fn broadcast(&self, topic: &str, text: Utf8Bytes) -> usize {
        let shard = self.shard(topic);
        let mut delivered = 0;
        let mut dead = Vec::new();
        {
            let topics = read(shard);
            let Some(subscribers) = topics.get(topic) else {
                return 0;
            };
            for (id, outbox) in subscribers {
                match outbox.push(text.clone()) {
                    Ok(()) => delivered += 1,
                    Err(_) => dead.push(*id),
                }
            }
        }
        if !dead.is_empty() {
            tracing::debug!(topic, count = dead.len(), "removing dead subscribers");
            let mut topics = write(shard);
            if let Some(subscribers) = topics.get_mut(topic) {
                for id in &dead {
                    subscribers.remove(id);
                }
                if subscribers.is_empty() {
                    topics.remove(topic);
                }
            }
        }
        delivered
    }

    /// How many connections are subscribed to `topic`.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        read(self.shard(topic)).get(topic).map_or(0, HashMap::len)
    }

    /// How many topics have at least one subscriber.
    pub fn topic_count(&self) -> usize {
        self.inner.shards.iter().map(|s| read(s).len()).sum()
    }

    /// How many (connection, topic) subscriptions exist.
    pub fn subscription_count(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| read(s).values().map(HashMap::len).sum::<usize>())
            .sum()
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn next_conn_id(&self) -> ConnId {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds connection `id` to `topic` (idempotent).
    pub(crate) fn subscribe(&self, topic: &Topic, id: ConnId, outbox: &Arc<Outbox>) {
        let mut topics = write(self.shard(topic.as_str()));
        match topics.get_mut(topic.as_str()) {
            Some(subscribers) => {
                subscribers.insert(id, outbox.clone());
            }
            None => {
                topics.insert(topic.clone(), HashMap::from([(id, outbox.clone())]));
            }
        }
    }

    /// Removes connection `id` from `topic`; a topic left without subscribers is dropped.
    pub(crate) fn unsubscribe(&self, topic: &str, id: ConnId) {
        let mut topics = write(self.shard(topic));
        if let Some(subscribers) = topics.get_mut(topic) {
            subscribers.remove(&id);
            if subscribers.is_empty() {
                topics.remove(topic);
            }
        }
    }

    fn shard(&self, topic: &str) -> &Shard {
        let hash = self.inner.hasher.hash_one(topic);
        // Truncating the hash is fine: any bits pick a shard.
        &self.inner.shards[hash as usize % self.inner.shards.len()]
    }
}

// A panic while a shard is locked cannot leave a map half-updated (every critical section is
// a single map operation), so a poisoned lock is still safe to use.
fn read(shard: &Shard) -> RwLockReadGuard<'_, HashMap<Topic, Subscribers>> {
    shard.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(shard: &Shard) -> RwLockWriteGuard<'_, HashMap<Topic, Subscribers>> {
    shard.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_protocol::{EventData, EventType, Payload};

    fn event(topic: &str) -> WSEvent {
        WSEvent {
            topic: Topic::new(topic).unwrap(),
            event: EventType::Added,
            data: EventData {
                entity_id: "1".into(),
                payload: Payload::from_json(r#"{"n":1}"#.into()).unwrap(),
                user_id: "7".into(),
                timestamp: "2025-11-26T10:30:00Z".into(),
            },
        }
    }

    #[tokio::test]
    async fn fan_out_isolation_and_dead_subscribers() {
        let hub = Hub::new();
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
        assert_eq!(hub.topic_count(), 0);
    }
}
