//! Positions (in-memory broker): the `subscribed` ack carries the topic's position only for a
//! client that asks (`"position": true`; the seed's ack stays byte for byte), a topic without
//! events has one too (`seq` 0), and a read stamped with `Tidings::read_stamp` before it was
//! made lets a client resume from there, so an event between the read and the subscription is
//! replayed, never lost. The same against Redis is in `redis::positions_*`.

use serde_json::{Value, json};
use tidings_server::Stamp;
use tidings_server::protocol::{POSITIONS_HEADER, ReadStamp, Topic};

use crate::common::stream::next_event;
use crate::common::*;

/// Sends a subscribe and returns its ack as JSON (the next frame must be it).
async fn ack(ws: &mut Ws, subscribe: Value) -> Value {
    send(ws, &subscribe.to_string()).await;
    serde_json::from_str(&recv_raw(ws).await).unwrap()
}

#[tokio::test]
async fn the_ack_carries_a_position_only_when_asked() {
    let server = start_server().await;
    let mut ws = server.client().await;
    // The seed's subscribe: the seed's exact bytes, also once the topic has events.
    server.tidings.hub().publish(event("list:1", "1"));
    roundtrip(
        &mut ws,
        r#"{"action":"subscribe","topic":"list:1"}"#,
        r#"{"action":"subscribed","topic":"list:1"}"#,
    )
    .await;
    // Asked, on a topic that has had no event: seq 0 and the epoch its first event will have.
    let quiet = ack(
        &mut ws,
        json!({"action": "subscribe", "topic": "occasion:1", "position": true}),
    )
    .await;
    assert_eq!(quiet["action"], "subscribed");
    assert_eq!(quiet["seq"], 0);
    assert!(quiet.get("recovered").is_none());
    let epoch = quiet["epoch"].as_str().unwrap().to_owned();
    server.tidings.hub().publish(event("occasion:1", "2"));
    let first = next_event(&mut ws).await;
    assert_eq!(
        (first.seq, first.epoch.as_deref()),
        (Some(1), Some(&*epoch))
    );
    // Asked, on a topic with events: its last seq.
    let mut other = server.client().await;
    let at = ack(
        &mut other,
        json!({"action": "subscribe", "topic": "list:1", "position": true}),
    )
    .await;
    assert_eq!(at["seq"], 1);
    // Any other value of `position` is ignored, as the seed ignores extra fields.
    roundtrip(
        &mut other,
        r#"{"action":"subscribe","topic":"list:2","position":"yes"}"#,
        r#"{"action":"subscribed","topic":"list:2"}"#,
    )
    .await;
}

#[tokio::test]
async fn an_event_after_a_stamped_read_is_replayed_to_the_subscriber() {
    let server = start_server().await;
    let hub = server.tidings.hub();
    hub.publish(event("list:1", "1"));
    // The app stamps its read, then reads; an event is committed after the read, before the
    // client's subscription exists.
    let Stamp(stamp) = server
        .tidings
        .read_stamp(&[Topic::list(1), Topic::occasion(9)])
        .await
        .unwrap();
    hub.publish(event("list:1", "2"));
    // What travels in the response header, and what the client reads back.
    let (name, value) = Stamp(stamp.clone()).header();
    assert_eq!(name.as_str(), POSITIONS_HEADER);
    let stamp = ReadStamp::parse(value.to_str().unwrap()).unwrap();
    assert_eq!((stamp.0[0].seq, stamp.0[1].seq), (1, 0));
    let mut ws = server.client().await;
    for at in &stamp.0 {
        let since = json!({"seq": at.seq, "epoch": at.epoch});
        send(
            &mut ws,
            &json!({"action": "subscribe", "topic": at.topic, "since": since, "position": true})
                .to_string(),
        )
        .await;
    }
    let replayed = next_event(&mut ws).await;
    assert_eq!(replayed.data.entity_id, "2");
    let list_ack: Value = serde_json::from_str(&recv_raw(&mut ws).await).unwrap();
    assert_eq!(
        (list_ack["recovered"].as_bool(), list_ack["seq"].as_u64()),
        (Some(true), Some(2))
    );
    // The topic without events resumes from seq 0 with nothing to replay and no refetch.
    let quiet_ack: Value = serde_json::from_str(&recv_raw(&mut ws).await).unwrap();
    assert_eq!(quiet_ack["topic"], "occasion:9");
    assert_eq!(quiet_ack["recovered"], true);
    assert_eq!(quiet_ack["seq"], 0);
}

#[tokio::test]
async fn a_topic_without_events_recovers_across_a_reconnect() {
    let server = start_server().await;
    let mut ws = server.client().await;
    let quiet = ack(
        &mut ws,
        json!({"action": "subscribe", "topic": "occasion:3", "position": true}),
    )
    .await;
    let since = json!({"seq": quiet["seq"], "epoch": quiet["epoch"]});
    drop(ws);
    // The only subscriber left: the topic is dropped, yet its position still holds.
    assert!(eventually(|| async { server.tidings.hub().topic_count() == 0 }).await);
    let mut ws = server.client().await;
    let again = ack(
        &mut ws,
        json!({"action": "subscribe", "topic": "occasion:3", "since": since, "position": true}),
    )
    .await;
    assert_eq!(again["recovered"], true, "{again}");
    drop(ws);
    // An event while away is replayed from that position.
    assert!(eventually(|| async { server.tidings.hub().topic_count() == 0 }).await);
    server.tidings.hub().publish(event("occasion:3", "5"));
    let mut ws = server.client().await;
    send(
        &mut ws,
        &json!({"action": "subscribe", "topic": "occasion:3", "since": since}).to_string(),
    )
    .await;
    assert_eq!(next_event(&mut ws).await.data.entity_id, "5");
    assert_eq!(
        recv_raw(&mut ws).await,
        r#"{"action":"subscribed","topic":"occasion:3","recovered":true}"#
    );
}
