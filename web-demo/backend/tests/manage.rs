//! Lists and occasions are created, renamed and deleted through the API, live on the index
//! topics `lists:all` and `occasions:all` (and `occasion:{id}`); deleting cascades.

mod common;

use common::{Demo, payload};
use serde_json::json;
use tidings_protocol::EventType;

#[tokio::test]
async fn lists_and_occasions_come_and_go_live() {
    let demo = Demo::start().await;
    let mom = demo.login(1).await;
    let dad = demo.login(2).await;
    let mut sub = demo
        .subscribe(&dad.token, &["lists:all", "occasions:all", "gifts:all"])
        .await;

    // A new occasion.
    let (status, occasion) = mom
        .call(
            "POST",
            "/api/occasions",
            Some(json!({"name": "Easter", "date": "2027-03-28"})),
        )
        .await;
    assert_eq!(status, 201, "{occasion}");
    let oid = occasion["id"].as_i64().unwrap();
    let e = sub.next_event().await;
    assert_eq!(
        (e.topic.as_str(), &e.event),
        ("occasions:all", &EventType::Added)
    );
    assert_eq!(payload(&e)["name"], "Easter");
    let mut occ = demo
        .subscribe(&dad.token, &[&format!("occasion:{oid}")])
        .await;
    // It reads back whole (an empty section is still an occasion with its name and date).
    let (status, detail) = dad
        .call("GET", &format!("/api/occasions/{oid}"), None)
        .await;
    assert_eq!(
        (
            status,
            detail["name"].as_str(),
            detail["lists"].as_array().map(Vec::len)
        ),
        (200, Some("Easter"), Some(0))
    );

    // A list in it, renamed; an item and a gift in it.
    let (status, list) = mom
        .call(
            "POST",
            "/api/lists",
            Some(json!({"name": "Eggs", "occasion_id": oid, "recipient_id": 3})),
        )
        .await;
    assert_eq!(status, 201, "{list}");
    let lid = list["id"].as_i64().unwrap();
    assert_eq!(
        (list["item_count"].as_i64(), list["occasion_name"].as_str()),
        (Some(0), Some("Easter"))
    );
    let e = sub.next_event().await;
    assert_eq!(
        (e.topic.as_str(), &e.event, e.data.entity_id.as_str()),
        ("lists:all", &EventType::Added, lid.to_string().as_str())
    );
    let (status, renamed) = mom
        .call(
            "PATCH",
            &format!("/api/lists/{lid}"),
            Some(json!({"name": "Chocolate eggs"})),
        )
        .await;
    assert_eq!(
        (status, renamed["name"].as_str()),
        (200, Some("Chocolate eggs"))
    );
    let e = sub.next_event().await;
    assert_eq!(
        (&e.event, payload(&e)["name"].as_str()),
        (&EventType::Updated, Some("Chocolate eggs"))
    );
    let (_, item) = mom
        .call(
            "POST",
            &format!("/api/lists/{lid}/items"),
            Some(json!({"name": "Bunny"})),
        )
        .await;
    let (_, gift) = mom
        .call(
            "POST",
            "/api/gifts",
            Some(json!({"occasion_id": oid, "recipient_id": 4, "name": "Basket"})),
        )
        .await;
    assert_eq!(sub.next_event().await.event, EventType::Added, "the gift");

    // The occasion renamed: on occasion:{id} and the index.
    mom.call(
        "PATCH",
        &format!("/api/occasions/{oid}"),
        Some(json!({"name": "Easter 2027"})),
    )
    .await;
    assert_eq!(payload(&occ.next_event().await)["name"], "Easter 2027");
    assert_eq!(payload(&sub.next_event().await)["name"], "Easter 2027");

    // Deleting the occasion takes its list (and the list's items) and its gift with it.
    let (status, gone) = mom
        .call("DELETE", &format!("/api/occasions/{oid}"), None)
        .await;
    assert_eq!((status, gone["id"].as_i64()), (200, Some(oid)));
    let mut seen = Vec::new();
    for _ in 0..3 {
        let e = sub.next_event().await;
        seen.push((
            e.topic.as_str().to_owned(),
            e.event.as_str().to_owned(),
            e.data.entity_id.clone(),
        ));
    }
    assert_eq!(
        seen,
        [
            ("lists:all".into(), "DELETED".into(), lid.to_string()),
            ("gifts:all".into(), "DELETED".into(), gift["id"].to_string()),
            ("occasions:all".into(), "DELETED".into(), oid.to_string()),
        ]
    );
    assert_eq!(occ.next_event().await.event, EventType::Deleted);
    for path in [
        format!("/api/occasions/{oid}"),
        format!("/api/lists/{lid}"),
        format!("/api/items/{}", item["id"]),
    ] {
        assert_eq!(dad.call("GET", &path, None).await.0, 404, "{path}");
    }
    let (_, gifts) = dad.call("GET", "/api/gifts", None).await;
    assert!(
        !gifts
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["id"] == gift["id"])
    );

    // Deleting a list takes its items and comments.
    let (status, _) = mom.call("DELETE", "/api/lists/2", None).await;
    assert_eq!(status, 200);
    let e = sub.next_event().await;
    assert_eq!(
        (e.topic.as_str(), &e.event, e.data.entity_id.as_str()),
        ("lists:all", &EventType::Deleted, "2")
    );
    assert_eq!(dad.call("GET", "/api/items/4", None).await.0, 404);
    assert_eq!(mom.call("DELETE", "/api/lists/2", None).await.0, 404);
    assert_eq!(mom.call("DELETE", "/api/occasions/999", None).await.0, 404);
    // A list needs an existing occasion and member.
    for body in [
        json!({"name": "x", "occasion_id": 99}),
        json!({"name": "x", "recipient_id": 99}),
        json!({"name": ""}),
    ] {
        assert_eq!(mom.call("POST", "/api/lists", Some(body)).await.0, 422);
    }
    sub.assert_quiet().await;
    demo.stop().await;
}
