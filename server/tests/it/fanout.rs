//! Delivery: ordering through the one outbound queue, topic isolation, many concurrent
//! clients, events forwarded byte for byte, and dead connections leaving the hub.

use crate::common::*;
use tidings_server::Config;

#[tokio::test]
async fn an_event_published_before_a_ping_arrives_before_the_pong() {
    let server = start_server().await;
    let mut ws = server.client().await;
    subscribe(&mut ws, "list:1").await;
    for i in 0..20 {
        assert_eq!(
            server
                .publish_http(&event_json("list:1", &i.to_string()))
                .await,
            1
        );
        send(&mut ws, r#"{"action":"ping"}"#).await;
        assert_eq!(
            recv_text(&mut ws).await,
            event_text("list:1", &i.to_string())
        );
        assert_eq!(recv_text(&mut ws).await, r#"{"action":"pong"}"#);
    }
    // In process too, several events queued before one ping.
    for i in 0..5 {
        assert_eq!(
            server
                .tidings
                .hub()
                .publish(event("list:1", &i.to_string())),
            1
        );
    }
    send(&mut ws, r#"{"action":"ping"}"#).await;
    for i in 0..5 {
        assert_eq!(
            recv_text(&mut ws).await,
            event_text("list:1", &i.to_string())
        );
    }
    assert_eq!(recv_text(&mut ws).await, r#"{"action":"pong"}"#);
}

#[tokio::test]
async fn events_reach_only_subscribers_of_exactly_their_topic() {
    let server = start_server().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut none = server.client().await;
    subscribe(&mut a, "list:1").await;
    subscribe(&mut b, "list:12").await;
    subscribe(&mut b, "List:1").await;
    assert_eq!(server.publish_http(&event_json("list:1", "1")).await, 1);
    assert_eq!(server.publish_http(&event_json("list:12", "2")).await, 1);
    assert_eq!(server.publish_http(&event_json("list:2", "3")).await, 0);
    assert_eq!(recv_text(&mut a).await, event_text("list:1", "1"));
    assert_eq!(recv_text(&mut b).await, event_text("list:12", "2"));
    for ws in [&mut a, &mut b, &mut none] {
        roundtrip(ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_clients_each_get_exactly_their_own_events_in_order() {
    const CLIENTS: usize = 50;
    const EVENTS: usize = 20;
    let server = start_server().await;
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let mut ws = server.client().await;
        subscribe(&mut ws, &format!("user:{c}")).await;
        clients.push(ws);
    }
    // Every client also shares one topic, published to interleaved with the private ones.
    for ws in &mut clients {
        subscribe(ws, "gifts:all").await;
    }
    let publisher = {
        let tidings = server.tidings.clone();
        tokio::spawn(async move {
            for e in 0..EVENTS {
                for c in 0..CLIENTS {
                    let n = tidings
                        .hub()
                        .publish(event(&format!("user:{c}"), &format!("{e}")));
                    assert_eq!(n, 1);
                }
                assert_eq!(
                    tidings.hub().publish(event("gifts:all", &format!("{e}"))),
                    CLIENTS
                );
                tokio::task::yield_now().await;
            }
        })
    };
    let readers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, mut ws)| {
            tokio::spawn(async move {
                let mut own = 0;
                let mut shared = 0;
                while own < EVENTS || shared < EVENTS {
                    let text = recv_text(&mut ws).await;
                    if text.starts_with(r#"{"topic":"gifts:all""#) {
                        assert_eq!(text, event_text("gifts:all", &shared.to_string()));
                        shared += 1;
                    } else {
                        assert_eq!(text, event_text(&format!("user:{c}"), &own.to_string()));
                        own += 1;
                    }
                }
                // Nothing else is pending: the next frame is the pong.
                roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
            })
        })
        .collect();
    publisher.await.unwrap();
    for r in readers {
        r.await.unwrap();
    }
}

#[tokio::test]
async fn big_integers_nested_payloads_and_timestamps_are_forwarded_unchanged() {
    let server = start_server().await;
    let mut ws = server.client().await;
    subscribe(&mut ws, "list:123").await;
    let text = r#"{"topic":"list:123","event":"STATUS_CHANGED","data":{"entity_id":"456","payload":{"id":12345678901234567890123,"price":19.990,"nested":{"a":[1,{"b":null}],"é":"ü"},"max":9007199254740993},"user_id":"789","timestamp":"2025-11-26T10:30:00.123456+00:00"}}"#;
    let response = reqwest::Client::new()
        .post(server.http_url("/publish"))
        .bearer_auth(mint_publish_token())
        .header("content-type", "application/json")
        .body(text)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.text().await.unwrap(), r#"{"delivered":1}"#);
    assert_eq!(recv_text(&mut ws).await, text);
}

#[tokio::test]
async fn an_abrupt_disconnect_leaves_every_topic() {
    let server = start_server().await;
    let mut stay = server.client().await;
    subscribe(&mut stay, "list:1").await;
    let mut gone = server.client().await;
    subscribe(&mut gone, "list:1").await;
    subscribe(&mut gone, "list:2").await;
    assert_eq!(server.publish_http(&event_json("list:1", "1")).await, 2);
    // Drop the TCP socket with a reset, no close frame.
    match gone.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp.set_zero_linger().unwrap(),
        _ => unreachable!("plain TCP in tests"),
    }
    drop(gone);
    let delivered_falls = eventually(|| async {
        server.publish_http(&event_json("list:2", "2")).await == 0
            && server.publish_http(&event_json("list:1", "3")).await == 1
    })
    .await;
    assert!(delivered_falls, "the dead connection is still counted");
    assert_eq!(server.tidings.hub().subscriber_count("list:2"), 0);
    assert_eq!(recv_text(&mut stay).await, event_text("list:1", "1"));
}

#[tokio::test]
async fn a_clean_disconnect_without_close_frame_leaves_every_topic() {
    let server = start_server().await;
    let mut gone = server.client().await;
    subscribe(&mut gone, "list:7").await;
    drop(gone);
    assert!(eventually(|| async { server.tidings.hub().publish(event("list:7", "1")) == 0 }).await);
}

// Current-thread runtime: the connection's writer cannot run while the loop below publishes,
// so the queue overflows deterministically.
#[tokio::test]
async fn a_slow_consumer_is_dropped_with_4003() {
    let server = start_server_with(Config::new(SECRET).with_outbound_queue_capacity(4)).await;
    let mut slow = server.client().await;
    subscribe(&mut slow, "list:1").await;
    let hub = server.tidings.hub();
    let counts: Vec<usize> = (0..6)
        .map(|i| hub.publish(event("list:1", &i.to_string())))
        .collect();
    assert_eq!(counts, [1, 1, 1, 1, 0, 0]);
    assert_eq!(hub.subscriber_count("list:1"), 0);
    let (code, reason) = recv_close(&mut slow).await;
    assert_eq!((code, reason.as_str()), (4003, "slow consumer"));
}

#[tokio::test]
async fn publish_counts_connections_not_subscriptions() {
    let server = start_server().await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut ws = server.client().await;
        subscribe(&mut ws, "occasion:9").await;
        clients.push(ws);
    }
    assert_eq!(server.publish_http(&event_json("occasion:9", "1")).await, 3);
    for ws in &mut clients {
        assert_eq!(recv_text(ws).await, event_text("occasion:9", "1"));
    }
}
