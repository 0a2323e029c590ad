//! Recovery with the in-memory broker: replay after `since`, no gap and no duplicate under
//! concurrent publishing, `recovered:false` when history cannot answer, and the seed's exact
//! ack when `since` is absent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::stream::{Seen, next_event, subscribe_since};
use crate::common::*;
use futures_util::StreamExt;
use tidings_server::Config;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn without_since_the_ack_is_the_seeds_exact_text() {
    let server = start_server().await;
    let mut ws = server.client().await;
    roundtrip(
        &mut ws,
        r#"{"action":"subscribe","topic":"list:1"}"#,
        r#"{"action":"subscribed","topic":"list:1"}"#,
    )
    .await;
}

#[tokio::test]
async fn a_reconnecting_client_gets_what_it_missed_in_order_then_live() {
    let server = start_server().await;
    let mut ws = server.client().await;
    let sub = subscribe_since(&mut ws, "list:1", None).await;
    assert_eq!(sub.recovered, None);
    let mut seen = Seen::default();
    for i in 1..=3 {
        server
            .tidings
            .hub()
            .publish(event("list:1", &i.to_string()));
        seen.record(&next_event(&mut ws).await);
    }
    drop(ws);
    for i in 4..=6 {
        server
            .tidings
            .publish(event("list:1", &i.to_string()))
            .await
            .unwrap();
    }
    let mut ws = server.client().await;
    let sub = subscribe_since(&mut ws, "list:1", seen.since()).await;
    assert_eq!(sub.recovered, Some(true));
    for e in &sub.events {
        seen.record(e);
    }
    server.tidings.hub().publish(event("list:1", "7"));
    seen.record(&next_event(&mut ws).await);
    assert_eq!(seen.entities, ["1", "2", "3", "4", "5", "6", "7"]);
}

#[tokio::test]
async fn the_ack_text_with_since() {
    let server = start_server().await;
    server.tidings.hub().publish(event("list:1", "1"));
    let pos = server.tidings.hub().position("list:1").unwrap();
    let mut ws = server.client().await;
    let since = format!(
        r#"{{"action":"subscribe","topic":"list:1","since":{{"seq":1,"epoch":"{}"}}}}"#,
        pos.epoch
    );
    roundtrip(
        &mut ws,
        &since,
        r#"{"action":"subscribed","topic":"list:1","recovered":true}"#,
    )
    .await;
}

#[tokio::test]
async fn wrong_epoch_or_too_old_is_not_recovered_and_replays_nothing() {
    let server = start_server_with(Config::new(SECRET).with_history_size(2)).await;
    for i in 1..=5 {
        server
            .tidings
            .hub()
            .publish(event("list:1", &i.to_string()));
    }
    let pos = server.tidings.hub().position("list:1").unwrap();
    let mut ws = server.client().await;
    let sub = subscribe_since(&mut ws, "list:1", Some((4, "not-the-epoch"))).await;
    assert_eq!((sub.recovered, sub.events.len()), (Some(false), 0));
    // History holds 4 and 5: since 3 is recoverable, since 2 is too old.
    let mut ws = server.client().await;
    let sub = subscribe_since(&mut ws, "list:1", Some((2, &pos.epoch))).await;
    assert_eq!((sub.recovered, sub.events.len()), (Some(false), 0));
    let mut ws = server.client().await;
    let sub = subscribe_since(&mut ws, "list:1", Some((3, &pos.epoch))).await;
    assert_eq!(sub.recovered, Some(true));
    let seqs: Vec<u64> = sub.events.iter().map(|e| e.seq.unwrap()).collect();
    assert_eq!(seqs, [4, 5]);
    // The connection is live afterwards.
    server.tidings.hub().publish(event("list:1", "6"));
    assert_eq!(next_event(&mut ws).await.seq, Some(6));
}

/// Clients drop and resubscribe with `since` while a publisher runs flat out: each must end
/// with every event exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_gap_and_no_duplicate_under_concurrent_publishing() {
    const TOTAL: u64 = 3000;
    const CLIENTS: usize = 12;
    let server = Arc::new(
        start_server_with(
            Config::new(SECRET)
                .with_history_size(TOTAL as usize)
                .with_outbound_queue_capacity(TOTAL as usize + 100),
        )
        .await,
    );
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let server = server.clone();
        clients.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut ws = server.client().await;
            subscribe_since(&mut ws, "list:1", None).await;
            let mut reconnects = 0;
            while seen.last_seq < TOTAL {
                let e = next_event(&mut ws).await;
                seen.record(&e);
                // Drop the connection every few hundred events (at different points per client).
                if seen.last_seq % (150 + 37 * c as u64) == 0 && seen.last_seq < TOTAL {
                    drop(ws);
                    reconnects += 1;
                    ws = server.client().await;
                    let sub = subscribe_since(&mut ws, "list:1", seen.since()).await;
                    assert_eq!(sub.recovered, Some(true));
                    for e in &sub.events {
                        seen.record(e);
                    }
                }
            }
            (seen, reconnects)
        }));
    }
    // Every client is subscribed once the topic has CLIENTS subscribers.
    assert!(
        eventually(|| async { server.tidings.hub().subscriber_count("list:1") == CLIENTS }).await
    );
    let publishing = Arc::new(AtomicBool::new(true));
    let publisher = {
        let server = server.clone();
        let publishing = publishing.clone();
        tokio::spawn(async move {
            for i in 1..=TOTAL {
                server
                    .tidings
                    .hub()
                    .publish(event("list:1", &i.to_string()));
                if i % 20 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            publishing.store(false, Ordering::Relaxed);
        })
    };
    publisher.await.unwrap();
    let want: Vec<String> = (1..=TOTAL).map(|i| i.to_string()).collect();
    for client in clients {
        let (seen, reconnects) = tokio::time::timeout(Duration::from_secs(60), client)
            .await
            .expect("client finished")
            .unwrap();
        assert_eq!(seen.entities, want);
        assert!(reconnects >= 1);
    }
    assert!(!publishing.load(Ordering::Relaxed));
}

#[tokio::test]
async fn publishing_while_nobody_listens_is_still_recoverable() {
    let server = start_server().await;
    let mut ws = server.client().await;
    let sub = subscribe_since(&mut ws, "user:9", None).await;
    assert!(sub.events.is_empty());
    server.tidings.hub().publish(event("user:9", "1"));
    let first = next_event(&mut ws).await;
    ws.close(None).await.unwrap();
    while let Some(Ok(m)) = ws.next().await {
        if matches!(m, Message::Close(_)) {
            break;
        }
    }
    assert!(eventually(|| async { server.tidings.hub().subscriber_count("user:9") == 0 }).await);
    server.tidings.hub().publish(event("user:9", "2"));
    let mut ws = server.client().await;
    let pos = first.position().unwrap();
    let sub = subscribe_since(&mut ws, "user:9", Some((pos.seq, &pos.epoch))).await;
    assert_eq!(sub.recovered, Some(true));
    assert_eq!(sub.events.len(), 1);
    assert_eq!(sub.events[0].data.entity_id, "2");
}

/// The browser client's gap recovery, on ONE live connection: `unsubscribe`, then `subscribe`
/// with `since` an older position, replays what followed that position and resumes live. (A
/// subscribe for a topic the connection still has answers `recovered:false` at once, which is
/// why the client unsubscribes first.)
#[tokio::test]
async fn unsubscribe_then_since_on_the_same_connection_replays_from_there() {
    let server = start_server().await;
    let mut ws = server.client().await;
    subscribe_since(&mut ws, "list:1", None).await;
    for i in 1..=4 {
        server
            .tidings
            .hub()
            .publish(event("list:1", &i.to_string()));
        assert_eq!(next_event(&mut ws).await.seq, Some(i));
    }
    let epoch = server.tidings.hub().position("list:1").unwrap().epoch;
    // Still subscribed: a `since` cannot be checked against what was delivered.
    let sub = subscribe_since(&mut ws, "list:1", Some((2, &epoch))).await;
    assert_eq!((sub.recovered, sub.events.len()), (Some(false), 0));
    // The client's way: as if 3 and 4 had been lost, it resumes from 2.
    roundtrip(
        &mut ws,
        r#"{"action":"unsubscribe","topic":"list:1"}"#,
        r#"{"action":"unsubscribed","topic":"list:1"}"#,
    )
    .await;
    server.tidings.hub().publish(event("list:1", "5"));
    let sub = subscribe_since(&mut ws, "list:1", Some((2, &epoch))).await;
    assert_eq!(sub.recovered, Some(true));
    let seqs: Vec<u64> = sub.events.iter().map(|e| e.seq.unwrap()).collect();
    assert_eq!(seqs, [3, 4, 5]);
    server.tidings.hub().publish(event("list:1", "6"));
    assert_eq!(next_event(&mut ws).await.seq, Some(6));
}
