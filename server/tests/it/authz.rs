//! Topic authorization over a real socket: the `topics` claim, tokens without it, and a
//! custom policy.

use crate::common::*;
use serde_json::json;
use tidings_server::protocol::Topic;
use tidings_server::{Claims, Config, TopicPolicy};

fn exp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600
}

#[tokio::test]
async fn the_topics_claim_limits_subscribes() {
    let server = start_server().await;
    let token = mint_claims(json!({"sub": "7", "exp": exp(), "topics": ["list:*", "gifts:all"]}));
    let mut ws = connect(&server.ws_url(&token)).await;
    subscribe(&mut ws, "list:1").await;
    subscribe(&mut ws, "gifts:all").await;
    roundtrip(
        &mut ws,
        r#"{"action":"subscribe","topic":"occasion:1"}"#,
        r#"{"error":"Forbidden","topic":"occasion:1"}"#,
    )
    .await;
    // No subscription was made: an event on the topic reaches nobody.
    assert_eq!(server.tidings.hub().subscriber_count("occasion:1"), 0);
    assert_eq!(server.tidings.hub().publish(event("occasion:1", "1")), 0);
    // The connection stays usable.
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
}

#[tokio::test]
async fn a_token_without_the_claim_may_subscribe_to_anything() {
    let server = start_server().await;
    let mut ws = server.client().await;
    subscribe(&mut ws, "occasion:1").await;
    subscribe(&mut ws, "list-items:all").await;
}

struct NoSecrets;

impl TopicPolicy for NoSecrets {
    fn allow_subscribe(&self, claims: &Claims, topic: &Topic) -> bool {
        claims.sub == "admin" || !topic.as_str().starts_with("secret:")
    }
}

#[tokio::test]
async fn a_custom_policy_decides() {
    let server = start_server_with(Config::new(SECRET).with_topic_policy(NoSecrets)).await;
    let mut user = server.client().await;
    roundtrip(
        &mut user,
        r#"{"action":"subscribe","topic":"secret:1"}"#,
        r#"{"error":"Forbidden","topic":"secret:1"}"#,
    )
    .await;
    subscribe(&mut user, "list:1").await;
    let mut admin = connect(&server.ws_url(&mint_token("admin"))).await;
    subscribe(&mut admin, "secret:1").await;
}
