//! Issue 10's memory and replay bounds, over real sockets: a recovery larger than the outbound
//! budget answers `recovered:false` instead of a 4003 close loop; history is bounded in bytes
//! per topic and in total; publishing to millions of distinct topics is capped; expired
//! history is swept without later traffic; `POST /publish` is rate limited per publisher.

use std::time::Duration;

use crate::common::stream::{next_event, subscribe_since};
use crate::common::*;
use serde_json::json;
use tidings_server::Config;
use tidings_server::protocol::WSEvent;

/// An event on `topic` whose payload carries `bytes` bytes of text.
fn big_event(topic: &str, id: usize, bytes: usize) -> WSEvent {
    let text = json!({
        "topic": topic,
        "event": "UPDATED",
        "data": {
            "entity_id": id.to_string(),
            "payload": {"id": id, "blob": "x".repeat(bytes)},
            "user_id": "7",
            "timestamp": "2025-11-26T10:30:00Z"
        }
    });
    serde_json::from_value(text).expect("event")
}

#[tokio::test]
async fn a_replay_larger_than_the_outbound_budget_is_not_recovered_and_never_closes() {
    // Default outbound budget: 1 MiB, so a replay may take 512 KiB. 600 × ~1.2 KB ≈ 720 KB
    // fits the history (1000 events, 1 MiB per topic) but not the replay share.
    let server = start_server().await;
    let mut ws = server.client().await;
    let sub = subscribe_since(&mut ws, "list:big", None).await;
    assert_eq!(sub.recovered, None);
    server
        .tidings
        .publish(big_event("list:big", 0, 10))
        .await
        .unwrap();
    let first = next_event(&mut ws).await;
    let epoch = first.epoch.clone().unwrap();
    drop(ws);
    for i in 1..=600 {
        server
            .tidings
            .publish(big_event("list:big", i, 1200))
            .await
            .unwrap();
    }
    // Three retries, as a client's reconnects would do: each answers recovered:false at once
    // and the connection stays usable (it was a 4003 close on every retry before).
    for _ in 0..3 {
        let mut ws = server.client().await;
        let sub = subscribe_since(&mut ws, "list:big", Some((1, &epoch))).await;
        assert_eq!(sub.recovered, Some(false));
        assert!(sub.events.is_empty());
        roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
        server
            .tidings
            .publish(big_event("list:big", 9999, 10))
            .await
            .unwrap();
        let live = next_event(&mut ws).await;
        assert_eq!(live.data.entity_id, "9999");
    }
    // A recent position still replays (a small replay fits).
    let mut ws = server.client().await;
    let last = server.tidings.hub().position("list:big").unwrap();
    let sub = subscribe_since(&mut ws, "list:big", Some((last.seq - 5, &epoch))).await;
    assert_eq!(sub.recovered, Some(true));
    assert_eq!(sub.events.len(), 5);
}

#[tokio::test]
async fn history_is_bounded_in_bytes_per_topic_and_in_total() {
    let per_topic = 600 * 1024;
    let total = 2 * 1024 * 1024;
    let server = start_server_with(
        Config::new(SECRET)
            .with_history_max_topic_bytes(per_topic)
            .with_history_max_total_bytes(total),
    )
    .await;
    // A subscriber on one of the topics must still get every event live, in order.
    let mut ws = server.client().await;
    subscribe(&mut ws, "list:0").await;
    let client = reqwest::Client::new();
    let token = mint_publish_token();
    // 250 KiB events (the POST /publish body limit is 256 KiB) to 12 topics, over HTTP.
    for round in 0..4 {
        for t in 0..12 {
            let body =
                serde_json::to_value(big_event(&format!("list:{t}"), round, 250 * 1024)).unwrap();
            let response = client
                .post(server.http_url("/publish"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
            let held = server.tidings.hub().history_bytes();
            assert!(held <= total, "history holds {held} bytes > {total}");
        }
    }
    for round in 0..4 {
        let event = next_event(&mut ws).await;
        assert_eq!(event.data.entity_id, round.to_string());
        assert_eq!(event.seq, Some(round as u64 + 1));
    }
    // Each topic keeps at most two 250 KiB events (600 KiB), the total at most 2 MiB; an
    // old position is answered recovered:false, a recent one replays.
    let pos = server.tidings.hub().position("list:0").unwrap();
    let mut ws = server.client().await;
    let sub = subscribe_since(&mut ws, "list:0", Some((0, &pos.epoch))).await;
    assert_eq!(sub.recovered, Some(false));
    let sub = subscribe_since(&mut ws, "list:11", Some((3, &pos.epoch))).await;
    // Another topic's epoch: not recovered either (positions are per topic).
    assert_eq!(sub.recovered, Some(false));
}

#[tokio::test]
async fn publishing_to_many_distinct_topics_is_capped() {
    let server = start_server_with(Config::new(SECRET).with_max_history_topics(100)).await;
    let mut ws = server.client().await;
    subscribe(&mut ws, "list:watched").await;
    for i in 0..2000 {
        server
            .tidings
            .publish(event(&format!("spray:{i}"), "1"))
            .await
            .unwrap();
    }
    let hub = server.tidings.hub();
    assert_eq!(hub.history_topic_count(), 100);
    // 100 sprayed topics with history + the subscribed one.
    assert!(hub.topic_count() <= 101, "{} topics", hub.topic_count());
    // The subscribed topic is past the cap: its events are not kept, but still delivered.
    server
        .tidings
        .publish(event("list:watched", "5"))
        .await
        .unwrap();
    let live = next_event(&mut ws).await;
    assert_eq!(live.data.entity_id, "5");
    let metrics = reqwest::get(server.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("tidings_topics 101"), "{metrics}");
    assert!(
        metrics.contains("tidings_history_topics 100\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn expired_history_is_swept_without_later_traffic() {
    let server =
        start_server_with(Config::new(SECRET).with_history_ttl(Duration::from_millis(200))).await;
    for i in 0..500 {
        server
            .tidings
            .publish(event(&format!("list:{i}"), "1"))
            .await
            .unwrap();
    }
    let hub = server.tidings.hub().clone();
    assert_eq!(hub.topic_count(), 500);
    assert!(hub.history_bytes() > 0);
    // No publish, subscribe or scrape from here on: only the background sweep can free them.
    let swept = eventually(|| {
        let hub = hub.clone();
        async move { hub.topic_count() == 0 }
    })
    .await;
    assert!(swept, "{} topics left", hub.topic_count());
    assert_eq!(hub.history_bytes(), 0);
    assert_eq!(hub.history_topic_count(), 0);
}

#[tokio::test]
async fn post_publish_is_rate_limited_per_publisher() {
    let server = start_server_with(Config::new(SECRET).with_publish_rate(2, 10)).await;
    let client = reqwest::Client::new();
    let token_a = mint_publish_token();
    let token_b = mint_claims(json!({
        "sub": "other-backend",
        "exp": 4_000_000_000u64,
        "scope": "publish"
    }));
    let mut ws = server.client().await;
    subscribe(&mut ws, "list:1").await;
    let post = |token: String| {
        let client = client.clone();
        let url = server.http_url("/publish");
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&event_json("list:1", "1"))
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..10 {
        assert_eq!(post(token_a.clone()).await.status(), 202);
    }
    let refused = post(token_a.clone()).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "Rate limit exceeded");
    // Another publisher is not affected.
    assert_eq!(post(token_b).await.status(), 202);
    // Exactly 11 events reached the subscriber: the refused one was not published.
    for _ in 0..11 {
        next_event(&mut ws).await;
    }
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
    // After a pause the first publisher may publish again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(post(token_a).await.status(), 202);
}
