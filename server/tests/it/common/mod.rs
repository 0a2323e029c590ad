//! Shared helpers for the server's integration tests: a server on a real bound port, token
//! minting (valid and every kind of invalid) and a small WebSocket client.
#![allow(dead_code, unreachable_pub)]

pub mod raw;
pub mod stream;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tidings_server::{Config, ServeError, Tidings};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The secret every test server uses (at least 32 bytes: the binary refuses shorter ones).
pub const SECRET: &str = "integration-test-secret-of-at-least-32-bytes";

/// Generous: the machine is busy, and nothing here is a timing assertion.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A WebSocket client connection.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A running server. Dropping it leaves the server running until the test's runtime ends.
pub struct TestServer {
    pub addr: SocketAddr,
    pub tidings: Tidings,
    stop: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<Result<(), ServeError>>,
}

impl TestServer {
    /// `ws://ADDR/ws?token=...`
    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/ws?token={token}", self.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Completes the shutdown future given to `serve`.
    pub fn trigger_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// A connected client with a valid token.
    pub async fn client(&self) -> Ws {
        connect(&self.ws_url(&mint_token("42"))).await
    }

    /// Publishes over HTTP with a publish-scoped token and returns `delivered`.
    pub async fn publish_http(&self, event: &serde_json::Value) -> u64 {
        let response = reqwest::Client::new()
            .post(self.http_url("/publish"))
            .bearer_auth(mint_publish_token())
            .json(event)
            .send()
            .await
            .expect("publish request");
        assert_eq!(response.status(), 202);
        let body: serde_json::Value = response.json().await.expect("publish body");
        body["delivered"].as_u64().expect("delivered count")
    }
}

/// Starts a server with the default configuration (secret [`SECRET`]).
pub async fn start_server() -> TestServer {
    start_server_with(Config::new(SECRET)).await
}

/// Starts a server with `config` on `127.0.0.1:0`, through the library's `serve`.
pub async fn start_server_with(config: Config) -> TestServer {
    serve_tidings(Tidings::new(config)).await
}

/// Serves `tidings` (built by the test, e.g. with `Tidings::builder`) on a free loopback port.
pub async fn serve_tidings(tidings: Tidings) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let app = tidings.router();
    let handle = tokio::spawn(tidings_server::serve(
        listener,
        app,
        tidings.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    TestServer {
        addr,
        tidings,
        stop: Some(stop),
        handle,
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Signs arbitrary claims with `alg` and `secret`.
pub fn sign(claims: &serde_json::Value, alg: Algorithm, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// A valid subscriber token for user `sub`.
pub fn mint_token(sub: &str) -> String {
    sign(
        &json!({"sub": sub, "exp": now() + 3600}),
        Algorithm::HS256,
        SECRET,
    )
}

/// A valid token with `"scope": "publish"`.
pub fn mint_publish_token() -> String {
    sign(
        &json!({"sub": "backend", "exp": now() + 3600, "scope": "publish"}),
        Algorithm::HS256,
        SECRET,
    )
}

/// A token with claims `claims` (HS256, right secret).
pub fn mint_claims(claims: serde_json::Value) -> String {
    sign(&claims, Algorithm::HS256, SECRET)
}

/// An expired token (well beyond any leeway).
pub fn expired_token() -> String {
    mint_claims(json!({"sub": "42", "exp": now() - 3600}))
}

/// An unsigned `alg: none` token with otherwise valid claims.
pub fn alg_none_token() -> String {
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = base64url(format!(r#"{{"sub":"42","exp":{}}}"#, now() + 3600).as_bytes());
    format!("{header}.{claims}.")
}

/// Unpadded base64url, enough for hand-made tokens.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Connects a WebSocket client (the handshake must succeed).
pub async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out")
        .expect("handshake");
    ws
}

/// Connects offering the subprotocols `protocols` (the handshake must succeed); returns the
/// socket and the subprotocol the server chose (`Sec-WebSocket-Protocol` of its answer).
pub async fn connect_with_protocols(url: &str, protocols: &[&str]) -> (Ws, Option<String>) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().expect("request");
    if !protocols.is_empty() {
        let value = protocols.join(", ").parse().expect("header value");
        request
            .headers_mut()
            .insert("sec-websocket-protocol", value);
    }
    let (ws, response) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect timed out")
        .expect("handshake");
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (ws, chosen)
}

/// Sends a text frame.
pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// The next frame (transport pings/pongs skipped), within [`TIMEOUT`].
pub async fn next_frame(ws: &mut Ws) -> Message {
    loop {
        let msg = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("no frame within the timeout")
            .expect("stream ended")
            .expect("read error");
        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return msg;
        }
    }
}

/// The next frame, which must be a text frame.
///
/// An event's server-assigned position (`,"seq":N,"epoch":"E"` before its closing brace) is
/// checked and removed, so that tests compare events byte for byte with the seed's texts;
/// [`recv_raw`] keeps it.
pub async fn recv_text(ws: &mut Ws) -> String {
    strip_position(&recv_raw(ws).await)
}

/// The next frame, which must be a text frame, exactly as received.
pub async fn recv_raw(ws: &mut Ws) -> String {
    match next_frame(ws).await {
        Message::Text(text) => text.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// `text` without its trailing `,"seq":N,"epoch":"E"` (events only; other texts unchanged).
pub fn strip_position(text: &str) -> String {
    if !text.starts_with(r#"{"topic""#) {
        return text.to_owned();
    }
    let cut = text
        .rfind(r#","seq":"#)
        .unwrap_or_else(|| panic!("event without seq: {text}"));
    let tail = &text[cut..];
    let value: serde_json::Value = serde_json::from_str(&format!("{{{}", &tail[1..])).unwrap();
    assert!(value["seq"].as_u64().unwrap() >= 1, "bad seq in {text}");
    assert!(
        !value["epoch"].as_str().unwrap().is_empty(),
        "bad epoch in {text}"
    );
    format!("{}}}", &text[..cut])
}

/// The next frame, which must be a close frame; returns its code and reason.
pub async fn recv_close(ws: &mut Ws) -> (u16, String) {
    match next_frame(ws).await {
        Message::Close(Some(frame)) => (u16::from(frame.code), frame.reason.to_string()),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Sends `text` and expects exactly `reply` back.
pub async fn roundtrip(ws: &mut Ws, text: &str, reply: &str) {
    send(ws, text).await;
    assert_eq!(recv_text(ws).await, reply, "reply to {text}");
}

/// Subscribes and waits for the confirmation.
pub async fn subscribe(ws: &mut Ws, topic: &str) {
    roundtrip(
        ws,
        &format!(r#"{{"action":"subscribe","topic":"{topic}"}}"#),
        &format!(r#"{{"action":"subscribed","topic":"{topic}"}}"#),
    )
    .await;
}

/// A seed event on `topic` as JSON text, with a distinguishing `entity_id`.
pub fn event_text(topic: &str, entity_id: &str) -> String {
    format!(
        r#"{{"topic":"{topic}","event":"ADDED","data":{{"entity_id":"{entity_id}","payload":{{"id":{entity_id},"name":"Lego"}},"user_id":"789","timestamp":"2025-11-26T10:30:00Z"}}}}"#
    )
}

/// The same event as a parsed protocol value, for `Hub::publish`.
pub fn event(topic: &str, entity_id: &str) -> tidings_server::protocol::WSEvent {
    serde_json::from_str(&event_text(topic, entity_id)).expect("event")
}

/// The same event as a JSON value, for HTTP publishing.
pub fn event_json(topic: &str, entity_id: &str) -> serde_json::Value {
    serde_json::from_str(&event_text(topic, entity_id)).expect("event")
}

/// Polls `f` until it returns true or [`TIMEOUT`] passes.
pub async fn eventually<F, Fut>(mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
