//! Surprises are kept by the server (issue 16): Sam, whose wish list is list 1 and for whom
//! the family plans gifts, logs in and watches every topic while the others buy, assign,
//! comment and plan. Every WebSocket frame he receives (live, and replayed after a
//! reconnect) and every API answer he gets is checked: he sees his wishes come and go, never
//! a status, a buyer, a comment or a gift for him. Alex, watching the same topics, gets
//! everything (so the events were published and the test can fail).

mod common;

use std::time::Duration;

use common::{Api, Demo, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const SAM: i64 = 4;
const TOPICS: [&str; 6] = [
    "list:1",
    "list-items:all",
    "gifts:all",
    "lists:all",
    "occasion:1",
    "occasions:all",
];
/// Texts only the secret parts of the flow carry (the statuses and buyers of Sam's wishes are
/// checked field by field: others' gifts may well be bought by Dad).
const SECRETS: [&str; 2] = ["Got it at the shop", "Secret drone"];

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A socket that records every text frame it receives.
struct Recorder {
    ws: Ws,
    frames: Vec<Value>,
}

impl Recorder {
    async fn open(demo: &Demo, token: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(format!("{}?token={token}", demo.ws))
            .await
            .unwrap();
        Self {
            ws,
            frames: Vec::new(),
        }
    }

    async fn send(&mut self, value: Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .unwrap();
    }

    /// Reads frames until none came for `quiet`.
    async fn drain(&mut self, quiet: Duration) {
        while let Ok(Some(msg)) = tokio::time::timeout(quiet, self.ws.next()).await {
            if let Message::Text(text) = msg.unwrap() {
                self.frames.push(serde_json::from_str(&text).unwrap());
            }
        }
    }

    /// Subscribes to `topics` with position tracking (so hidden events show as `skipped`);
    /// returns each topic's ack.
    async fn subscribe(&mut self, topics: &[&str], since: Option<&Value>) -> Vec<Value> {
        let mut acks = Vec::new();
        for topic in topics {
            let mut msg = json!({"action": "subscribe", "topic": topic, "position": true});
            if let Some(since) = since {
                let ack = since
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|a| a["topic"] == *topic)
                    .unwrap();
                msg["since"] = json!({"seq": 0, "epoch": ack["epoch"]});
            }
            self.send(msg).await;
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                assert!(tokio::time::Instant::now() < deadline, "no ack for {topic}");
                let msg = tokio::time::timeout(WAIT, self.ws.next())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                let Message::Text(text) = msg else { continue };
                let value: Value = serde_json::from_str(&text).unwrap();
                self.frames.push(value.clone());
                if value["action"] == "subscribed" && value["topic"] == *topic {
                    acks.push(value);
                    break;
                }
            }
        }
        acks
    }

    fn events(&self) -> Vec<&Value> {
        self.frames
            .iter()
            .filter(|f| f.get("event").is_some())
            .collect()
    }
}

/// Checks one frame or answer that Sam received: no secret text anywhere, and every item in
/// it (event payload or API entity) without status, assignee or comments.
fn assert_kept(what: &str, value: &Value) {
    let text = value.to_string();
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} leaks {secret:?}: {text}");
    }
    visit(value, &mut |v| {
        if v.get("list_id").is_some()
            && v.get("status").is_some()
            && v.get("recipient_id") == Some(&json!(SAM))
        {
            assert_eq!(v["status"], "HIDDEN", "{what}: {v}");
            assert_eq!(v["assignee_id"], Value::Null, "{what}: {v}");
            assert_eq!(v["comments"], json!([]), "{what}: {v}");
        }
        if v.get("done_count").is_some() && v.get("recipient_id") == Some(&json!(SAM)) {
            assert_eq!(v["done_count"], Value::Null, "{what}: {v}");
        }
        if v.get("giver_id").is_some() {
            assert_ne!(v["recipient_id"], json!(SAM), "{what}: a gift for Sam: {v}");
        }
    });
}

fn visit(value: &Value, f: &mut impl FnMut(&Value)) {
    f(value);
    match value {
        Value::Array(a) => a.iter().for_each(|v| visit(v, f)),
        Value::Object(o) => o.values().for_each(|v| visit(v, f)),
        _ => {}
    }
}

async fn get(api: &Api, path: &str) -> Value {
    let (status, body) = api.call("GET", path, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

#[tokio::test]
async fn the_recipient_never_receives_status_buyer_comments_or_gifts_for_them() {
    let demo = Demo::start().await;
    let (mom, dad, alex, sam) = (
        demo.login(1).await,
        demo.login(2).await,
        demo.login(3).await,
        demo.login(SAM).await,
    );
    let mut sam_ws = Recorder::open(&demo, &sam.token).await;
    let acks = Value::Array(sam_ws.subscribe(&TOPICS, None).await);
    let mut alex_ws = Recorder::open(&demo, &alex.token).await;
    alex_ws.subscribe(&TOPICS, None).await;

    // Mom adds a wish to Sam's list; Dad buys it, takes it and comments; Mom renames it.
    let (status, item) = mom
        .call("POST", "/api/lists/1/items", Some(json!({"name": "Kite"})))
        .await;
    assert_eq!(status, 201);
    let id = item["id"].as_i64().unwrap();
    for (method, path, body) in [
        (
            "PUT",
            format!("/api/items/{id}/status"),
            json!({"status": "PURCHASED"}),
        ),
        (
            "PUT",
            format!("/api/items/{id}/assignee"),
            json!({"assignee_id": 2}),
        ),
        (
            "POST",
            format!("/api/items/{id}/comments"),
            json!({"body": "Got it at the shop"}),
        ),
        (
            "PUT",
            "/api/items/1/status".into(),
            json!({"status": "PURCHASED"}),
        ),
    ] {
        let (status, answer) = dad.call(method, &path, Some(body)).await;
        assert!(status == 200 || status == 201, "{path}: {answer}");
    }
    let (status, _) = mom
        .call(
            "PATCH",
            &format!("/api/items/{id}"),
            Some(json!({"name": "Red kite"})),
        )
        .await;
    assert_eq!(status, 200);
    // A gift for Sam: planned, edited, bought, deleted; and one for Alex that Sam may see.
    let (status, gift) = mom
        .call(
            "POST",
            "/api/gifts",
            Some(json!({"occasion_id": 1, "recipient_id": SAM, "giver_id": 2, "name": "Secret drone"})),
        )
        .await;
    assert_eq!(status, 201, "{gift}");
    let gift_id = gift["id"].as_i64().unwrap();
    dad.call(
        "PATCH",
        &format!("/api/gifts/{gift_id}"),
        Some(json!({"status": "PURCHASED"})),
    )
    .await;
    dad.call(
        "PATCH",
        &format!("/api/gifts/{gift_id}"),
        Some(json!({"notes": "hide it"})),
    )
    .await;
    let (status, _) = mom
        .call(
            "POST",
            "/api/gifts",
            Some(json!({"occasion_id": 1, "recipient_id": 3, "name": "Scarf"})),
        )
        .await;
    assert_eq!(status, 201);
    // A new list for Sam, renamed.
    let (status, list) = mom
        .call(
            "POST",
            "/api/lists",
            Some(json!({"name": "Sam's Easter", "occasion_id": 2, "recipient_id": SAM})),
        )
        .await;
    assert_eq!(status, 201, "{list}");
    mom.call(
        "PATCH",
        &format!("/api/lists/{}", list["id"]),
        Some(json!({"name": "Sam's Easter basket"})),
    )
    .await;

    sam_ws.drain(Duration::from_millis(700)).await;
    alex_ws.drain(Duration::from_millis(300)).await;

    // Alex got the full story (so it was published).
    let alex_text = Value::Array(alex_ws.frames.clone()).to_string();
    for secret in ["Got it at the shop", "Secret drone", "PURCHASED"] {
        assert!(alex_text.contains(secret), "Alex should see {secret}");
    }
    // Sam: every frame clean; he saw his wish added and renamed, the other gift, his new list.
    for frame in &sam_ws.frames {
        assert_kept("a frame to Sam", frame);
    }
    let seen: Vec<(String, String)> = sam_ws
        .events()
        .iter()
        .map(|e| {
            (
                e["topic"].as_str().unwrap().to_owned(),
                e["event"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("list:1", "ADDED"),
        ("list-items:all", "ADDED"),
        ("list:1", "UPDATED"),
        ("gifts:all", "ADDED"),
        ("lists:all", "ADDED"),
        ("lists:all", "UPDATED"),
    ] {
        let expected = (expected.0.to_owned(), expected.1.to_owned());
        assert!(
            seen.contains(&expected),
            "Sam should get {expected:?}; got {seen:?}"
        );
    }
    for hidden in ["STATUS_CHANGED", "ASSIGNED", "COMMENT_ADDED"] {
        assert!(
            !seen.iter().any(|(_, e)| e == hidden),
            "Sam got a {hidden}: {seen:?}"
        );
    }
    let renamed = sam_ws
        .events()
        .into_iter()
        .find(|e| e["event"] == "UPDATED" && e["topic"] == "list:1")
        .unwrap();
    assert_eq!(renamed["data"]["payload"]["name"], "Red kite");
    assert!(
        sam_ws.frames.iter().any(|f| f["action"] == "skipped"),
        "hidden events take their positions as bare `skipped` frames"
    );

    // A reconnect that replays the topics' history from the start: the same audience.
    let mut replay = Recorder::open(&demo, &sam.token).await;
    let replay_acks = replay.subscribe(&TOPICS, Some(&acks)).await;
    replay.drain(Duration::from_millis(300)).await;
    assert!(
        replay_acks.iter().all(|a| a["recovered"] == true),
        "{replay_acks:?}"
    );
    assert!(replay.events().len() >= 6, "replayed {:?}", replay.frames);
    for frame in &replay.frames {
        assert_kept("a replayed frame to Sam", frame);
    }

    // Every read Sam can make.
    let mut reads = vec![
        "/api/lists".to_owned(),
        "/api/lists/1".into(),
        "/api/lists/3".into(),
        format!("/api/lists/{}", list["id"]),
        format!("/api/items/{id}"),
        "/api/items/1".into(),
        "/api/gifts".into(),
        "/api/occasions".into(),
        "/api/occasions/1".into(),
        "/api/occasions/2".into(),
        "/api/activity".into(),
    ];
    reads.sort();
    for path in &reads {
        let body = get(&sam, path).await;
        assert_kept(path, &body);
    }
    let list1 = get(&sam, "/api/lists/1").await;
    assert_eq!(list1["done_count"], Value::Null);
    assert!(
        list1["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "Red kite")
    );
    let gifts = get(&sam, "/api/gifts").await;
    assert!(
        gifts
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "Scarf")
    );
    // Others still see everything.
    let full = get(&alex, &format!("/api/items/{id}")).await;
    assert_eq!(
        (full["status"].as_str(), full["assignee_name"].as_str()),
        (Some("PURCHASED"), Some("Dad"))
    );
    assert_eq!(full["comments"][0]["body"], "Got it at the shop");

    // What Sam may not do, and the answers say nothing.
    for (method, path, body, expected) in [
        (
            "PUT",
            format!("/api/items/{id}/status"),
            json!({"status": "IDEA"}),
            403,
        ),
        (
            "PUT",
            format!("/api/items/{id}/assignee"),
            json!({"assignee_id": 4}),
            403,
        ),
        (
            "POST",
            format!("/api/items/{id}/comments"),
            json!({"body": "?"}),
            403,
        ),
        (
            "PATCH",
            format!("/api/gifts/{gift_id}"),
            json!({"name": "x"}),
            404,
        ),
        (
            "POST",
            "/api/gifts".into(),
            json!({"occasion_id": 1, "recipient_id": SAM, "name": "Me"}),
            422,
        ),
    ] {
        let (status, answer) = sam.call(method, &path, Some(body)).await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
        assert_kept(&path, &answer);
    }
    let (status, _) = sam
        .call("DELETE", &format!("/api/gifts/{gift_id}"), None)
        .await;
    assert_eq!(status, 404);
    // His own wish he may edit; the answer is redacted.
    let (status, answer) = sam
        .call(
            "PATCH",
            &format!("/api/items/{id}"),
            Some(json!({"notes": "any colour"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_kept("Sam's edit", &answer);
    assert_eq!(answer["status"], "HIDDEN");

    // Reads need a token, so that the server knows whom not to tell.
    for path in [
        "/api/lists/1",
        "/api/gifts",
        "/api/activity",
        "/api/items/1",
    ] {
        let (status, _) = sam.raw("GET", path, None, false).await;
        assert_eq!(status, 401, "{path}");
    }
    demo.stop().await;
}

#[tokio::test]
async fn the_feed_survives_a_reload_and_keeps_surprises() {
    let demo = Demo::start().await;
    let (mom, dad, sam) = (
        demo.login(1).await,
        demo.login(2).await,
        demo.login(SAM).await,
    );
    let (_, item) = mom
        .call("POST", "/api/lists/1/items", Some(json!({"name": "Kite"})))
        .await;
    let id = item["id"].as_i64().unwrap();
    dad.call(
        "PUT",
        &format!("/api/items/{id}/status"),
        Some(json!({"status": "PURCHASED"})),
    )
    .await;
    mom.call(
        "POST",
        "/api/gifts",
        Some(json!({"occasion_id": 1, "recipient_id": SAM, "name": "Secret drone"})),
    )
    .await;
    mom.call("POST", "/api/lists/2/items", Some(json!({"name": "Yo-yo"})))
        .await;

    // Dad's feed: newest first, every change, shaped as the events were.
    let feed = get(&dad, "/api/activity").await;
    let kinds: Vec<_> = feed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["topic"].as_str().unwrap(),
                e["event"].as_str().unwrap(),
                e["data"]["payload"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "list-items:all ADDED Yo-yo",
            "gifts:all ADDED Secret drone",
            "list-items:all STATUS_CHANGED Kite",
            "list-items:all ADDED Kite",
        ]
    );
    assert_eq!(feed[2]["data"]["user_id"], "2");
    assert_eq!(feed[2]["data"]["payload"]["actor_name"], "Dad");
    // Sam's: his wish added (redacted) and Alex's yo-yo; not the purchase, not the drone.
    let feed = get(&sam, "/api/activity").await;
    assert_kept("Sam's feed", &feed);
    let names: Vec<_> = feed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ADDED", "ADDED"]);
    // Bounded: `limit` from 1 to 100.
    assert_eq!(
        get(&dad, "/api/activity?limit=1")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (status, body) = dad.call("GET", "/api/activity?limit=1000", None).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("limit")));
    demo.stop().await;
}
