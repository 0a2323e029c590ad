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
        .bearer_auth(&api.token)
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
    for (path, topics) in [
        ("/api/lists", &["list-items:all", "lists:all"][..]),
        ("/api/occasions", &["occasions:all"]),
        ("/api/occasions/1", &["occasion:1"]),
        ("/api/gifts", &["gifts:all"]),
    ] {
        let stamp = stamp(&api, path).await;
        let got: Vec<_> = stamp.0.iter().map(|p| p.topic.as_str()).collect();
        assert_eq!(got, topics, "{path}");
        assert!(
            stamp.0.iter().all(|p| p.seq == 0),
            "no event yet on {topics:?}"
        );
    }
    let (status, _) = api
        .call("POST", "/api/lists/1/items", Some(json!({"name": "Kite"})))
        .await;
    assert_eq!(status, 201);
    let read = stamp(&api, "/api/lists/1").await;
    // List 1 is Sam's: the change went out twice, in full to everyone but Sam and without
    // its status to Sam (see src/surprise.rs).
    assert_eq!(read.0[0].seq, 2);
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
    loop {
        match sub.next_message().await {
            ServerMessage::Reply(WSReply::Subscribed { recovered, .. }) => {
                assert_eq!(recovered, Some(true));
                break;
            }
            // Sam's copy of the change takes a position Mom skips.
            ServerMessage::Reply(WSReply::Skipped { .. }) => continue,
            other => panic!("expected the ack, got {other:?}"),
        }
    }
    demo.stop().await;
}
