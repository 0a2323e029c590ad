//! Reads carry read stamps: `GET /api/lists/{id}`, `/api/lists`, `/api/occasions/{id}` and
//! `/api/gifts` answer with the `tidings-positions` header, the positions of the topics whose
//! events change them, taken before the read. A subscriber that resumes from the stamp is
//! replayed exactly the events committed after the read.

mod common;

use common::*;
use serde_json::json;
use tidings_protocol::{POSITIONS_HEADER, ReadStamp, ServerMessage, WSReply};

async fn stamp(api: &Api, path: &str) -> ReadStamp {
    let res = api
        .http
        .get(format!("{}{path}", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{path}");
    let value = res
        .headers()
        .get(POSITIONS_HEADER)
        .unwrap_or_else(|| panic!("{path} has no {POSITIONS_HEADER}"))
        .to_str()
        .unwrap()
        .to_owned();
    ReadStamp::parse(&value).unwrap()
}

#[tokio::test]
async fn reads_are_stamped_and_a_subscriber_resumes_from_the_stamp() {
    let demo = Demo::start().await;
    let api = demo.login(1).await;
    for (path, topic) in [
        ("/api/lists", "list-items:all"),
        ("/api/occasions/1", "occasion:1"),
        ("/api/gifts", "gifts:all"),
    ] {
        let stamp = stamp(&api, path).await;
        assert_eq!(stamp.0.len(), 1);
        assert_eq!(stamp.0[0].topic.as_str(), topic, "{path}");
        assert_eq!(stamp.0[0].seq, 0, "no event yet on {topic}");
    }
    let (status, _) = api
        .call("POST", "/api/lists/1/items", Some(json!({"name": "Kite"})))
        .await;
    assert_eq!(status, 201);
    let read = stamp(&api, "/api/lists/1").await;
    assert_eq!(read.0[0].seq, 1);
    // Committed after the read, before anyone subscribed.
    let (status, _) = api
        .call("POST", "/api/lists/1/items", Some(json!({"name": "Yo-yo"})))
        .await;
    assert_eq!(status, 201);
    let mut sub = demo.subscribe(&api.token, &[]).await;
    let at = &read.0[0];
    sub.send(json!({"action": "subscribe", "topic": at.topic, "since": {"seq": at.seq, "epoch": at.epoch}}))
        .await;
    let replayed = sub.next_event().await;
    assert_eq!(payload(&replayed)["name"], "Yo-yo");
    match sub.next_message().await {
        ServerMessage::Reply(WSReply::Subscribed { recovered, .. }) => {
            assert_eq!(recovered, Some(true))
        }
        other => panic!("expected the ack, got {other:?}"),
    }
    demo.stop().await;
}
