//! Presence (issue 15) over real sockets: who is on a topic, one entry per user with a
//! connection count, joins and leaves as they happen, the topic policy and the limits.

use std::time::Duration;

use serde_json::{Value, json};
use tidings_server::Config;
use tidings_server::protocol::WSError;
use tokio::io::AsyncWriteExt;

use crate::common::raw::{encode, raw_connect_with_token, read_frame};
use crate::common::*;

/// A token for `sub` with a `name` claim (the default presence claim).
fn named(sub: &str, name: &str) -> String {
    mint_claims(json!({"sub": sub, "exp": now() + 3600, "name": name}))
}

async fn recv_json(ws: &mut Ws) -> Value {
    let text = recv_raw(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Subscribes with `presence` and returns the snapshot's members (the ack came first, with
/// the seed's bytes).
async fn subscribe_presence(ws: &mut Ws, topic: &str, mode: &str) -> Vec<Value> {
    send(
        ws,
        &format!(r#"{{"action":"subscribe","topic":"{topic}","presence":"{mode}"}}"#),
    )
    .await;
    assert_eq!(
        recv_raw(ws).await,
        format!(r#"{{"action":"subscribed","topic":"{topic}"}}"#)
    );
    snapshot(ws, topic).await
}

/// The next frame, which must be `topic`'s snapshot; its members.
async fn snapshot(ws: &mut Ws, topic: &str) -> Vec<Value> {
    let frame = recv_json(ws).await;
    assert_eq!(frame["action"], "presence", "{frame}");
    assert_eq!(frame["topic"], topic);
    frame["members"].as_array().expect("members").clone()
}

fn member(user: &str, name: &str, connections: u64) -> Value {
    json!({"user_id": user, "info": {"name": name}, "connections": connections})
}

fn join(topic: &str, member: Value) -> Value {
    json!({"action": "presence_join", "topic": topic, "member": member})
}

fn leave(topic: &str, user: &str) -> Value {
    json!({"action": "presence_leave", "topic": topic, "user_id": user})
}

/// Nothing is waiting for `ws`: a ping is answered by the very next frame.
async fn nothing_pending(ws: &mut Ws) {
    roundtrip(ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
}

#[tokio::test]
async fn two_connections_of_one_user_are_one_entry() {
    let server = start_server().await;
    let mut dad = connect(&server.ws_url(&named("dad", "Dad"))).await;
    assert!(
        subscribe_presence(&mut dad, "list:1", "watch")
            .await
            .is_empty()
    );

    let mut tab_a = connect(&server.ws_url(&named("mom", "Mom"))).await;
    let members = subscribe_presence(&mut tab_a, "list:1", "join").await;
    assert_eq!(members, [member("mom", "Mom", 1)]);
    assert_eq!(
        recv_json(&mut dad).await,
        join("list:1", member("mom", "Mom", 1))
    );

    let mut tab_b = connect(&server.ws_url(&named("mom", "Mom"))).await;
    let members = subscribe_presence(&mut tab_b, "list:1", "join").await;
    assert_eq!(members, [member("mom", "Mom", 2)]);
    assert_eq!(
        recv_json(&mut dad).await,
        join("list:1", member("mom", "Mom", 2))
    );
    // The first tab hears its own user's count change too.
    assert_eq!(
        recv_json(&mut tab_a).await,
        join("list:1", member("mom", "Mom", 2))
    );
    assert_eq!(server.tidings.presence().entry_count(), 1);

    // Closing one tab keeps Mom present, with one connection.
    tab_a.close(None).await.expect("close");
    assert_eq!(
        recv_json(&mut dad).await,
        join("list:1", member("mom", "Mom", 1))
    );
    // Closing the other removes her.
    tab_b.close(None).await.expect("close");
    assert_eq!(recv_json(&mut dad).await, leave("list:1", "mom"));
    nothing_pending(&mut dad).await;
    assert!(eventually(|| async { server.tidings.presence().entry_count() == 0 }).await);
}

#[tokio::test]
async fn an_abrupt_disconnect_leaves() {
    let server = start_server().await;
    let mut dad = connect(&server.ws_url(&named("dad", "Dad"))).await;
    subscribe_presence(&mut dad, "list:1", "watch").await;

    // Mom's socket by hand, so that it can vanish without a close frame.
    let mut tcp = raw_connect_with_token(&server, &named("mom", "Mom")).await;
    let subscribe = br#"{"action":"subscribe","topic":"list:1","presence":"join"}"#;
    tcp.write_all(&encode(true, 1, subscribe))
        .await
        .expect("write");
    let (_, ack) = read_frame(&mut tcp).await.expect("ack");
    assert_eq!(ack, br#"{"action":"subscribed","topic":"list:1"}"#);
    let (_, snapshot) = read_frame(&mut tcp).await.expect("snapshot");
    assert!(String::from_utf8_lossy(&snapshot).contains(r#""user_id":"mom""#));
    assert_eq!(
        recv_json(&mut dad).await,
        join("list:1", member("mom", "Mom", 1))
    );

    // A reset (linger 0): no close frame, no FIN. (Deprecated because a non-zero linger
    // blocks the thread on drop; zero does not.)
    #[allow(deprecated)]
    tcp.set_linger(Some(Duration::ZERO)).expect("linger");
    drop(tcp);
    assert_eq!(recv_json(&mut dad).await, leave("list:1", "mom"));
}

#[tokio::test]
async fn watching_is_not_being_present_and_unsubscribe_leaves() {
    let server = start_server().await;
    let mut dad = connect(&server.ws_url(&named("dad", "Dad"))).await;
    subscribe_presence(&mut dad, "list:1", "watch").await;

    let mut kid = connect(&server.ws_url(&named("kid", "Kid"))).await;
    assert!(
        subscribe_presence(&mut kid, "list:1", "watch")
            .await
            .is_empty()
    );
    // Dad heard nothing of the kid, who only watches.
    nothing_pending(&mut dad).await;

    // The same subscribe with `join` makes the kid present (a new snapshot after the ack).
    let members = subscribe_presence(&mut kid, "list:1", "join").await;
    assert_eq!(members, [member("kid", "Kid", 1)]);
    assert_eq!(
        recv_json(&mut dad).await,
        join("list:1", member("kid", "Kid", 1))
    );

    // Back to watching: the kid leaves, still subscribed.
    assert!(
        subscribe_presence(&mut kid, "list:1", "watch")
            .await
            .is_empty()
    );
    assert_eq!(recv_json(&mut dad).await, leave("list:1", "kid"));

    subscribe_presence(&mut kid, "list:1", "join").await;
    assert_eq!(
        recv_json(&mut dad).await,
        join("list:1", member("kid", "Kid", 1))
    );
    roundtrip(
        &mut kid,
        r#"{"action":"unsubscribe","topic":"list:1"}"#,
        r#"{"action":"unsubscribed","topic":"list:1"}"#,
    )
    .await;
    assert_eq!(recv_json(&mut dad).await, leave("list:1", "kid"));
    // Unsubscribed: the kid hears nothing more of the topic's presence.
    let mut mom = connect(&server.ws_url(&named("mom", "Mom"))).await;
    subscribe_presence(&mut mom, "list:1", "join").await;
    assert_eq!(
        recv_json(&mut dad).await,
        join("list:1", member("mom", "Mom", 1))
    );
    nothing_pending(&mut kid).await;
}

#[tokio::test]
async fn a_client_that_never_asks_sees_no_presence_frames() {
    let server = start_server().await;
    let mut seed = connect(&server.ws_url(&named("seed", "Seed"))).await;
    subscribe(&mut seed, "list:1").await;
    let mut mom = connect(&server.ws_url(&named("mom", "Mom"))).await;
    subscribe_presence(&mut mom, "list:1", "join").await;
    mom.close(None).await.expect("close");
    // Other values of `presence` are ignored like any extra field.
    for other in [r#""JOIN""#, "true", "null", r#"{"join":1}"#] {
        roundtrip(
            &mut seed,
            &format!(r#"{{"action":"subscribe","topic":"list:2","presence":{other}}}"#),
            r#"{"action":"subscribed","topic":"list:2"}"#,
        )
        .await;
    }
    nothing_pending(&mut seed).await;
    // Events still arrive byte for byte.
    server.tidings.hub().publish(event("list:1", "1"));
    assert_eq!(recv_text(&mut seed).await, event_text("list:1", "1"));
}

#[tokio::test]
async fn presence_on_a_forbidden_topic_is_denied() {
    let server = start_server().await;
    let mut dad = connect(&server.ws_url(&named("dad", "Dad"))).await;
    subscribe_presence(&mut dad, "list:1", "watch").await;
    let limited = mint_claims(json!({
        "sub": "guest", "exp": now() + 3600, "name": "Guest", "topics": ["list:2"]
    }));
    let mut guest = connect(&server.ws_url(&limited)).await;
    for mode in ["join", "watch"] {
        roundtrip(
            &mut guest,
            &format!(r#"{{"action":"subscribe","topic":"list:1","presence":"{mode}"}}"#),
            r#"{"error":"Forbidden","topic":"list:1"}"#,
        )
        .await;
    }
    nothing_pending(&mut guest).await;
    nothing_pending(&mut dad).await;
    // The allowed topic works.
    assert_eq!(
        subscribe_presence(&mut guest, "list:2", "join").await,
        [member("guest", "Guest", 1)]
    );
}

#[tokio::test]
async fn a_full_topic_refuses_a_new_member_and_keeps_the_subscription() {
    let server = start_server_with(Config::new(SECRET).with_max_presence_members(2)).await;
    let mut dad = connect(&server.ws_url(&named("dad", "Dad"))).await;
    subscribe_presence(&mut dad, "list:1", "watch").await;
    let mut a = connect(&server.ws_url(&named("a", "A"))).await;
    subscribe_presence(&mut a, "list:1", "join").await;
    let mut b = connect(&server.ws_url(&named("b", "B"))).await;
    subscribe_presence(&mut b, "list:1", "join").await;
    assert_eq!(recv_json(&mut dad).await["member"]["user_id"], "a");
    assert_eq!(recv_json(&mut dad).await["member"]["user_id"], "b");

    let mut c = connect(&server.ws_url(&named("c", "C"))).await;
    send(
        &mut c,
        r#"{"action":"subscribe","topic":"list:1","presence":"join"}"#,
    )
    .await;
    assert_eq!(
        recv_raw(&mut c).await,
        r#"{"action":"subscribed","topic":"list:1"}"#
    );
    let error = recv_json(&mut c).await;
    assert_eq!(error["error"], WSError::TOO_MANY_PRESENT);
    assert_eq!(error["topic"], "list:1");
    assert_eq!(error["details"], "at most 2 present members per topic");
    // Still a watcher: the snapshot without itself, then the changes.
    let members = snapshot(&mut c, "list:1").await;
    assert_eq!(members, [member("a", "A", 1), member("b", "B", 1)]);
    nothing_pending(&mut dad).await;
    // A second tab of a present user is never refused.
    let mut a2 = connect(&server.ws_url(&named("a", "A"))).await;
    subscribe_presence(&mut a2, "list:1", "join").await;
    assert_eq!(recv_json(&mut c).await, join("list:1", member("a", "A", 2)));
    // And the subscription itself works.
    server.tidings.hub().publish(event("list:1", "1"));
    assert_eq!(recv_text(&mut c).await, event_text("list:1", "1"));
}

#[tokio::test]
async fn info_comes_from_the_configured_claims_and_is_bounded() {
    let server = start_server_with(
        Config::new(SECRET)
            .with_presence_claims(["name", "avatar"])
            .with_max_presence_info_bytes(64),
    )
    .await;
    let token = mint_claims(json!({
        "sub": "mom", "exp": now() + 3600, "name": "Mom", "avatar": {"color": "#f0a"}, "email": "x"
    }));
    let mut mom = connect(&server.ws_url(&token)).await;
    let members = subscribe_presence(&mut mom, "list:1", "join").await;
    assert_eq!(
        members,
        [
            json!({"user_id": "mom", "info": {"name": "Mom", "avatar": {"color": "#f0a"}}, "connections": 1})
        ]
    );
    // No configured claim: `{}`.
    let mut anon = connect(&server.ws_url(&mint_token("anon"))).await;
    let members = subscribe_presence(&mut anon, "list:2", "join").await;
    assert_eq!(
        members,
        [json!({"user_id": "anon", "info": {}, "connections": 1})]
    );
    // Over the bound: refused, watching only.
    let long = named("long", &"x".repeat(100));
    let mut long = connect(&server.ws_url(&long)).await;
    send(
        &mut long,
        r#"{"action":"subscribe","topic":"list:1","presence":"join"}"#,
    )
    .await;
    assert_eq!(
        recv_raw(&mut long).await,
        r#"{"action":"subscribed","topic":"list:1"}"#
    );
    let error = recv_json(&mut long).await;
    assert_eq!(error["error"], WSError::PRESENCE_INFO_TOO_LARGE);
    assert_eq!(error["topic"], "list:1");
    assert_eq!(snapshot(&mut long, "list:1").await.len(), 1);
    nothing_pending(&mut mom).await;
}

#[tokio::test]
async fn metrics_count_presence_entries() {
    let server = start_server().await;
    let mut mom = connect(&server.ws_url(&named("mom", "Mom"))).await;
    subscribe_presence(&mut mom, "list:1", "join").await;
    subscribe_presence(&mut mom, "list:2", "watch").await;
    let body = reqwest::get(server.http_url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    assert!(body.contains("\ntidings_presence_entries 1\n"), "{body}");
    assert!(body.contains("\ntidings_presence_watchers 2\n"), "{body}");
}

#[tokio::test]
async fn a_since_and_position_subscribe_gets_its_snapshot_after_the_replay() {
    let server = start_server().await;
    let mut mom = connect(&server.ws_url(&named("mom", "Mom"))).await;
    subscribe(&mut mom, "list:1").await;
    server.tidings.hub().publish(event("list:1", "1"));
    let first = recv_raw(&mut mom).await;
    let value: Value = serde_json::from_str(&first).unwrap();
    let epoch = value["epoch"].as_str().unwrap().to_owned();
    server.tidings.hub().publish(event("list:1", "2"));
    let _ = recv_raw(&mut mom).await;

    let mut dad = connect(&server.ws_url(&named("dad", "Dad"))).await;
    send(
        &mut dad,
        &format!(
            r#"{{"action":"subscribe","topic":"list:1","since":{{"seq":1,"epoch":"{epoch}"}},"presence":"join"}}"#
        ),
    )
    .await;
    // The ack and the replay (in the order recovery sends them), then the snapshot.
    let mut before = vec![recv_text(&mut dad).await, recv_text(&mut dad).await];
    before.sort();
    assert_eq!(
        before,
        [
            r#"{"action":"subscribed","topic":"list:1","recovered":true}"#.to_owned(),
            event_text("list:1", "2")
        ]
    );
    assert_eq!(
        snapshot(&mut dad, "list:1").await,
        [member("dad", "Dad", 1)]
    );
}

#[tokio::test]
async fn a_refresh_that_no_longer_allows_the_topic_ends_presence() {
    let server = start_server().await;
    let mut dad = connect(&server.ws_url(&named("dad", "Dad"))).await;
    subscribe_presence(&mut dad, "list:1", "watch").await;
    let wide = mint_claims(
        json!({"sub": "mom", "exp": now() + 3600, "name": "Mom", "topics": ["list:*"]}),
    );
    let mut mom = connect(&server.ws_url(&wide)).await;
    subscribe_presence(&mut mom, "list:1", "join").await;
    assert_eq!(
        recv_json(&mut dad).await,
        join("list:1", member("mom", "Mom", 1))
    );
    let narrow = mint_claims(
        json!({"sub": "mom", "exp": now() + 3600, "name": "Mom", "topics": ["list:2"]}),
    );
    send(
        &mut mom,
        &format!(r#"{{"action":"refresh","token":"{narrow}"}}"#),
    )
    .await;
    assert_eq!(
        recv_raw(&mut mom).await,
        r#"{"action":"unsubscribed","topic":"list:1","reason":"Forbidden"}"#
    );
    assert_eq!(recv_raw(&mut mom).await, r#"{"action":"refreshed"}"#);
    assert_eq!(recv_json(&mut dad).await, leave("list:1", "mom"));
    assert_eq!(server.tidings.presence().entry_count(), 0);
}
