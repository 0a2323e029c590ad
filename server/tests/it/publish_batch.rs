//! `POST /publish/batch` (many events, one result each) and `Idempotency-Key` on both publish
//! endpoints (issue 14), over a real socket.

use serde_json::{Value, json};
use tidings_server::Config;

use crate::common::*;

fn event_value(topic: &str, id: &str) -> Value {
    serde_json::from_str(&event_text(topic, id)).unwrap()
}

async fn post(
    server: &TestServer,
    path: &str,
    token: &str,
    key: Option<&str>,
    body: &Value,
) -> (u16, Option<String>, Value) {
    let mut request = reqwest::Client::new()
        .post(server.http_url(path))
        .bearer_auth(token)
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        replayed,
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_batch_publishes_each_event_in_order_with_one_result_each() {
    let server = start_server().await;
    let mut ws = server.client().await;
    subscribe(&mut ws, "list:1").await;
    let narrow = mint_claims(json!({
        "sub": "backend", "exp": 4_000_000_000u64, "scope": "publish", "topics": ["list:*"]
    }));
    let body = json!([
        event_value("list:1", "1"),
        {"topic": "list:1", "event": "ADDED"},
        event_value("gifts:all", "2"),
        event_value("list:1", "3"),
    ]);
    let (status, _, answer) = post(&server, "/publish/batch", &narrow, None, &body).await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0], json!({"delivered": 1}));
    assert_eq!(results[1]["status"], 422);
    assert_eq!(results[1]["error"], "Invalid event");
    assert_eq!(results[2]["status"], 403);
    assert_eq!(results[2]["topic"], "gifts:all");
    assert_eq!(results[3], json!({"delivered": 1}));
    // Delivered in order, with consecutive positions; the refused ones never.
    assert_eq!(recv_text(&mut ws).await, event_text("list:1", "1"));
    assert_eq!(recv_text(&mut ws).await, event_text("list:1", "3"));
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;

    // Whole-request errors publish nothing.
    let token = mint_publish_token();
    let (status, _, _) = post(
        &server,
        "/publish/batch",
        &token,
        None,
        &json!({"topic": 1}),
    )
    .await;
    assert_eq!(status, 400, "not an array");
    let (status, _, _) = post(
        &server,
        "/publish/batch",
        &mint_token("42"),
        None,
        &json!([]),
    )
    .await;
    assert_eq!(status, 403, "no publish scope");
    let (status, _, answer) = post(&server, "/publish/batch", &token, None, &json!([])).await;
    assert_eq!((status, answer), (200, json!({"results": []})));
}

#[tokio::test]
async fn batches_are_bounded_and_charged_to_the_publish_rate() {
    let config = Config::new(SECRET)
        .with_max_publish_batch(3)
        .with_publish_rate(1, 5);
    let server = start_server_with(config).await;
    let token = mint_publish_token();
    let four: Vec<Value> = (0..4)
        .map(|i| event_value("list:9", &i.to_string()))
        .collect();
    let (status, _, answer) = post(&server, "/publish/batch", &token, None, &json!(four)).await;
    assert_eq!(status, 422, "{answer}");
    // 3 + 3 > the burst of 5: the second batch is refused whole.
    let three = json!(four[..3]);
    assert_eq!(
        post(&server, "/publish/batch", &token, None, &three)
            .await
            .0,
        200
    );
    assert_eq!(
        post(&server, "/publish/batch", &token, None, &three)
            .await
            .0,
        429
    );
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_is_delivered_once() {
    let server = start_server().await;
    let mut ws = server.client().await;
    subscribe(&mut ws, "list:1").await;
    let token = mint_publish_token();

    let single = event_value("list:1", "1");
    let first = post(&server, "/publish", &token, Some("order-1"), &single).await;
    assert_eq!(first, (202, None, json!({"delivered": 1})));
    let retry = post(&server, "/publish", &token, Some("order-1"), &single).await;
    assert_eq!(
        retry,
        (202, Some("true".to_owned()), json!({"delivered": 1}))
    );

    let batch = json!([event_value("list:1", "2"), event_value("list:1", "3")]);
    let first = post(&server, "/publish/batch", &token, Some("order-1"), &batch).await;
    assert_eq!(first.0, 200, "the batch endpoint has its own keys");
    let retry = post(&server, "/publish/batch", &token, Some("order-1"), &batch).await;
    assert_eq!((retry.0, retry.1.as_deref()), (200, Some("true")));
    assert_eq!(retry.2, first.2);

    // Another publisher's key of the same name is its own.
    let other = mint_claims(json!({"sub": "other", "exp": 4_000_000_000u64, "scope": "publish"}));
    let theirs = post(
        &server,
        "/publish",
        &other,
        Some("order-1"),
        &event_value("list:1", "4"),
    )
    .await;
    assert_eq!(theirs.1, None);

    // Each event arrived exactly once.
    for id in ["1", "2", "3", "4"] {
        assert_eq!(recv_text(&mut ws).await, event_text("list:1", id));
    }
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;

    // A failed request keeps no answer: its retry runs.
    let bad = json!({"topic": "list:1"});
    assert_eq!(
        post(&server, "/publish", &token, Some("order-2"), &bad)
            .await
            .0,
        422
    );
    let fixed = post(
        &server,
        "/publish",
        &token,
        Some("order-2"),
        &event_value("list:1", "5"),
    )
    .await;
    assert_eq!((fixed.0, fixed.1), (202, None));
    // Malformed keys are refused.
    for key in ["", "a b", &"k".repeat(256)] {
        let (status, _, _) = post(&server, "/publish", &token, Some(key), &single).await;
        assert_eq!(status, 400, "{key:?}");
    }
}
