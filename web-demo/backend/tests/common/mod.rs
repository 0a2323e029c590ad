//! Test helpers: a demo backend on a real port, a logged-in REST client and a WebSocket
//! subscriber that reads events with generous timeouts.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tidings_demo::DemoConfig;
use tidings_protocol::{ServerMessage, WSEvent, WSReply};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a test waits to be reasonably sure something does NOT happen.
pub const QUIET: Duration = Duration::from_millis(500);
/// Secret shared by the server under test and the token checks.
pub const SECRET: &str = "test-secret";

/// A running backend.
pub struct Demo {
    pub base: String,
    pub ws: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tidings_demo::DemoError>>,
}

impl Demo {
    /// Starts a backend on `127.0.0.1:0` over a fresh in-memory database.
    pub async fn start() -> Self {
        Self::start_with(DemoConfig {
            jwt_secret: Some(SECRET.into()),
            ..DemoConfig::new(":memory:")
        })
        .await
    }

    /// Starts a backend with `config`.
    pub async fn start_with(config: DemoConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tidings_demo::run(listener, config, async {
            let _ = stopped.await;
        }));
        let demo = Self {
            base: format!("http://{addr}"),
            ws: format!("ws://{addr}/ws"),
            stop: Some(stop),
            task,
        };
        // Ready when the API answers.
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(r) = http.get(format!("{}/api/members", demo.base)).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "demo did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        demo
    }

    /// Stops the backend and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("demo did not stop");
        result.unwrap().unwrap();
    }

    /// Logs in as `member_id` and returns an API client with its token.
    pub async fn login(&self, member_id: i64) -> Api {
        let http = reqwest::Client::new();
        let res = http
            .post(format!("{}/api/login", self.base))
            .json(&json!({ "member_id": member_id }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["member"]["id"], member_id);
        Api {
            base: self.base.clone(),
            token: body["token"].as_str().unwrap().to_owned(),
            http,
        }
    }

    /// A WebSocket subscribed to `topics` (each confirmed).
    pub async fn subscribe(&self, token: &str, topics: &[&str]) -> Subscriber {
        self.subscribe_url(format!("{}?token={token}", self.ws), topics)
            .await
    }

    /// A WebSocket that names itself `cid` (the client's connection id), subscribed to
    /// `topics`.
    pub async fn subscribe_as(&self, token: &str, cid: &str, topics: &[&str]) -> Subscriber {
        self.subscribe_url(format!("{}?token={token}&cid={cid}", self.ws), topics)
            .await
    }

    async fn subscribe_url(&self, url: String, topics: &[&str]) -> Subscriber {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        let mut sub = Subscriber { ws };
        for topic in topics {
            sub.send(json!({"action": "subscribe", "topic": topic}))
                .await;
            match sub.next_message().await {
                ServerMessage::Reply(WSReply::Subscribed { topic: t, .. }) => {
                    assert_eq!(t.as_str(), *topic)
                }
                other => panic!("expected subscribed, got {other:?}"),
            }
        }
        sub
    }
}

/// A REST client acting as one member.
pub struct Api {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    /// Sends `method path` with the bearer token and an optional JSON body; returns the
    /// status and the JSON answer.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.raw(method, path, body.map(|b| b.to_string()), true)
            .await
    }

    /// Like [`Api::call`], from the tab whose realtime connection is `cid` (the
    /// `tidings-connection-id` header).
    pub async fn call_from(
        &self,
        cid: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.send(method, path, body.map(|b| b.to_string()), true, Some(cid))
            .await
    }

    /// Like [`Api::call`] with a raw body (sent as JSON) and an optional token.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        with_token: bool,
    ) -> (u16, Value) {
        self.send(method, path, body, with_token, None).await
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        with_token: bool,
        cid: Option<&str>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if with_token {
            req = req.bearer_auth(&self.token);
        }
        if let Some(cid) = cid {
            req = req.header(tidings_protocol::CONNECTION_ID_HEADER, cid);
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("answer to {path} is not JSON: {text:?}"));
        (status, json)
    }
}

/// A WebSocket client reading server messages.
pub struct Subscriber {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Subscriber {
    pub async fn send(&mut self, value: Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .unwrap();
    }

    /// The next server message (pings skipped); panics after [`WAIT`].
    pub async fn next_message(&mut self) -> ServerMessage {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no message in time")
                .expect("socket ended")
                .expect("socket error");
            match msg {
                Message::Text(text) => return ServerMessage::parse(&text).unwrap(),
                Message::Close(frame) => panic!("closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next event; panics on anything else or after [`WAIT`].
    pub async fn next_event(&mut self) -> WSEvent {
        match self.next_message().await {
            ServerMessage::Event(e) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// Asserts that nothing arrives for [`QUIET`].
    pub async fn assert_quiet(&mut self) {
        if let Ok(Some(msg)) = tokio::time::timeout(QUIET, self.ws.next()).await {
            panic!("expected no message, got {msg:?}");
        }
    }

    /// Waits for the close frame and returns its code.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_))) | Ok(None) => return None,
                Err(_) => panic!("no close in time"),
            }
        }
    }
}

/// The event's payload as JSON.
pub fn payload(event: &WSEvent) -> Value {
    event.data.payload.to_value().unwrap()
}

/// A database file path unique to this test run.
pub fn temp_db(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!(
        "tidings-demo-{name}-{}-{nanos}.sqlite",
        std::process::id()
    ))
}
