//! The `/ws` auth matrix: every bad token completes the handshake and then gets close 4001
//! "Unauthorized" with no data frame before it; a valid token works.

use crate::common::*;
use jsonwebtoken::Algorithm;
use serde_json::json;

fn far_future() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600
}

async fn assert_refused(server: &TestServer, query: &str, case: &str) {
    let url = format!("ws://{}/ws{query}", server.addr);
    let mut ws = connect(&url).await;
    // The very first frame must be the close: no data frame before it.
    match next_frame(&mut ws).await {
        tokio_tungstenite::tungstenite::Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4001, "{case}");
            assert_eq!(frame.reason.as_str(), "Unauthorized", "{case}");
        }
        other => panic!("{case}: expected close 4001 first, got {other:?}"),
    }
}

#[tokio::test]
async fn every_bad_token_gets_4001_after_the_handshake() {
    let server = start_server().await;
    let exp = far_future();
    let cases: Vec<(&str, String)> = vec![
        ("missing", String::new()),
        ("missing value", "?token".into()),
        ("empty", "?token=".into()),
        ("other parameter only", "?tok=abc".into()),
        ("malformed", "?token=not-a-jwt".into()),
        ("three garbage parts", "?token=a.b.c".into()),
        (
            "wrong signature",
            format!(
                "?token={}",
                sign(
                    &json!({"sub": "42", "exp": exp}),
                    Algorithm::HS256,
                    "another-secret"
                )
            ),
        ),
        ("expired", format!("?token={}", expired_token())),
        ("alg none", format!("?token={}", alg_none_token())),
        (
            "HS384",
            format!(
                "?token={}",
                sign(&json!({"sub": "42", "exp": exp}), Algorithm::HS384, SECRET)
            ),
        ),
        (
            "HS512",
            format!(
                "?token={}",
                sign(&json!({"sub": "42", "exp": exp}), Algorithm::HS512, SECRET)
            ),
        ),
        (
            "no sub",
            format!("?token={}", mint_claims(json!({"exp": exp}))),
        ),
        (
            "no exp",
            format!("?token={}", mint_claims(json!({"sub": "42"}))),
        ),
        (
            "sub not a string",
            format!("?token={}", mint_claims(json!({"sub": 42, "exp": exp}))),
        ),
        (
            "signature stripped",
            format!("?token={}.", mint_token("42").rsplit_once('.').unwrap().0),
        ),
    ];
    for (case, query) in &cases {
        assert_refused(&server, query, case).await;
    }
}

#[tokio::test]
async fn a_valid_token_works() {
    let server = start_server().await;
    let mut ws = connect(&server.ws_url(&mint_token("42"))).await;
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
    // Recently expired but within the default 30 s leeway: still accepted.
    let now = far_future() - 3600;
    let mut ws = connect(&server.ws_url(&mint_claims(json!({"sub": "42", "exp": now - 5})))).await;
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
    // A percent-encoded token and extra parameters are fine too.
    let token = mint_token("7").replace('.', "%2E");
    let mut ws = connect(&format!("ws://{}/ws?v=1&token={token}", server.addr)).await;
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
}

#[tokio::test]
async fn tokens_minted_by_the_library_verify() {
    let server = start_server().await;
    let token = server
        .tidings
        .issue_token("u1", std::time::Duration::from_secs(60), None)
        .unwrap();
    let claims = server.tidings.verify_token(&token).unwrap();
    assert_eq!(claims.sub, "u1");
    let mut ws = connect(&server.ws_url(&token)).await;
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
}
