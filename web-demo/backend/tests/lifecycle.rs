//! The embedding's lifecycle: shutdown closes WebSockets with 1012 (so browsers reconnect),
//! and a restart on the same database keeps the data and the logins.

mod common;

use common::Demo;
use serde_json::json;
use tidings_demo::DemoConfig;

#[tokio::test]
async fn shutdown_closes_websockets_with_service_restart() {
    let demo = Demo::start().await;
    let mom = demo.login(1).await;
    let mut sub = demo.subscribe(&mom.token, &["list:1"]).await;
    let stopping = tokio::spawn(demo.stop());
    assert_eq!(sub.close_code().await, Some(1012));
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_bad_token_is_refused_on_the_websocket() {
    let demo = Demo::start().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{}?token=garbage", demo.ws))
        .await
        .expect("handshake completes");
    use futures_util::StreamExt;
    let frame = tokio::time::timeout(common::WAIT, ws.next())
        .await
        .expect("close in time");
    match frame {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
            assert_eq!(u16::from(f.code), 4001)
        }
        other => panic!("expected close 4001, got {other:?}"),
    }
    demo.stop().await;
}

#[tokio::test]
async fn restart_keeps_data_and_logins() {
    let db = common::temp_db("restart");
    // No secret configured: the generated one must be kept in the database.
    let config = DemoConfig::new(db.to_string_lossy());
    let first = Demo::start_with(config.clone()).await;
    let sam = first.login(4).await;
    let (status, item) = sam
        .call(
            "POST",
            "/api/lists/3/items",
            Some(json!({"name": "Piñata"})),
        )
        .await;
    assert_eq!(status, 201);
    first.stop().await;

    let second = Demo::start_with(config).await;
    let sam = common::Api {
        base: second.base.clone(),
        ..sam
    };
    let (status, list) = sam.call("GET", "/api/lists/3", None).await;
    assert_eq!(status, 200);
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == item["id"] && i["name"] == "Piñata")
    );
    // The old token still works for the API and the WebSocket.
    let (status, me) = sam.call("GET", "/api/me", None).await;
    assert_eq!((status, me["name"].as_str()), (200, Some("Sam")));
    let mut sub = second.subscribe(&sam.token, &["list:3"]).await;
    // (Sam edits his own wish: the list is his, so its status is not his to set.)
    sam.call(
        "PATCH",
        &format!("/api/items/{}", item["id"]),
        Some(json!({"notes": "A donkey"})),
    )
    .await;
    assert_eq!(sub.next_event().await.topic.as_str(), "list:3");
    second.stop().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}
