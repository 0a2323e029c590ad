//! Every reply and error text of the seed protocol, compared as exact JSON text, and the
//! rules around them: unknown actions ignored, the connection usable after an error,
//! idempotent subscribe, unsubscribe of a never-subscribed topic, binary frames, limits.

use crate::common::*;
use tidings_server::Config;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn replies_are_the_seed_texts() {
    let server = start_server().await;
    let mut ws = server.client().await;
    roundtrip(
        &mut ws,
        r#"{"action":"subscribe","topic":"list:123"}"#,
        r#"{"action":"subscribed","topic":"list:123"}"#,
    )
    .await;
    roundtrip(
        &mut ws,
        r#"{"action":"unsubscribe","topic":"list:123"}"#,
        r#"{"action":"unsubscribed","topic":"list:123"}"#,
    )
    .await;
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
    // A ping carrying a topic (or extra fields) is still a ping.
    roundtrip(
        &mut ws,
        r#"{"action":"ping","topic":"list:1","x":[1]}"#,
        r#"{"action":"pong"}"#,
    )
    .await;
    for topic in ["occasion:456", "list-items:all", "gifts:all"] {
        subscribe(&mut ws, topic).await;
    }
}

#[tokio::test]
async fn error_texts_and_the_connection_stays_usable() {
    let server = start_server().await;
    let mut ws = server.client().await;
    let cases = [
        (
            r#"{"action":"subscribe"}"#,
            r#"{"error":"Topic is required for subscribe action"}"#,
        ),
        (
            r#"{"action":"subscribe","topic":""}"#,
            r#"{"error":"Topic is required for subscribe action"}"#,
        ),
        (
            r#"{"action":"subscribe","topic":null}"#,
            r#"{"error":"Topic is required for subscribe action"}"#,
        ),
        (
            r#"{"action":"unsubscribe"}"#,
            r#"{"error":"Topic is required for unsubscribe action"}"#,
        ),
        (
            "not json",
            r#"{"error":"Invalid message format","details":"expected ident at line 1 column 2"}"#,
        ),
        (
            "{}",
            r#"{"error":"Invalid message format","details":"missing field `action` at line 1 column 2"}"#,
        ),
        (
            r#"{"action":5}"#,
            r#"{"error":"Invalid message format","details":"invalid type: integer `5`, expected a string at line 1 column 11"}"#,
        ),
        (
            r#"{"action":"subscribe","topic":"my list"}"#,
            r#"{"error":"Invalid topic","details":"topic contains the character ' '; allowed are ASCII letters, digits and : - _ . @ / + = ~"}"#,
        ),
    ];
    for (sent, expected) in cases {
        roundtrip(&mut ws, sent, expected).await;
        // Still usable after every error.
        roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
    }
    // Every "Invalid message format" reply has the seed's shape.
    send(&mut ws, "[1,2]").await;
    let reply: serde_json::Value = serde_json::from_str(&recv_text(&mut ws).await).unwrap();
    assert_eq!(reply["error"], "Invalid message format");
    assert!(reply["details"].is_string());
    assert_eq!(reply.as_object().unwrap().len(), 2);
}

#[tokio::test]
async fn unknown_actions_get_no_reply() {
    let server = start_server().await;
    let mut ws = server.client().await;
    for unknown in [
        r#"{"action":"publish","topic":"list:1"}"#,
        r#"{"action":"PING"}"#,
        r#"{"action":"Subscribe","topic":"list:1"}"#,
        r#"{"action":""}"#,
    ] {
        send(&mut ws, unknown).await;
    }
    // The next frame is the pong: nothing was sent for the unknown actions.
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
}

#[tokio::test]
async fn subscribe_twice_delivers_once_and_unsubscribe_is_always_confirmed() {
    let server = start_server().await;
    let mut ws = server.client().await;
    subscribe(&mut ws, "list:1").await;
    subscribe(&mut ws, "list:1").await;
    assert_eq!(server.tidings.hub().subscriber_count("list:1"), 1);
    assert_eq!(server.tidings.hub().publish(event("list:1", "1")), 1);
    assert_eq!(recv_text(&mut ws).await, event_text("list:1", "1"));
    // The event came once: the next frame is the pong.
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;

    roundtrip(
        &mut ws,
        r#"{"action":"unsubscribe","topic":"list:999"}"#,
        r#"{"action":"unsubscribed","topic":"list:999"}"#,
    )
    .await;
    roundtrip(
        &mut ws,
        r#"{"action":"unsubscribe","topic":"list:1"}"#,
        r#"{"action":"unsubscribed","topic":"list:1"}"#,
    )
    .await;
    assert_eq!(server.tidings.hub().publish(event("list:1", "2")), 0);
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
}

#[tokio::test]
async fn binary_frames_get_an_error_reply() {
    let server = start_server().await;
    let mut ws = server.client().await;
    use futures_util::SinkExt;
    ws.send(Message::binary(br#"{"action":"ping"}"#.to_vec()))
        .await
        .unwrap();
    assert_eq!(
        recv_text(&mut ws).await,
        r#"{"error":"Invalid message format","details":"binary frames are not supported"}"#
    );
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
}

#[tokio::test]
async fn subscription_limit_is_an_error_reply() {
    let server =
        start_server_with(Config::new(SECRET).with_max_subscriptions_per_connection(2)).await;
    let mut ws = server.client().await;
    subscribe(&mut ws, "a").await;
    subscribe(&mut ws, "b").await;
    roundtrip(
        &mut ws,
        r#"{"action":"subscribe","topic":"c"}"#,
        r#"{"error":"Too many subscriptions","details":"at most 2 topics per connection","topic":"c"}"#,
    )
    .await;
    // Already subscribed topics are still confirmed, and a freed slot can be reused.
    subscribe(&mut ws, "a").await;
    roundtrip(
        &mut ws,
        r#"{"action":"unsubscribe","topic":"a"}"#,
        r#"{"action":"unsubscribed","topic":"a"}"#,
    )
    .await;
    subscribe(&mut ws, "c").await;
}

#[tokio::test]
async fn a_burst_of_hundreds_of_subscribes_works_with_defaults() {
    let server = start_server().await;
    let mut ws = server.client().await;
    use futures_util::SinkExt;
    for i in 0..500 {
        ws.feed(Message::text(format!(
            r#"{{"action":"subscribe","topic":"list:{i}"}}"#
        )))
        .await
        .unwrap();
    }
    ws.flush().await.unwrap();
    for i in 0..500 {
        assert_eq!(
            recv_text(&mut ws).await,
            format!(r#"{{"action":"subscribed","topic":"list:{i}"}}"#)
        );
    }
    assert_eq!(server.tidings.hub().topic_count(), 500);
}

#[tokio::test]
async fn oversized_message_closes_with_1009() {
    let server = start_server_with(Config::new(SECRET).with_max_message_size(1024)).await;
    let mut ws = server.client().await;
    send(
        &mut ws,
        &format!(r#"{{"action":"ping","x":"{}"}}"#, "a".repeat(4096)),
    )
    .await;
    assert_eq!(recv_close(&mut ws).await.0, 1009);
}

#[tokio::test]
async fn client_close_removes_subscriptions() {
    let server = start_server().await;
    let mut ws = server.client().await;
    subscribe(&mut ws, "list:1").await;
    subscribe(&mut ws, "list:2").await;
    ws.close(None).await.unwrap();
    let hub = server.tidings.hub().clone();
    assert!(
        eventually(|| {
            let hub = hub.clone();
            async move { hub.topic_count() == 0 }
        })
        .await
    );
    assert!(
        eventually(|| {
            let t = server.tidings.clone();
            async move { t.connection_count() == 0 }
        })
        .await
    );
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let server = start_server().await;
    let mut ws = server.client().await;
    subscribe(&mut ws, "list:1").await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(recv_close(&mut ws).await.0, 1007);
    let hub = server.tidings.hub().clone();
    assert!(
        eventually(|| {
            let hub = hub.clone();
            async move { hub.topic_count() == 0 }
        })
        .await
    );
}

#[tokio::test]
async fn a_client_close_is_answered() {
    use futures_util::SinkExt;
    let server = start_server().await;
    let mut ws = server.client().await;
    ws.send(Message::Close(None)).await.unwrap();
    // The server completes the close handshake: its close frame comes back.
    assert!(matches!(next_frame(&mut ws).await, Message::Close(_)));
}
