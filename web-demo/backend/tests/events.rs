//! Every mutation publishes the right event on the right topics, after the write, with the
//! seed's data shape (`entity_id` / `user_id` strings, the entity and the actor's name in the
//! payload, an RFC 3339 UTC timestamp).

mod common;

use common::{Demo, payload};
use serde_json::json;
use tidings_protocol::{EventType, WSEvent};

/// Reads one event per topic in `topics` (in publish order) and checks they carry the same
/// event and data.
async fn expect_on(
    sub: &mut common::Subscriber,
    topics: &[&str],
    kind: EventType,
    entity_id: &str,
    user_id: &str,
) -> WSEvent {
    let mut first: Option<WSEvent> = None;
    for topic in topics {
        let event = sub.next_event().await;
        assert_eq!(event.topic.as_str(), *topic);
        assert_eq!(event.event, kind, "on {topic}");
        assert_eq!(event.data.entity_id, entity_id);
        assert_eq!(event.data.user_id, user_id);
        let ts = &event.data.timestamp;
        assert!(
            ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "timestamp {ts}"
        );
        if let Some(first) = &first {
            assert_eq!(first.data, event.data, "same data on every topic");
        }
        first.get_or_insert(event);
    }
    first.unwrap()
}

#[tokio::test]
async fn item_mutations_publish_on_the_list_and_on_list_items_all() {
    let demo = Demo::start().await;
    let mom = demo.login(1).await;
    let dad = demo.login(2).await;
    // Dad watches list 1, the firehose and another list that must stay silent.
    let mut sub = demo
        .subscribe(&dad.token, &["list:1", "list-items:all", "list:2"])
        .await;
    let both = ["list:1", "list-items:all"];

    let (status, item) = mom
        .call(
            "POST",
            "/api/lists/1/items",
            Some(json!({"name": "Kite", "notes": "red"})),
        )
        .await;
    assert_eq!(status, 201, "{item}");
    let id = item["id"].as_i64().unwrap().to_string();
    let e = expect_on(&mut sub, &both, EventType::Added, &id, "1").await;
    let p = payload(&e);
    assert_eq!(p["name"], "Kite");
    assert_eq!(p["notes"], "red");
    assert_eq!(p["status"], "IDEA");
    assert_eq!(p["list_id"], 1);
    assert_eq!(p["actor_name"], "Mom");
    assert_eq!(p["actor_id"], 1);

    let (status, _) = mom
        .call(
            "PATCH",
            &format!("/api/items/{id}"),
            Some(json!({"name": "Big kite"})),
        )
        .await;
    assert_eq!(status, 200);
    let e = expect_on(&mut sub, &both, EventType::Updated, &id, "1").await;
    assert_eq!(payload(&e)["name"], "Big kite");
    assert_eq!(payload(&e)["notes"], "red", "absent fields unchanged");

    let (status, _) = dad
        .call(
            "PUT",
            &format!("/api/items/{id}/status"),
            Some(json!({"status": "PURCHASED"})),
        )
        .await;
    assert_eq!(status, 200);
    let e = expect_on(&mut sub, &both, EventType::StatusChanged, &id, "2").await;
    assert_eq!(payload(&e)["status"], "PURCHASED");
    assert_eq!(payload(&e)["actor_name"], "Dad");

    let (status, _) = mom
        .call(
            "PUT",
            &format!("/api/items/{id}/assignee"),
            Some(json!({"assignee_id": 3})),
        )
        .await;
    assert_eq!(status, 200);
    let e = expect_on(&mut sub, &both, EventType::Assigned, &id, "1").await;
    assert_eq!(payload(&e)["assignee_id"], 3);
    assert_eq!(payload(&e)["assignee_name"], "Alex");

    let (status, _) = mom
        .call(
            "POST",
            &format!("/api/items/{id}/comments"),
            Some(json!({"body": "Found one!"})),
        )
        .await;
    assert_eq!(status, 201);
    let e = expect_on(&mut sub, &both, EventType::CommentAdded, &id, "1").await;
    let p = payload(&e);
    assert_eq!(p["comment"]["body"], "Found one!");
    assert_eq!(p["comment"]["member_name"], "Mom");
    assert_eq!(p["comments"].as_array().unwrap().len(), 1);

    let (status, _) = mom.call("DELETE", &format!("/api/items/{id}"), None).await;
    assert_eq!(status, 200);
    let e = expect_on(&mut sub, &both, EventType::Deleted, &id, "1").await;
    assert_eq!(payload(&e)["name"], "Big kite");

    // The deleted item is gone for readers too.
    let (status, _) = mom.call("GET", &format!("/api/items/{id}"), None).await;
    assert_eq!(status, 404);
    // Nothing ever went to list:2.
    sub.assert_quiet().await;
    demo.stop().await;
}

#[tokio::test]
async fn an_item_on_another_list_reaches_that_list_and_the_firehose_only() {
    let demo = Demo::start().await;
    let alex = demo.login(3).await;
    let mut sub = demo
        .subscribe(&alex.token, &["list:1", "list-items:all"])
        .await;
    let (status, item) = alex
        .call("POST", "/api/lists/2/items", Some(json!({"name": "Yo-yo"})))
        .await;
    assert_eq!(status, 201);
    let id = item["id"].as_i64().unwrap().to_string();
    let e = expect_on(&mut sub, &["list-items:all"], EventType::Added, &id, "3").await;
    assert_eq!(payload(&e)["list_id"], 2);
    sub.assert_quiet().await;
    demo.stop().await;
}

#[tokio::test]
async fn gift_and_occasion_mutations_publish_on_their_topics() {
    let demo = Demo::start().await;
    let mom = demo.login(1).await;
    let mut gifts = demo.subscribe(&mom.token, &["gifts:all"]).await;

    let (status, gift) = mom
        .call(
            "POST",
            "/api/gifts",
            Some(json!({"occasion_id": 1, "recipient_id": 3, "name": "Scarf"})),
        )
        .await;
    assert_eq!(status, 201, "{gift}");
    let id = gift["id"].as_i64().unwrap().to_string();
    let e = expect_on(&mut gifts, &["gifts:all"], EventType::Added, &id, "1").await;
    assert_eq!(payload(&e)["recipient_name"], "Alex");

    let (status, _) = mom
        .call(
            "PATCH",
            &format!("/api/gifts/{id}"),
            Some(json!({"status": "WRAPPED"})),
        )
        .await;
    assert_eq!(status, 200);
    let e = expect_on(
        &mut gifts,
        &["gifts:all"],
        EventType::StatusChanged,
        &id,
        "1",
    )
    .await;
    assert_eq!(payload(&e)["status"], "WRAPPED");

    let (status, _) = mom
        .call(
            "PATCH",
            &format!("/api/gifts/{id}"),
            Some(json!({"name": "Wool scarf", "giver_id": 2})),
        )
        .await;
    assert_eq!(status, 200);
    let e = expect_on(&mut gifts, &["gifts:all"], EventType::Updated, &id, "1").await;
    assert_eq!(payload(&e)["giver_name"], "Dad");

    let (status, _) = mom.call("DELETE", &format!("/api/gifts/{id}"), None).await;
    assert_eq!(status, 200);
    expect_on(&mut gifts, &["gifts:all"], EventType::Deleted, &id, "1").await;

    let mut occasion = demo.subscribe(&mom.token, &["occasion:1"]).await;
    let (status, _) = mom
        .call(
            "PATCH",
            "/api/occasions/1",
            Some(json!({"notes": "At our place"})),
        )
        .await;
    assert_eq!(status, 200);
    let e = expect_on(&mut occasion, &["occasion:1"], EventType::Updated, "1", "1").await;
    assert_eq!(payload(&e)["notes"], "At our place");

    let (status, created) = mom
        .call(
            "POST",
            "/api/occasions",
            Some(json!({"name": "Easter", "date": "2027-03-28"})),
        )
        .await;
    assert_eq!(status, 201);
    let new_id = created["id"].as_i64().unwrap();
    // Published on its own new topic, which nobody watches yet: occasion:1 stays quiet.
    occasion.assert_quiet().await;
    let mut easter = demo
        .subscribe(&mom.token, &[&format!("occasion:{new_id}")])
        .await;
    mom.call(
        "PATCH",
        &format!("/api/occasions/{new_id}"),
        Some(json!({"name": "Easter 2027"})),
    )
    .await;
    let e = expect_on(
        &mut easter,
        &[&format!("occasion:{new_id}")],
        EventType::Updated,
        &new_id.to_string(),
        "1",
    )
    .await;
    assert_eq!(payload(&e)["name"], "Easter 2027");
    gifts.assert_quiet().await;
    demo.stop().await;
}

/// A mutation that names its tab's connection (`tidings-connection-id`) leaves that connection
/// out of its events: the tab applied the change from the response. Every other connection,
/// the same member's other tabs included, gets them; without the header everyone does; a
/// malformed header is a 400 and changes nothing.
#[tokio::test]
async fn the_initiating_connection_is_left_out_of_its_own_events() {
    let demo = Demo::start().await;
    let mom = demo.login(1).await;
    let dad = demo.login(2).await;
    let both = ["list:1", "list-items:all"];
    let mut mom_tab = demo.subscribe_as(&mom.token, "mom-tab-1", &both).await;
    let mut mom_other_tab = demo.subscribe_as(&mom.token, "mom-tab-2", &both).await;
    let mut dad_tab = demo.subscribe_as(&dad.token, "dad-tab", &both).await;

    let (status, item) = mom
        .call_from(
            "mom-tab-1",
            "POST",
            "/api/lists/1/items",
            Some(json!({"name": "Kite"})),
        )
        .await;
    assert_eq!(status, 201, "{item}");
    let id = item["id"].as_i64().unwrap().to_string();
    expect_on(&mut dad_tab, &both, EventType::Added, &id, "1").await;
    expect_on(&mut mom_other_tab, &both, EventType::Added, &id, "1").await;
    mom_tab.assert_quiet().await;

    // The gift and occasion routes take it too.
    let mut gifts = demo
        .subscribe_as(&mom.token, "mom-tab-1", &["gifts:all"])
        .await;
    let mut dad_gifts = demo.subscribe(&dad.token, &["gifts:all"]).await;
    let (status, gift) = mom
        .call_from(
            "mom-tab-1",
            "POST",
            "/api/gifts",
            Some(json!({"occasion_id": 1, "recipient_id": 4, "name": "Scarf"})),
        )
        .await;
    assert_eq!(status, 201, "{gift}");
    let gift_id = gift["id"].as_i64().unwrap().to_string();
    expect_on(
        &mut dad_gifts,
        &["gifts:all"],
        EventType::Added,
        &gift_id,
        "1",
    )
    .await;
    gifts.assert_quiet().await;

    // Without the header, the acting tab gets its echo like everyone else.
    let (status, _) = mom
        .call(
            "PUT",
            &format!("/api/items/{id}/status"),
            Some(json!({"status": "PURCHASED"})),
        )
        .await;
    assert_eq!(status, 200);
    for sub in [&mut mom_tab, &mut mom_other_tab, &mut dad_tab] {
        expect_on(sub, &both, EventType::StatusChanged, &id, "1").await;
    }

    // A header that is not a connection id: 400, nothing written, nothing published.
    for bad in ["", "has space", &"x".repeat(65)] {
        let (status, body) = mom
            .call_from(
                bad,
                "PATCH",
                &format!("/api/items/{id}"),
                Some(json!({"name": "Broken"})),
            )
            .await;
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("tidings-connection-id"),
            "{body}"
        );
    }
    dad_tab.assert_quiet().await;
    let (_, read) = mom.call("GET", &format!("/api/items/{id}"), None).await;
    assert_eq!(read["name"], "Kite");
    demo.stop().await;
}
