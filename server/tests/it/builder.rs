//! `Tidings::builder`: a broker chosen by the app (here one of its own, written against the
//! public `Broker` trait in this one file), typed build errors, and `Tidings::publish`
//! reporting each event's position.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::stream::{next_event, subscribe_since};
use crate::common::*;
use tidings_server::broker::{BoxFuture, Deliver, HistoryLimits, Published, Recovery, ReplayBound};
use tidings_server::protocol::{StreamPosition, Topic};
use tidings_server::{Audience, Broker, BrokerError, BuildError, Config, MemoryBroker, Tidings};
use tokio_util::sync::CancellationToken;

/// A broker of the app's own: the in-memory one, counting what passes through it.
struct Counting {
    inner: Arc<MemoryBroker>,
    publishes: Arc<AtomicUsize>,
    history_reads: Arc<AtomicUsize>,
}

impl Broker for Counting {
    fn publish<'a>(
        &'a self,
        local: &'a dyn Deliver,
        topic: Topic,
        base: String,
        audience: Audience,
    ) -> BoxFuture<'a, Result<Published, BrokerError>> {
        self.publishes.fetch_add(1, Ordering::Relaxed);
        self.inner.publish(local, topic, base, audience)
    }

    fn history<'a>(
        &'a self,
        local: &'a dyn Deliver,
        topic: &'a Topic,
        since: &'a StreamPosition,
        bound: ReplayBound,
    ) -> BoxFuture<'a, Result<Recovery, BrokerError>> {
        self.history_reads.fetch_add(1, Ordering::Relaxed);
        self.inner.history(local, topic, since, bound)
    }

    fn degraded(&self) -> Option<String> {
        None
    }

    fn start(self: Arc<Self>, local: Arc<dyn Deliver>, stop: CancellationToken) {
        self.inner.clone().start(local, stop);
    }
}

#[tokio::test]
async fn an_apps_own_broker_numbers_delivers_and_recovers() {
    let config = Config::new(SECRET);
    let publishes = Arc::new(AtomicUsize::new(0));
    let history_reads = Arc::new(AtomicUsize::new(0));
    let broker = Counting {
        inner: Arc::new(MemoryBroker::new(HistoryLimits::from_config(&config))),
        publishes: publishes.clone(),
        history_reads: history_reads.clone(),
    };
    let tidings = Tidings::builder(config).broker(broker).build().unwrap();
    let server = serve_tidings(tidings).await;
    let mut ws = server.client().await;
    subscribe(&mut ws, "list:1").await;

    let first = server.tidings.publish(event("list:1", "1")).await.unwrap();
    assert_eq!(first.topic.as_str(), "list:1");
    assert_eq!((first.seq, first.delivered), (1, 1));
    let got = next_event(&mut ws).await;
    assert_eq!(got.position(), Some(first.position()));
    let second = server.tidings.publish(event("list:1", "2")).await.unwrap();
    assert_eq!((second.seq, &second.epoch), (2, &first.epoch));
    next_event(&mut ws).await;
    assert_eq!(publishes.load(Ordering::Relaxed), 2);

    // A client that saw only the first event recovers the second from this broker's history.
    let mut late = server.client().await;
    let sub = subscribe_since(&mut late, "list:1", Some((1, &first.epoch))).await;
    assert_eq!(sub.recovered, Some(true));
    let replayed: Vec<_> = sub
        .events
        .iter()
        .map(|e| e.data.entity_id.clone())
        .collect();
    assert_eq!(replayed, ["2"]);
    assert_eq!(history_reads.load(Ordering::Relaxed), 1);
    // And it is live from there.
    let third = server.tidings.publish(event("list:1", "3")).await.unwrap();
    assert_eq!(third.delivered, 2);
    assert_eq!(
        next_event(&mut late).await.position(),
        Some(third.position())
    );
}

#[tokio::test]
async fn published_positions_follow_the_topic_and_match_the_hub() {
    let tidings = Tidings::builder(Config::new(SECRET)).build().unwrap();
    let a = tidings.publish(event("list:1", "1")).await.unwrap();
    let b = tidings.publish(event("list:1", "2")).await.unwrap();
    let other = tidings.publish(event("list:2", "1")).await.unwrap();
    assert_eq!((a.seq, b.seq, other.seq), (1, 2, 1));
    assert_eq!(a.epoch, b.epoch);
    // Numbered per topic. (A new stream starts in the broker's quiet epoch, so two topics'
    // epochs may be equal: a position is always read with its topic.)
    assert_eq!(tidings.hub().position("list:2"), Some(other.position()));
    assert_eq!(tidings.hub().position("list:1"), Some(b.position()));
    // Nobody subscribed: queued for no connection.
    assert_eq!(b.delivered, 0);
}

#[tokio::test]
async fn build_errors_are_returned_not_logged() {
    let bad = Config::new(SECRET).with_redis_url(Some("not a url".to_owned()));
    let err = Tidings::builder(bad).build().unwrap_err();
    assert!(
        matches!(err, BuildError::Broker(BrokerError::Unavailable(_))),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("broker: broker unavailable: invalid Redis URL"),
        "{err}"
    );

    let config = Config::new(SECRET).with_redis_url(Some("redis://127.0.0.1:1".to_owned()));
    let memory = MemoryBroker::new(HistoryLimits::from_config(&config));
    let err = Tidings::builder(config).broker(memory).build().unwrap_err();
    assert!(matches!(err, BuildError::TwoBrokers), "{err:?}");
}
