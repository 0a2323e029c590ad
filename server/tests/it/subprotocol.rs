//! The token outside the URL (issue 14): `GET /ws` takes it from the `tidings.token.<JWT>`
//! subprotocol, echoes only the `tidings` marker, and still takes `?token=` from seed clients
//! (whose handshake answer carries no subprotocol, as before).

use jsonwebtoken::Algorithm;
use tidings_server::protocol::handshake::{SUBPROTOCOL, token_subprotocol};

use crate::common::*;

fn offer(token: &str) -> [String; 2] {
    [
        SUBPROTOCOL.to_owned(),
        token_subprotocol(token).expect("a JWT fits"),
    ]
}

async fn connect_offering(server: &TestServer, query: &str, token: &str) -> (Ws, Option<String>) {
    let [marker, carrier] = offer(token);
    let url = format!("ws://{}/ws{query}", server.addr);
    connect_with_protocols(&url, &[&marker, &carrier]).await
}

#[tokio::test]
async fn a_token_in_the_subprotocol_is_accepted_and_only_the_marker_is_echoed() {
    let server = start_server().await;
    let token = mint_token("42");
    let (mut ws, chosen) = connect_offering(&server, "", &token).await;
    assert_eq!(chosen.as_deref(), Some("tidings"));
    subscribe(&mut ws, "list:1").await;
    assert_eq!(
        server
            .publish_http(&serde_json::from_str(&event_text("list:1", "7")).unwrap())
            .await,
        1
    );
    assert_eq!(recv_text(&mut ws).await, event_text("list:1", "7"));
}

#[tokio::test]
async fn a_bad_token_in_the_subprotocol_is_closed_with_4001_and_never_repeated() {
    let server = start_server().await;
    let forged = sign(
        &serde_json::json!({"sub": "42", "exp": 4_000_000_000u64}),
        Algorithm::HS256,
        "another-secret-of-at-least-thirty-two-bytes",
    );
    for token in [forged.as_str(), expired_token().as_str(), "not-a-jwt"] {
        let (mut ws, chosen) = connect_offering(&server, "", token).await;
        assert_eq!(chosen.as_deref(), Some("tidings"));
        let (code, reason) = recv_close(&mut ws).await;
        assert_eq!((code, reason.as_str()), (4001, "Unauthorized"));
    }
}

#[tokio::test]
async fn the_subprotocol_token_wins_over_the_query() {
    let server = start_server().await;
    // A valid token in the query does not rescue a bad one in the subprotocol…
    let query = format!("?token={}", mint_token("42"));
    let (mut ws, _) = connect_offering(&server, &query, &expired_token()).await;
    assert_eq!(recv_close(&mut ws).await.0, 4001);
    // …and a bad one in the query does not spoil a good one in the subprotocol.
    let query = format!("?token={}", expired_token());
    let (mut ws, _) = connect_offering(&server, &query, &mint_token("42")).await;
    subscribe(&mut ws, "list:1").await;
}

#[tokio::test]
async fn seed_clients_keep_the_query_and_get_no_subprotocol() {
    let server = start_server().await;
    let token = mint_token("42");
    // No subprotocol offered: none answered (the seed's handshake, unchanged).
    let (mut ws, chosen) = connect_with_protocols(&server.ws_url(&token), &[]).await;
    assert_eq!(chosen, None);
    subscribe(&mut ws, "list:1").await;
    // The marker alone with the token in the query (a client that offers the protocol name
    // but talks to the server the old way).
    let (mut ws, chosen) = connect_with_protocols(&server.ws_url(&token), &[SUBPROTOCOL]).await;
    assert_eq!(chosen.as_deref(), Some("tidings"));
    subscribe(&mut ws, "list:2").await;
    // Neither: 4001 as before.
    let url = format!("ws://{}/ws", server.addr);
    let (mut ws, _) = connect_with_protocols(&url, &[SUBPROTOCOL]).await;
    assert_eq!(recv_close(&mut ws).await.0, 4001);
}
