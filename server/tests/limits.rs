//! Abuse limits over a real socket: the inbound rate limit, connection limits, slow consumers.

mod common;

use std::time::Duration;

use common::*;
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
