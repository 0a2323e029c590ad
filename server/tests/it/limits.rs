//! Abuse limits over a real socket: the inbound rate limit, connection limits, slow consumers.

use std::time::Duration;

use crate::common::*;
use tidings_server::Config;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_resubscribe_burst_passes_with_the_defaults() {
    let server = start_server().await;
    let mut ws = server.client().await;
    // A reconnecting client resubscribing 500 topics in one go.
    for i in 0..500 {
        send(
            &mut ws,
            &format!(r#"{{"action":"subscribe","topic":"list:{i}"}}"#),
        )
        .await;
    }
    for i in 0..500 {
        assert_eq!(
            recv_text(&mut ws).await,
            format!(r#"{{"action":"subscribed","topic":"list:{i}"}}"#)
        );
    }
}

#[tokio::test]
async fn over_the_rate_messages_are_dropped_then_flooding_closes_1008() {
    // No refill to speak of during the test: the burst is all a client gets.
    let config = Config::new(SECRET)
        .with_message_rate(1)
        .with_message_burst(3)
        .with_max_rate_violations(5)
        .with_rate_violation_window(Duration::from_secs(60));
    let server = start_server_with(config).await;
    let mut ws = server.client().await;
    for _ in 0..3 {
        roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
    }
    // Over the burst, messages are dropped with an error reply instead of a pong (a token may
    // come back meanwhile on a slow machine, hence the loop), and the fifth violation closes.
    let mut errors = 0;
    for _ in 0..100 {
        send(&mut ws, r#"{"action":"ping"}"#).await;
        match next_frame(&mut ws).await {
            Message::Text(text) if text.as_str() == r#"{"error":"Rate limit exceeded"}"# => {
                errors += 1
            }
            Message::Text(text) => assert_eq!(text.as_str(), r#"{"action":"pong"}"#),
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 1008);
                assert_eq!(errors, 4, "closed on the fifth violation");
                return;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("never closed");
}

#[tokio::test]
async fn dozens_of_tabs_of_one_user_work_with_the_defaults() {
    let server = start_server().await;
    let mut tabs = Vec::new();
    for _ in 0..50 {
        tabs.push(server.client().await);
    }
    for ws in &mut tabs {
        roundtrip(ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
    }
}

#[tokio::test]
async fn over_the_per_user_limit_closes_4005_and_a_closed_tab_frees_its_slot() {
    let server = start_server_with(Config::new(SECRET).with_max_connections_per_user(2)).await;
    let url = server.ws_url(&mint_token("7"));
    let mut first = connect(&url).await;
    let mut second = connect(&url).await;
    roundtrip(&mut second, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
    // The handshake completes, then the close comes first.
    let mut third = connect(&url).await;
    let (code, reason) = recv_close(&mut third).await;
    assert_eq!((code, reason.as_str()), (4005, "too many connections"));
    // Another user is not affected.
    let mut other = connect(&server.ws_url(&mint_token("8"))).await;
    roundtrip(&mut other, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
    // Closing a tab releases its slot.
    first.close(None).await.expect("close");
    while next_frame_or_end(&mut first).await {}
    // The slot comes back once the server has seen the close; retry until then.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let mut ws = connect(&url).await;
        send(&mut ws, r#"{"action":"ping"}"#).await;
        match next_frame(&mut ws).await {
            Message::Text(text) => {
                assert_eq!(text.as_str(), r#"{"action":"pong"}"#);
                break;
            }
            Message::Close(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("the slot was not released: {other:?}"),
        }
    }
}

#[tokio::test]
async fn over_the_total_limit_closes_4005() {
    let server = start_server_with(Config::new(SECRET).with_max_connections(2)).await;
    let mut a = connect(&server.ws_url(&mint_token("1"))).await;
    let _b = connect(&server.ws_url(&mint_token("2"))).await;
    let mut c = connect(&server.ws_url(&mint_token("3"))).await;
    assert_eq!(recv_close(&mut c).await.0, 4005);
    roundtrip(&mut a, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
}

/// Reads one frame; false once the stream has ended (or errored).
async fn next_frame_or_end(ws: &mut Ws) -> bool {
    use futures_util::StreamExt;
    matches!(
        tokio::time::timeout(TIMEOUT, ws.next()).await,
        Ok(Some(Ok(_)))
    )
}

/// A seed event on `topic` whose payload carries `size` bytes of filler.
fn big_event(topic: &str, n: usize, size: usize) -> tidings_server::protocol::WSEvent {
    let text = format!(
        r#"{{"topic":"{topic}","event":"UPDATED","data":{{"entity_id":"{n}","payload":{{"blob":"{}"}},"user_id":"1","timestamp":"2025-11-26T10:30:00Z"}}}}"#,
        "x".repeat(size)
    );
    serde_json::from_str(&text).expect("event")
}

#[tokio::test]
async fn a_stalled_reader_gets_4003_and_a_healthy_one_receives_every_event() {
    let config = Config::new(SECRET)
        .with_max_outbound_bytes(256 * 1024)
        .with_max_write_buffer_size(128 * 1024)
        // The stalled client reads again only after it was dropped: give the writer time to
        // get its close frame out then.
        .with_close_timeout(TIMEOUT);
    let server = start_server_with(config).await;
    let mut healthy = server.client().await;
    subscribe(&mut healthy, "list:big").await;

    // The stalled client: a small receive buffer, and it stops reading after subscribing.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let stream = socket.connect(server.addr).await.expect("connect");
    let (mut stalled, _) = tokio_tungstenite::client_async(
        server.ws_url(&mint_token("9")),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .expect("handshake");
    subscribe(&mut stalled, "list:big").await;
    assert_eq!(server.tidings.hub().subscriber_count("list:big"), 2);

    // Each event is read by the healthy client before the next is published, so only the
    // stalled client falls behind. 1000 × 32 KiB is far more than any socket buffers hold.
    let mut published = 0;
    let mut dropped_at = None;
    for n in 0..1000 {
        let delivered = server
            .tidings
            .hub()
            .publish(big_event("list:big", n, 32 * 1024));
        published += 1;
        assert!(delivered >= 1);
        let text = recv_text(&mut healthy).await;
        assert!(
            text.contains(&format!(r#""entity_id":"{n}""#)),
            "healthy client got every event in order"
        );
        if delivered == 1 && dropped_at.is_none() {
            dropped_at = Some(n);
        }
        // A few more after the drop, to show the broadcast goes on.
        if dropped_at.is_some_and(|d| n >= d + 5) {
            break;
        }
    }
    let dropped_at = dropped_at.expect("the stalled client was never dropped");
    assert!(published > dropped_at);
    assert_eq!(server.tidings.hub().subscriber_count("list:big"), 1);

    // The stalled client reads again: what was already in flight, then close 4003.
    loop {
        match next_frame(&mut stalled).await {
            Message::Text(_) => {}
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 4003);
                break;
            }
            other => panic!("expected events then close 4003, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_ping_frame_flood_closes_1008() {
    use futures_util::SinkExt;
    let config = Config::new(SECRET)
        .with_message_rate(1)
        .with_message_burst(5)
        .with_max_rate_violations(5);
    let server = start_server_with(config).await;
    let mut ws = server.client().await;
    for _ in 0..50 {
        // The server may already have closed: later sends can fail.
        if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
            break;
        }
    }
    // Pongs come back for the admitted pings, then the close.
    let (code, _) = recv_close(&mut ws).await;
    assert_eq!(code, 1008);
}

/// Issue 10 item 5: a message that never ends (a non-final text frame, then empty non-final
/// continuation frames as fast as the socket takes them) is no message for the message rate
/// limit; the inbound byte budget throttles it and closes it with 1008, while a subscribed
/// client on the same server keeps receiving every event.
#[tokio::test]
async fn an_endless_continuation_frame_stream_closes_1008_and_others_keep_receiving() {
    use tokio::io::AsyncWriteExt;
    let config = Config::new(SECRET)
        .with_inbound_byte_rate(64 * 1024)
        .with_inbound_byte_burst(64 * 1024)
        // Closed once held back for half of this window.
        .with_rate_violation_window(Duration::from_secs(2));
    let server = start_server_with(config).await;
    let mut healthy = server.client().await;
    subscribe(&mut healthy, "list:1").await;

    let (mut flood_read, mut flood_write) = raw::raw_connect(&server, "flooder").await.into_split();
    let start = raw::encode(false, raw::TEXT, b"");
    let empties = raw::encode(false, raw::CONTINUATION, b"").repeat(10_000);
    let flooder = tokio::spawn(async move {
        flood_write.write_all(&start).await?;
        let mut sent = 0usize;
        loop {
            flood_write.write_all(&empties).await?;
            sent += 10_000;
            if sent > 100_000_000 {
                return Ok::<_, std::io::Error>(());
            }
        }
    });
    let close = tokio::spawn(async move { raw::read_close_code(&mut flood_read).await });

    let mut delivered = 0;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !close.is_finished() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flooding connection was not closed within {TIMEOUT:?}"
        );
        delivered += 1;
        let id = delivered.to_string();
        server.tidings.hub().publish(event("list:1", &id));
        assert_eq!(recv_text(&mut healthy).await, event_text("list:1", &id));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(close.await.unwrap(), 1008);
    assert!(delivered > 0);
    // The flooder's writes end with the connection.
    let _ = tokio::time::timeout(TIMEOUT, flooder).await;
    // And the healthy client is still served.
    server.tidings.hub().publish(event("list:1", "999999"));
    assert_eq!(
        recv_text(&mut healthy).await,
        event_text("list:1", "999999")
    );
}

/// With the default byte budget, a burst of long-topic subscribes and a run of maximum-size
/// messages within the message burst pass untouched.
#[tokio::test]
async fn the_default_byte_budget_lets_big_bursts_through() {
    let server = start_server().await;
    let mut ws = server.client().await;
    let long = "x".repeat(200);
    for i in 0..500 {
        send(
            &mut ws,
            &format!(r#"{{"action":"subscribe","topic":"list:{long}{i}"}}"#),
        )
        .await;
    }
    for i in 0..500 {
        assert_eq!(
            recv_text(&mut ws).await,
            format!(r#"{{"action":"subscribed","topic":"list:{long}{i}"}}"#)
        );
    }
    // 6.4 MB at once: 100 pings padded to just under the 64 KiB message limit.
    let big = format!(
        r#"{{"action":"ping","pad":"{}"}}"#,
        "p".repeat(64 * 1024 - 40)
    );
    for _ in 0..100 {
        send(&mut ws, &big).await;
    }
    for _ in 0..100 {
        assert_eq!(recv_text(&mut ws).await, r#"{"action":"pong"}"#);
    }
}
