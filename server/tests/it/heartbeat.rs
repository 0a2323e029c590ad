//! The connection's clock over a real socket: server pings, dropping a silent peer (4004) and
//! closing when the token expires mid-connection (4002).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::*;
use futures_util::StreamExt;
use serde_json::json;
use tidings_server::Config;
use tokio_tungstenite::tungstenite::Message;

fn fast_heartbeat() -> Config {
    Config::new(SECRET)
        .with_ping_interval(Duration::from_millis(200))
        .with_pong_timeout(Duration::from_secs(1))
        // The silent client reads its close frame only later: the server must still be waiting
        // for its close reply then (not reset the connection, which would discard the frame).
        .with_close_timeout(TIMEOUT * 2)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_dropped_with_4004() {
    let server = start_server_with(fast_heartbeat()).await;
    let mut silent = server.client().await;
    let mut active = server.client().await;
    subscribe(&mut silent, "list:1").await;
    subscribe(&mut active, "list:1").await;
    // `silent` stops reading, so its client library never answers the server's pings; the
    // active client keeps reading (and so answers them) for several timeouts.
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    while let Ok(frame) = tokio::time::timeout_at(until, active.next()).await {
        match frame.expect("active stream ended").expect("read") {
            Message::Ping(_) => pings += 1,
            other => panic!("the active client got {other:?}"),
        }
    }
    assert!(pings >= 2, "the server pings ({pings} pings)");
    roundtrip(&mut active, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
    assert_eq!(server.tidings.hub().subscriber_count("list:1"), 1);
    // The silent one was closed: after the pings it never answered comes close 4004.
    let (code, reason) = recv_close(&mut silent).await;
    assert_eq!((code, reason.as_str()), (4004, "no pong"));
}

#[tokio::test]
async fn a_token_expiring_mid_connection_closes_4002() {
    let server = start_server_with(Config::new(SECRET).with_jwt_leeway(Duration::ZERO)).await;
    let token = mint_claims(json!({"sub": "42", "exp": unix_now() + 3}));
    let mut ws = connect(&server.ws_url(&token)).await;
    subscribe(&mut ws, "list:1").await;
    // Before the expiry the connection works; then close 4002 comes (within the timeout).
    let (code, reason) = recv_close(&mut ws).await;
    assert_eq!((code, reason.as_str()), (4002, "token expired"));
    assert_eq!(server.tidings.hub().subscriber_count("list:1"), 0);
}

#[tokio::test]
async fn a_token_used_before_its_nbf_is_refused() {
    let server = start_server_with(Config::new(SECRET).with_jwt_leeway(Duration::ZERO)).await;
    let early =
        mint_claims(json!({"sub": "42", "exp": unix_now() + 3600, "nbf": unix_now() + 600}));
    let mut ws = connect(&server.ws_url(&early)).await;
    assert_eq!(recv_close(&mut ws).await.0, 4001);
    let ready = mint_claims(json!({"sub": "42", "exp": unix_now() + 3600, "nbf": unix_now() - 10}));
    let mut ws = connect(&server.ws_url(&ready)).await;
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
}
