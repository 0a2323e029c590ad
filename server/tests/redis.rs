//! The Redis broker against a real `redis-server` (run by `./scripts/test-redis`, which starts
//! one on a free loopback port and sets `TIDINGS_TEST_REDIS_URL`; the tests fail without it):
//! two `tidings` processes on one Redis, a client failing over from one to the other with
//! `since`, churn with 200 clients, and Redis going away and coming back.
//!
//! Ignored by a plain `cargo test` (no Redis there); `./scripts/test-redis` runs them with
//! `--include-ignored`.

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::stream::{Seen, subscribe_since};
use common::*;
use serde_json::Value;
use tidings_server::Config;
use tidings_server::protocol::{ServerMessage, WSEvent};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_tidings");

fn redis_url() -> String {
    std::env::var("TIDINGS_TEST_REDIS_URL")
        .expect("TIDINGS_TEST_REDIS_URL is not set: run these tests with ./scripts/test-redis")
}

/// A prefix that keeps this run's topics apart from any other run on the same Redis.
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{nanos:x}")
}

/// A `tidings` process on `127.0.0.1:0` with `REDIS_URL`.
struct Node {
    child: Child,
    addr: String,
}

impl Node {
    async fn spawn(redis: &str) -> Node {
        let mut child = Command::new(BIN)
            .env("JWT_SECRET", SECRET)
            .env("BIND", "127.0.0.1:0")
            .env("REDIS_URL", redis)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tidings");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(TIMEOUT, lines.next_line())
            .await
            .expect("listening line in time")
            .unwrap()
            .expect("stdout");
        let addr = line
            .strip_prefix("tidings listening on http://")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            .to_owned();
        let node = Node { child, addr };
        assert!(
            eventually(|| async { node.health().await == "ok" }).await,
            "node never became healthy"
        );
        node
    }

    async fn health(&self) -> String {
        match reqwest::get(format!("http://{}/healthz", self.addr)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        }
    }

    async fn client(&self) -> Ws {
        self.client_as("42").await
    }

    /// A client of user `sub` (the server limits connections per user).
    async fn client_as(&self, sub: &str) -> Ws {
        connect(&format!("ws://{}/ws?token={}", self.addr, mint_token(sub))).await
    }

    async fn publish(&self, http: &reqwest::Client, event: &Value) -> (u16, Value) {
        let response = http
            .post(format!("http://{}/publish", self.addr))
            .bearer_auth(mint_publish_token())
            .json(event)
            .send()
            .await
            .expect("publish request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// A `redis-server` owned by one test, stopped by PID when dropped.
struct RedisServer {
    child: Option<std::process::Child>,
    port: u16,
}

impl RedisServer {
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    async fn start(port: u16) -> RedisServer {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (installed by ./scripts/setup)");
        let server = RedisServer {
            child: Some(child),
            port,
        };
        assert!(
            eventually(|| async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            })
            .await,
            "redis-server did not start"
        );
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn next_event(ws: &mut Ws) -> WSEvent {
    let text = recv_raw(ws).await;
    match ServerMessage::parse(&text) {
        Ok(ServerMessage::Event(e)) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test]
#[ignore = "needs a redis-server: run ./scripts/test-redis"]
async fn two_nodes_deliver_across_and_a_client_fails_over_with_since() {
    let redis = redis_url();
    let topic = unique("list");
    let http = reqwest::Client::new();
    let mut a = Node::spawn(&redis).await;
    let b = Node::spawn(&redis).await;

    // Published on B, received on A.
    let mut ws = a.client().await;
    let sub = subscribe_since(&mut ws, &topic, None).await;
    assert_eq!(sub.recovered, None);
    let mut seen = Seen::default();
    let (status, body) = b.publish(&http, &event_json(&topic, "1")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["delivered"], 0, "B has no local subscriber");
    seen.record(&next_event(&mut ws).await);
    let (_, body) = a.publish(&http, &event_json(&topic, "2")).await;
    assert_eq!(body["delivered"], 1, "A counts its own subscriber");
    seen.record(&next_event(&mut ws).await);

    // A dies; events published meanwhile are recovered on B, in order, exactly once.
    a.child.kill().await.unwrap();
    drop(ws);
    for i in 3..=22 {
        let (status, _) = b.publish(&http, &event_json(&topic, &i.to_string())).await;
        assert_eq!(status, 202);
    }
    let mut ws = b.client().await;
    let sub = subscribe_since(&mut ws, &topic, seen.since()).await;
    assert_eq!(sub.recovered, Some(true));
    for e in &sub.events {
        seen.record(e);
    }
    b.publish(&http, &event_json(&topic, "23")).await;
    seen.record(&next_event(&mut ws).await);
    let want: Vec<String> = (1..=23).map(|i| i.to_string()).collect();
    assert_eq!(seen.entities, want);
    // Nothing else (no duplicate) is queued: a ping is answered next.
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
}

/// 200 clients on two nodes drop their connection and come back (to either node) every few
/// seconds while events flow for 30 s; every client must end with every event of its topics,
/// exactly once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a redis-server: run ./scripts/test-redis"]
async fn churn_200_clients_lose_nothing() {
    const CLIENTS: usize = 200;
    const TOPICS: usize = 20;
    const DURATION: Duration = Duration::from_secs(30);
    const RATE_PER_SEC: u64 = 100;
    let redis = redis_url();
    let nodes = Arc::new([Node::spawn(&redis).await, Node::spawn(&redis).await]);
    let prefix = unique("churn");
    let topics: Arc<Vec<String>> = Arc::new((0..TOPICS).map(|t| format!("{prefix}:{t}")).collect());
    // Final seq of every topic, known once publishing stops.
    let published: Arc<std::sync::Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let live = Arc::new(AtomicU64::new(0));
    let replayed = Arc::new(AtomicU64::new(0));
    let reconnects = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    // Publishing starts once every client is subscribed (else its first events are not
    // "missed", just never asked for).
    let ready = Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));

    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let nodes = nodes.clone();
        let topics = topics.clone();
        let published = published.clone();
        let (live, replayed, reconnects) = (live.clone(), replayed.clone(), reconnects.clone());
        let mut done = done_rx.clone();
        let ready = ready.clone();
        clients.push(tokio::spawn(async move {
            let mine = [
                topics[c % TOPICS].clone(),
                topics[(c * 7 + 3) % TOPICS].clone(),
            ];
            let mine: Vec<String> = if mine[0] == mine[1] {
                vec![mine[0].clone()]
            } else {
                mine.to_vec()
            };
            let mut seen: HashMap<String, Seen> = HashMap::new();
            let mut round = 0u64;
            loop {
                let finishing = *done.borrow();
                let node = &nodes[(c + round as usize) % 2];
                let mut ws = node.client_as(&format!("user-{c}")).await;
                for t in &mine {
                    let s = seen.entry(t.clone()).or_default();
                    let sub = subscribe_since(&mut ws, t, s.since()).await;
                    if s.since().is_some() {
                        assert_eq!(
                            sub.recovered,
                            Some(true),
                            "client {c} could not recover {t}"
                        );
                    }
                    for e in &sub.events {
                        if e.topic.as_str() == t.as_str() && sub.recovered == Some(true) {
                            replayed.fetch_add(1, Ordering::Relaxed);
                        } else {
                            live.fetch_add(1, Ordering::Relaxed);
                        }
                        seen.get_mut(e.topic.as_str()).unwrap().record(e);
                    }
                }
                if round == 0 {
                    ready.wait().await;
                }
                if finishing {
                    // Read until every topic reached its final seq.
                    let finals = published.lock().unwrap().clone();
                    while mine
                        .iter()
                        .any(|t| seen[t].last_seq < finals[t].len() as u64)
                    {
                        let e = next_event(&mut ws).await;
                        live.fetch_add(1, Ordering::Relaxed);
                        seen.get_mut(e.topic.as_str()).unwrap().record(&e);
                    }
                    return mine
                        .into_iter()
                        .map(|t| (t.clone(), seen.remove(&t).unwrap()))
                        .collect::<Vec<_>>();
                }
                // Stay 1-4 s, then drop the connection without a close frame.
                let stay = Duration::from_millis(1000 + rand::random::<u64>() % 3000);
                let until = tokio::time::sleep(stay);
                tokio::pin!(until);
                loop {
                    tokio::select! {
                        () = &mut until => break,
                        _ = done.changed() => break,
                        e = next_event(&mut ws) => {
                            live.fetch_add(1, Ordering::Relaxed);
                            seen.get_mut(e.topic.as_str()).unwrap().record(&e);
                        }
                    }
                }
                drop(ws);
                reconnects.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 500)).await;
                round += 1;
            }
        }));
    }

    ready.wait().await;
    let stop_at = Instant::now() + DURATION;
    // The publisher: one event at a time, alternating nodes, entity id = running number.
    let http = reqwest::Client::new();
    let mut n = 0u64;
    let interval = Duration::from_micros(1_000_000 / RATE_PER_SEC);
    let mut tick = tokio::time::interval(interval);
    while Instant::now() < stop_at {
        tick.tick().await;
        n += 1;
        let topic = &topics[(n as usize * 13) % TOPICS];
        let (status, body) = nodes[n as usize % 2]
            .publish(&http, &event_json(topic, &n.to_string()))
            .await;
        assert_eq!(status, 202, "{body}");
        published
            .lock()
            .unwrap()
            .entry(topic.clone())
            .or_default()
            .push(n.to_string());
    }
    done_tx.send(true).unwrap();
    let published = published.lock().unwrap().clone();
    let mut expected = 0u64;
    let mut received = 0u64;
    for client in clients {
        let result = tokio::time::timeout(Duration::from_secs(120), client)
            .await
            .expect("client finished")
            .unwrap();
        for (topic, seen) in result {
            let want = published.get(&topic).cloned().unwrap_or_default();
            expected += want.len() as u64;
            received += seen.entities.len() as u64;
            assert_eq!(seen.entities, want, "events of {topic}");
        }
    }
    let (live, replayed) = (
        live.load(Ordering::Relaxed),
        replayed.load(Ordering::Relaxed),
    );
    println!(
        "churn: {CLIENTS} clients, 2 nodes, {n} events in {}s, {} reconnects; \
         delivered {received}/{expected} = {:.4} ({live} live, {replayed} replayed after a reconnect)",
        DURATION.as_secs(),
        reconnects.load(Ordering::Relaxed),
        received as f64 / expected as f64
    );
}

#[tokio::test]
#[ignore = "needs a redis-server: run ./scripts/test-redis"]
async fn redis_down_means_503_and_degraded_then_everything_resumes() {
    // Its own redis-server, which the test stops and starts again on the same port.
    let port = RedisServer::free_port();
    let mut redis = RedisServer::start(port).await;
    let server = start_server_with(Config::new(SECRET).with_redis_url(Some(redis.url()))).await;
    let http = reqwest::Client::new();
    let health = || async {
        reqwest::get(server.http_url("/healthz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert!(eventually(|| async { health().await == "ok" }).await);
    let mut ws = server.client().await;
    subscribe_since(&mut ws, "list:1", None).await;
    assert_eq!(server.publish_http(&event_json("list:1", "1")).await, 1);
    assert_eq!(next_event(&mut ws).await.data.entity_id, "1");

    redis.stop();
    let publish = || async {
        let r = http
            .post(server.http_url("/publish"))
            .bearer_auth(mint_publish_token())
            .json(&event_json("list:1", "2"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let (status, body) = publish().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "Service unavailable");
    assert!(
        body["details"].as_str().unwrap().contains("unavailable"),
        "{body}"
    );
    // The WebSocket stays up and answers.
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
    assert!(eventually(|| async { health().await.starts_with("degraded") }).await);
    let r = reqwest::get(server.http_url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);

    // Redis is back (empty: it kept nothing): publishing and delivery resume.
    let _redis = RedisServer::start(port).await;
    assert!(eventually(|| async { health().await == "ok" }).await);
    assert!(eventually(|| async { publish().await.0 == 202 }).await);
    let e = next_event(&mut ws).await;
    assert_eq!(e.data.entity_id, "2");
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
}
