//! In-band token refresh over a real socket: `{"action":"refresh","token":T}` moves the
//! connection's expiry (4002) to the new token's `exp` and replaces the claims the topic policy
//! reads; a bad token or another user's token closes the connection with 4001.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::*;
use jsonwebtoken::Algorithm;
use serde_json::json;
use tidings_server::Config;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// No leeway, so that a token is dead exactly at its `exp`.
async fn strict_server() -> TestServer {
    start_server_with(Config::new(SECRET).with_jwt_leeway(Duration::ZERO)).await
}

fn token_for(sub: &str, ttl_secs: u64) -> String {
    mint_claims(json!({"sub": sub, "exp": unix_now() + ttl_secs}))
}

fn refresh(token: &str) -> String {
    format!(r#"{{"action":"refresh","token":"{token}"}}"#)
}

/// Sleeps until the wall clock is past `exp` (seconds since the Unix epoch) by `margin`.
async fn sleep_past(exp: u64, margin: Duration) {
    let until = UNIX_EPOCH + Duration::from_secs(exp) + margin;
    if let Ok(left) = until.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
}

/// Publishes one event on `topic` and expects it on `ws`, byte for byte.
async fn delivers(server: &TestServer, ws: &mut Ws, topic: &str, id: &str) {
    assert_eq!(server.tidings.hub().publish(event(topic, id)), 1);
    assert_eq!(recv_text(ws).await, event_text(topic, id));
}

#[tokio::test]
async fn a_refreshed_connection_outlives_its_first_token() {
    let server = strict_server().await;
    let first_exp = unix_now() + 4;
    let first = mint_claims(json!({"sub": "42", "exp": first_exp}));
    let mut ws = connect(&server.ws_url(&first)).await;
    subscribe(&mut ws, "list:1").await;
    roundtrip(
        &mut ws,
        &refresh(&token_for("42", 3600)),
        r#"{"action":"refreshed"}"#,
    )
    .await;
    // Past the first token's expiry the connection is still open and still delivers.
    sleep_past(first_exp, Duration::from_millis(1500)).await;
    delivers(&server, &mut ws, "list:1", "1").await;
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
    assert_eq!(server.tidings.connection_count(), 1);
}

#[tokio::test]
async fn the_new_expiry_is_enforced_with_4002() {
    let server = strict_server().await;
    let first_exp = unix_now() + 3;
    let first = mint_claims(json!({"sub": "42", "exp": first_exp}));
    let mut ws = connect(&server.ws_url(&first)).await;
    subscribe(&mut ws, "list:1").await;
    // The second token lives 3 s longer: the deadline moves there, not to "never".
    let second = mint_claims(json!({"sub": "42", "exp": first_exp + 3}));
    roundtrip(&mut ws, &refresh(&second), r#"{"action":"refreshed"}"#).await;
    sleep_past(first_exp, Duration::from_millis(500)).await;
    delivers(&server, &mut ws, "list:1", "1").await;
    let (code, reason) = recv_close(&mut ws).await;
    assert_eq!((code, reason.as_str()), (4002, "token expired"));
    assert!(eventually(|| async { server.tidings.hub().subscriber_count("list:1") == 0 }).await);
}

#[tokio::test]
async fn replies_stay_in_order_with_pipelined_messages() {
    let server = start_server().await;
    let mut ws = server.client().await;
    send(&mut ws, r#"{"action":"subscribe","topic":"list:1"}"#).await;
    send(&mut ws, &refresh(&mint_token("42"))).await;
    send(&mut ws, r#"{"action":"ping"}"#).await;
    assert_eq!(
        recv_text(&mut ws).await,
        r#"{"action":"subscribed","topic":"list:1"}"#
    );
    assert_eq!(recv_text(&mut ws).await, r#"{"action":"refreshed"}"#);
    assert_eq!(recv_text(&mut ws).await, r#"{"action":"pong"}"#);
}

#[tokio::test]
async fn a_bad_token_closes_4001() {
    let server = start_server_with(Config::new(SECRET).with_jwt_leeway(Duration::ZERO)).await;
    let now = unix_now();
    let bad = [
        ("garbage", "not-a-jwt".to_owned()),
        (
            "wrong secret",
            sign(
                &json!({"sub": "42", "exp": now + 3600}),
                Algorithm::HS256,
                "another-secret",
            ),
        ),
        ("expired", expired_token()),
        ("alg none", alg_none_token()),
        (
            "HS512",
            sign(
                &json!({"sub": "42", "exp": now + 3600}),
                Algorithm::HS512,
                SECRET,
            ),
        ),
        ("no exp", mint_claims(json!({"sub": "42"}))),
        (
            "before nbf",
            mint_claims(json!({"sub": "42", "exp": now + 3600, "nbf": now + 600})),
        ),
    ];
    for (what, token) in bad {
        let mut ws = server.client().await;
        subscribe(&mut ws, "list:1").await;
        send(&mut ws, &refresh(&token)).await;
        // No reply before the close frame.
        let (code, reason) = recv_close(&mut ws).await;
        assert_eq!((code, reason.as_str()), (4001, "Unauthorized"), "{what}");
        assert!(
            eventually(|| async { server.tidings.hub().subscriber_count("list:1") == 0 }).await,
            "{what}: the connection left its topics"
        );
    }
}

#[tokio::test]
async fn another_users_token_closes_4001() {
    let server = start_server().await;
    let mut ws = connect(&server.ws_url(&mint_token("42"))).await;
    subscribe(&mut ws, "list:1").await;
    send(&mut ws, &refresh(&mint_token("43"))).await;
    let (code, reason) = recv_close(&mut ws).await;
    assert_eq!((code, reason.as_str()), (4001, "Unauthorized"));
}

#[tokio::test]
async fn a_missing_token_is_an_error_reply_and_the_connection_stays() {
    let server = start_server().await;
    let mut ws = server.client().await;
    for text in [
        r#"{"action":"refresh"}"#,
        r#"{"action":"refresh","token":null}"#,
        r#"{"action":"refresh","token":""}"#,
    ] {
        roundtrip(
            &mut ws,
            text,
            r#"{"error":"Token is required for refresh action"}"#,
        )
        .await;
    }
    send(&mut ws, r#"{"action":"refresh","token":42}"#).await;
    let reply: serde_json::Value = serde_json::from_str(&recv_text(&mut ws).await).unwrap();
    assert_eq!(reply["error"], "Invalid message format");
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
}

#[tokio::test]
async fn the_new_claims_decide_later_subscribes() {
    let server = start_server().await;
    let narrow = mint_claims(json!({"sub": "42", "exp": unix_now() + 3600, "topics": ["list:*"]}));
    let mut ws = connect(&server.ws_url(&narrow)).await;
    roundtrip(
        &mut ws,
        r#"{"action":"subscribe","topic":"gifts:all"}"#,
        r#"{"error":"Forbidden","topic":"gifts:all"}"#,
    )
    .await;
    subscribe(&mut ws, "list:1").await;
    let wide = mint_claims(json!({"sub": "42", "exp": unix_now() + 3600, "topics": ["gifts:*"]}));
    // The new claims no longer allow list:1: that subscription ends (issue 14).
    send(&mut ws, &refresh(&wide)).await;
    assert_eq!(
        recv_text(&mut ws).await,
        r#"{"action":"unsubscribed","topic":"list:1","reason":"Forbidden"}"#
    );
    assert_eq!(recv_text(&mut ws).await, r#"{"action":"refreshed"}"#);
    subscribe(&mut ws, "gifts:all").await;
    roundtrip(
        &mut ws,
        r#"{"action":"subscribe","topic":"list:2"}"#,
        r#"{"error":"Forbidden","topic":"list:2"}"#,
    )
    .await;
    delivers(&server, &mut ws, "gifts:all", "7").await;
}

/// Issue 14: a refresh that narrows `topics` ends the subscriptions it no longer allows, each
/// with an `unsubscribed` carrying `"reason":"Forbidden"`, before `refreshed`; what is still
/// allowed keeps delivering, nothing else is delivered, and another connection of the same
/// user (on its old token) keeps everything.
#[tokio::test]
async fn a_refresh_that_narrows_topics_drops_what_it_no_longer_allows() {
    let server = start_server().await;
    let mut ws = server.client().await; // no `topics` claim: everything
    let mut other_tab = server.client().await;
    for topic in ["list:1", "list:2", "gifts:all"] {
        subscribe(&mut ws, topic).await;
        subscribe(&mut other_tab, topic).await;
    }
    let narrow = mint_claims(json!({"sub": "42", "exp": unix_now() + 3600, "topics": ["list:1"]}));
    send(&mut ws, &refresh(&narrow)).await;
    let mut dropped = vec![recv_text(&mut ws).await, recv_text(&mut ws).await];
    dropped.sort();
    assert_eq!(
        dropped,
        [
            r#"{"action":"unsubscribed","topic":"gifts:all","reason":"Forbidden"}"#,
            r#"{"action":"unsubscribed","topic":"list:2","reason":"Forbidden"}"#,
        ]
    );
    assert_eq!(recv_text(&mut ws).await, r#"{"action":"refreshed"}"#);
    // Only the other tab still hears list:2 and gifts:all.
    assert_eq!(server.tidings.hub().publish(event("list:2", "1")), 1);
    assert_eq!(server.tidings.hub().publish(event("gifts:all", "2")), 1);
    assert_eq!(server.tidings.hub().publish(event("list:1", "3")), 2);
    assert_eq!(recv_text(&mut ws).await, event_text("list:1", "3"));
    for (topic, id) in [("list:2", "1"), ("gifts:all", "2"), ("list:1", "3")] {
        assert_eq!(recv_text(&mut other_tab).await, event_text(topic, id));
    }
    // A refresh that narrows nothing drops nothing.
    send(&mut ws, &refresh(&narrow)).await;
    assert_eq!(recv_text(&mut ws).await, r#"{"action":"refreshed"}"#);
    assert_eq!(server.tidings.hub().publish(event("list:1", "4")), 2);
    assert_eq!(recv_text(&mut ws).await, event_text("list:1", "4"));
}

#[tokio::test]
async fn a_seed_client_that_never_refreshes_is_unaffected() {
    let server = start_server().await;
    let mut seed = server.client().await;
    let mut fresh = server.client().await;
    subscribe(&mut seed, "list:1").await;
    subscribe(&mut fresh, "list:1").await;
    roundtrip(
        &mut fresh,
        &refresh(&mint_token("42")),
        r#"{"action":"refreshed"}"#,
    )
    .await;
    assert_eq!(server.tidings.hub().publish(event("list:1", "5")), 2);
    assert_eq!(recv_text(&mut seed).await, event_text("list:1", "5"));
    assert_eq!(recv_text(&mut fresh).await, event_text("list:1", "5"));
    roundtrip(&mut seed, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
    roundtrip(
        &mut seed,
        r#"{"action":"unsubscribe","topic":"list:1"}"#,
        r#"{"action":"unsubscribed","topic":"list:1"}"#,
    )
    .await;
}
