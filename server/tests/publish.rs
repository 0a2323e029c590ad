//! `POST /publish`: auth (401 / 403, checked before the body), validation (400 / 422 with a
//! JSON error, nothing delivered), the exact success body, and `GET /healthz`.

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tidings_server::Config;

async fn post(server: &TestServer, auth: Option<&str>, body: &str) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(server.http_url("/publish"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn success_is_202_with_exactly_the_delivered_count() {
    let server = start_server().await;
    let mut ws = server.client().await;
    subscribe(&mut ws, "list:1").await;
    let (status, body) = post(
        &server,
        Some(&bearer(&mint_publish_token())),
        &event_text("list:1", "5"),
    )
    .await;
    assert_eq!((status, body.as_str()), (202, r#"{"delivered":1}"#));
    assert_eq!(recv_text(&mut ws).await, event_text("list:1", "5"));
    let (status, body) = post(
        &server,
        Some(&bearer(&mint_publish_token())),
        &event_text("list:2", "5"),
    )
    .await;
    assert_eq!((status, body.as_str()), (202, r#"{"delivered":0}"#));
    // The scope claim is a space-separated list.
    let token = mint_claims(json!({"sub": "b", "exp": u32::MAX, "scope": "read publish"}));
    let (status, _) = post(&server, Some(&bearer(&token)), &event_text("list:1", "6")).await;
    assert_eq!(status, 202);
    assert_eq!(recv_text(&mut ws).await, event_text("list:1", "6"));
}

#[tokio::test]
async fn bad_tokens_get_401_and_no_scope_gets_403() {
    let server = start_server().await;
    let mut ws = server.client().await;
    subscribe(&mut ws, "list:1").await;
    let body = event_text("list:1", "1");
    let exp = u32::MAX;
    let unauthorized = [
        None,
        Some(String::new()),
        Some("Bearer".into()),
        Some("Bearer ".into()),
        Some("Basic dXNlcjpwYXNz".into()),
        Some(bearer("not-a-jwt")),
        Some(bearer(&sign(
            &json!({"sub": "b", "exp": exp, "scope": "publish"}),
            Algorithm::HS256,
            "wrong-secret",
        ))),
        Some(bearer(&sign(
            &json!({"sub": "b", "exp": exp, "scope": "publish"}),
            Algorithm::HS384,
            SECRET,
        ))),
        Some(bearer(&mint_claims(
            json!({"sub": "b", "exp": 1_000_000, "scope": "publish"}),
        ))),
        Some(bearer(&mint_claims(
            json!({"exp": exp, "scope": "publish"}),
        ))),
        Some(bearer(&mint_claims(
            json!({"sub": "b", "scope": "publish"}),
        ))),
        Some(bearer(&alg_none_token())),
    ];
    for auth in &unauthorized {
        let (status, text) = post(&server, auth.as_deref(), &body).await;
        assert_eq!(status, 401, "{auth:?}");
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["error"], "Unauthorized", "{auth:?}");
        assert!(error["details"].is_string());
    }
    for token in [
        mint_token("42"),
        mint_claims(json!({"sub": "b", "exp": exp, "scope": "read"})),
        mint_claims(json!({"sub": "b", "exp": exp, "scope": "publisher"})),
    ] {
        let (status, text) = post(&server, Some(&bearer(&token)), &body).await;
        assert_eq!(status, 403);
        assert_eq!(
            text,
            r#"{"error":"Forbidden","details":"token lacks the `publish` scope"}"#
        );
    }
    // Nothing was delivered: the next frame is the pong.
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
}

#[tokio::test]
async fn malformed_bodies_get_400_or_422_and_deliver_nothing() {
    let server = start_server().await;
    let mut ws = server.client().await;
    subscribe(&mut ws, "list:1").await;
    let auth = bearer(&mint_publish_token());
    let valid: Value = serde_json::from_str(&event_text("list:1", "1")).unwrap();
    let with = |path: &[&str], value: Option<Value>| {
        let mut v = valid.clone();
        let mut target = &mut v;
        for key in &path[..path.len() - 1] {
            target = &mut target[*key];
        }
        let obj = target.as_object_mut().unwrap();
        match value {
            Some(value) => obj.insert(path[path.len() - 1].to_owned(), value),
            None => obj.remove(path[path.len() - 1]),
        };
        v.to_string()
    };
    let cases = [
        ("missing topic", with(&["topic"], None)),
        ("missing event", with(&["event"], None)),
        ("missing data", with(&["data"], None)),
        ("missing entity_id", with(&["data", "entity_id"], None)),
        ("missing payload", with(&["data", "payload"], None)),
        ("missing user_id", with(&["data", "user_id"], None)),
        ("missing timestamp", with(&["data", "timestamp"], None)),
        (
            "entity_id a number",
            with(&["data", "entity_id"], Some(json!(456))),
        ),
        (
            "user_id a number",
            with(&["data", "user_id"], Some(json!(789))),
        ),
        (
            "user_id null",
            with(&["data", "user_id"], Some(Value::Null)),
        ),
        (
            "timestamp a number",
            with(&["data", "timestamp"], Some(json!(1_700_000_000))),
        ),
        (
            "payload an array",
            with(&["data", "payload"], Some(json!([1, 2]))),
        ),
        (
            "payload a string",
            with(&["data", "payload"], Some(json!("x"))),
        ),
        (
            "payload null",
            with(&["data", "payload"], Some(Value::Null)),
        ),
        (
            "invalid event name",
            with(&["event"], Some(json!("exploded"))),
        ),
        ("lowercase event", with(&["event"], Some(json!("added")))),
        ("bad topic", with(&["topic"], Some(json!("list 1")))),
        ("empty topic", with(&["topic"], Some(json!("")))),
        ("not an object", "[1,2,3]".to_owned()),
        ("not json", "{not json".to_owned()),
        ("empty body", String::new()),
    ];
    for (case, body) in &cases {
        let (status, text) = post(&server, Some(&auth), body).await;
        assert!(status == 400 || status == 422, "{case}: status {status}");
        let error: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{case}: {text}"));
        assert!(error["error"].is_string(), "{case}: {text}");
        assert!(error["details"].is_string(), "{case}: {text}");
    }
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
}

/// Sends request headers announcing a 1 MB body, sends only a few bytes of it, and returns
/// the status line: the server can only answer if it decides without reading the body.
async fn status_without_sending_the_body(server: &TestServer, auth: Option<&str>) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /publish HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{{\"topic\":",
        server.addr
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut line = String::new();
    tokio::time::timeout(TIMEOUT, BufReader::new(tcp).read_line(&mut line))
        .await
        .expect("the server waited for the body")
        .unwrap();
    line.trim_end().to_owned()
}

#[tokio::test]
async fn auth_is_checked_before_the_body_is_read() {
    let server = start_server().await;
    assert_eq!(
        status_without_sending_the_body(&server, None).await,
        "HTTP/1.1 401 Unauthorized"
    );
    assert_eq!(
        status_without_sending_the_body(&server, Some(&bearer("a.b.c"))).await,
        "HTTP/1.1 401 Unauthorized"
    );
    assert_eq!(
        status_without_sending_the_body(&server, Some(&bearer(&mint_token("42")))).await,
        "HTTP/1.1 403 Forbidden"
    );
}

#[tokio::test]
async fn the_body_is_limited() {
    let server = start_server_with(Config::new(SECRET).with_max_publish_body(1024)).await;
    let (status, text) = post(
        &server,
        Some(&bearer(&mint_publish_token())),
        &format!(
            r#"{{"topic":"list:1","event":"ADDED","data":{{"entity_id":"1","payload":{{"x":"{}"}},"user_id":"1","timestamp":"t"}}}}"#,
            "a".repeat(2048)
        ),
    )
    .await;
    assert_eq!(status, 413);
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"], "Payload too large");
}

#[tokio::test]
async fn healthz_is_200() {
    let server = start_server().await;
    let response = reqwest::get(server.http_url("/healthz")).await.unwrap();
    assert_eq!(response.status(), 200);
}
