//! Server-side control (issue 14): `POST /admin/disconnect` closes every connection of a user
//! with 4006; `POST /admin/revoke` refuses a token (`jti`) or a user until a time, at the
//! handshake and on refresh, and closes what uses it. Both need the `admin` scope.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tidings_server::Config;

use crate::common::*;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn admin_token() -> String {
    mint_claims(json!({"sub": "ops", "exp": now() + 600, "scope": "admin"}))
}

fn token_with_jti(sub: &str, jti: &str) -> String {
    mint_claims(json!({"sub": sub, "exp": now() + 600, "jti": jti}))
}

/// `POST path` with `body` and `token`; returns the status and the JSON body.
async fn admin(server: &TestServer, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(server.http_url(path))
        .json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn disconnect_closes_every_connection_of_the_user_with_4006() {
    let server = start_server().await;
    let mut tab1 = connect(&server.ws_url(&mint_token("alice"))).await;
    let mut tab2 = connect(&server.ws_url(&mint_token("alice"))).await;
    let mut bob = connect(&server.ws_url(&mint_token("bob"))).await;
    subscribe(&mut tab1, "list:1").await;
    subscribe(&mut bob, "list:1").await;

    // Not with a publisher's token, nor without one.
    let body = json!({"sub": "alice"});
    let publisher = mint_publish_token();
    assert_eq!(
        admin(&server, "/admin/disconnect", Some(&publisher), &body)
            .await
            .0,
        403
    );
    assert_eq!(
        admin(&server, "/admin/disconnect", None, &body).await.0,
        401
    );

    let (status, reply) = admin(&server, "/admin/disconnect", Some(&admin_token()), &body).await;
    assert_eq!((status, reply), (200, json!({"disconnected": 2})));
    assert_eq!(
        recv_close(&mut tab1).await,
        (4006, "disconnected".to_owned())
    );
    assert_eq!(
        recv_close(&mut tab2).await,
        (4006, "disconnected".to_owned())
    );
    // Bob keeps his connection and his events.
    assert_eq!(server.tidings.hub().publish(event("list:1", "1")), 1);
    assert_eq!(recv_text(&mut bob).await, event_text("list:1", "1"));
    // A disconnect is not a ban: alice may connect again (revoke for that).
    let mut again = connect(&server.ws_url(&mint_token("alice"))).await;
    subscribe(&mut again, "list:1").await;

    // Bad requests.
    let token = admin_token();
    for (body, status) in [
        (json!({}), 422),
        (json!({"sub": ""}), 422),
        (json!({"sub": "x".repeat(1025)}), 422),
        (json!({"sub": "a", "extra": 1}), 422),
    ] {
        assert_eq!(
            admin(&server, "/admin/disconnect", Some(&token), &body)
                .await
                .0,
            status,
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_revoked_jti_is_closed_and_refused_at_the_handshake_and_on_refresh() {
    let server = start_server().await;
    let revoked = token_with_jti("alice", "t-1");
    let other = token_with_jti("alice", "t-2");
    let mut using_it = connect(&server.ws_url(&revoked)).await;
    let mut other_tab = connect(&server.ws_url(&other)).await;
    subscribe(&mut other_tab, "list:1").await;

    let body = json!({"jti": "t-1", "until": now() + 600});
    let (status, reply) = admin(&server, "/admin/revoke", Some(&admin_token()), &body).await;
    assert_eq!((status, reply), (200, json!({"disconnected": 1})));
    assert_eq!(recv_close(&mut using_it).await.0, 4006);
    // The same token is refused from now on…
    let mut retry = connect(&server.ws_url(&revoked)).await;
    assert_eq!(
        recv_close(&mut retry).await,
        (4001, "Unauthorized".to_owned())
    );
    // …also as a refresh of another connection…
    send(
        &mut other_tab,
        &format!(r#"{{"action":"refresh","token":"{revoked}"}}"#),
    )
    .await;
    assert_eq!(recv_close(&mut other_tab).await.0, 4001);
    // …while the user's other tokens still work.
    let mut fresh = connect(&server.ws_url(&token_with_jti("alice", "t-3"))).await;
    subscribe(&mut fresh, "list:1").await;

    // A revoked publisher token publishes nothing more (401).
    let publisher = mint_claims(
        json!({"sub": "backend", "exp": now() + 600, "scope": "publish", "jti": "p-1"}),
    );
    let event: Value = serde_json::from_str(&event_text("list:1", "1")).unwrap();
    assert_eq!(
        admin(&server, "/publish", Some(&publisher), &event).await.0,
        202
    );
    let body = json!({"jti": "p-1", "until": now() + 600});
    assert_eq!(
        admin(&server, "/admin/revoke", Some(&admin_token()), &body)
            .await
            .0,
        200
    );
    let (status, reply) = admin(&server, "/publish", Some(&publisher), &event).await;
    assert_eq!(status, 401, "{reply}");
    assert_eq!(reply["details"], "token revoked");
}

#[tokio::test]
async fn a_user_revoked_until_a_time_is_refused_until_then() {
    let server = start_server().await;
    let mut ws = connect(&server.ws_url(&mint_token("mallory"))).await;
    let until = now() + 2;
    let body = json!({"sub": "mallory", "until": until});
    let (status, reply) = admin(&server, "/admin/revoke", Some(&admin_token()), &body).await;
    assert_eq!((status, reply), (200, json!({"disconnected": 1})));
    assert_eq!(recv_close(&mut ws).await.0, 4006);
    let mut refused = connect(&server.ws_url(&token_with_jti("mallory", "new"))).await;
    assert_eq!(recv_close(&mut refused).await.0, 4001);
    // Others are not affected.
    let mut bob = server.client().await;
    subscribe(&mut bob, "list:1").await;
    // Once `until` has passed, the user is let in again.
    let left = (UNIX_EPOCH + Duration::from_secs(until + 1))
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(left).await;
    let mut back = connect(&server.ws_url(&mint_token("mallory"))).await;
    subscribe(&mut back, "list:1").await;
}

#[tokio::test]
async fn the_revocation_store_is_bounded() {
    let server = start_server_with(Config::new(SECRET).with_max_revocations(2)).await;
    let token = admin_token();
    let until = now() + 600;
    for jti in ["a", "b"] {
        let body = json!({"jti": jti, "until": until});
        assert_eq!(
            admin(&server, "/admin/revoke", Some(&token), &body).await.0,
            200
        );
    }
    let (status, reply) = admin(
        &server,
        "/admin/revoke",
        Some(&token),
        &json!({"jti": "c", "until": until}),
    )
    .await;
    assert_eq!(status, 507, "{reply}");
    // Renewing a stored one still works; naming nothing is a 422.
    let body = json!({"jti": "a", "until": until + 60});
    assert_eq!(
        admin(&server, "/admin/revoke", Some(&token), &body).await.0,
        200
    );
    let body = json!({"until": until});
    assert_eq!(
        admin(&server, "/admin/revoke", Some(&token), &body).await.0,
        422
    );
}
