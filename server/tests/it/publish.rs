//! `POST /publish`: auth (401 / 403, checked before the body), validation (400 / 422 with a
//! JSON error, nothing delivered), the exact success body, and `GET /healthz`.

use crate::common::*;
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

/// Issue 10 item 7: a body trickled a byte at a time is cut off with 408 (JSON error) after
/// the body timeout, and the connection is closed, instead of being held for as long as the
/// client likes.
#[tokio::test]
async fn a_trickled_body_gets_408_and_the_connection_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start_server_with(
        Config::new(SECRET).with_publish_body_timeout(std::time::Duration::from_secs(1)),
    )
    .await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let body = event_text("list:1", "1");
    let head = format!(
        "POST /publish HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        mint_publish_token(),
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = tcp.into_split();
    // One byte every 200 ms: the whole body would take about 40 s.
    let trickle = tokio::spawn(async move {
        for byte in body.into_bytes() {
            if write.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    let mut response = Vec::new();
    tokio::time::timeout(TIMEOUT, read.read_to_end(&mut response))
        .await
        .expect("the server held the connection")
        .unwrap();
    trickle.abort();
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{response}"
    );
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    let error: Value = serde_json::from_str(body).unwrap();
    assert_eq!(error["error"], "Request timeout");
}

/// Issue 10 item 8c: a publish token restricted by a `topics` claim publishes only there:
/// elsewhere 403 with a JSON error naming the topic, and nothing is delivered.
#[tokio::test]
async fn the_topics_claim_limits_publishing() {
    let server = start_server().await;
    let mut ws = server.client().await;
    subscribe(&mut ws, "list:2").await;
    subscribe(&mut ws, "list:1").await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let token = mint_claims(
        json!({"sub": "backend", "exp": exp, "scope": "publish", "topics": ["list:1", "list:1:*"]}),
    );
    let (status, text) = post(&server, Some(&bearer(&token)), &event_text("list:2", "1")).await;
    assert_eq!(status, 403, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"], "Forbidden");
    assert_eq!(error["topic"], "list:2");
    let (status, text) = post(&server, Some(&bearer(&token)), &event_text("list:1", "2")).await;
    assert_eq!(status, 202, "{text}");
    // Only the allowed event arrives.
    assert_eq!(recv_text(&mut ws).await, event_text("list:1", "2"));
}

/// Issue 10 item 8f: a payload nested deeper than 64 levels is refused with 422 and a clear
/// error, over HTTP and in process, and reaches nobody.
#[tokio::test]
async fn a_deeply_nested_payload_is_refused() {
    let server = start_server().await;
    let mut ws = server.client().await;
    subscribe(&mut ws, "list:1").await;
    let payload = |depth: usize| format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
    let event_with = |depth: usize| {
        format!(
            r#"{{"topic":"list:1","event":"ADDED","data":{{"entity_id":"1","payload":{},"user_id":"7","timestamp":"t"}}}}"#,
            payload(depth)
        )
    };
    let publisher = bearer(&mint_publish_token());
    for depth in [65, 40_000] {
        let (status, text) = post(&server, Some(&publisher), &event_with(depth)).await;
        assert_eq!(status, 422, "{text}");
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["error"], "Invalid event");
        let details = error["details"].as_str().unwrap();
        assert!(details.contains("nested deeper than 64"), "{details}");
    }
    // In process, the payload cannot even be built.
    assert!(tidings_server::protocol::Payload::from_json(payload(65)).is_err());
    // 64 levels pass, and that event is the only one delivered.
    let (status, text) = post(&server, Some(&publisher), &event_with(64)).await;
    assert_eq!(status, 202, "{text}");
    let received = recv_text(&mut ws).await;
    assert_eq!(received, event_with(64));
}
