//! `GET /metrics` over HTTP: the Prometheus text reflects real traffic.

use crate::common::*;
use tidings_server::Config;

/// The value of the sample line starting with `name ` (or `name{...} `).
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
        .parse()
        .expect("integer sample")
}

async fn scrape(server: &TestServer) -> String {
    let response = reqwest::get(server.http_url("/metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"));
    response.text().await.expect("body")
}

#[tokio::test]
async fn metrics_count_connections_traffic_and_closes() {
    let server = start_server_with(
        Config::new(SECRET)
            .with_message_rate(1)
            .with_message_burst(3),
    )
    .await;
    let mut ws = server.client().await;
    subscribe(&mut ws, "list:1").await;
    subscribe(&mut ws, "list:2").await;
    assert_eq!(server.publish_http(&event_json("list:1", "1")).await, 1);
    recv_text(&mut ws).await;
    // The burst is 3 messages: pings until one is rate limited (a token may come back
    // meanwhile on a slow machine, hence the loop).
    let mut pings = 0;
    loop {
        send(&mut ws, r#"{"action":"ping"}"#).await;
        pings += 1;
        if recv_text(&mut ws).await == r#"{"error":"Rate limit exceeded"}"# {
            break;
        }
        assert!(pings < 100, "never rate limited");
    }
    // A refused token is counted as a 4001 close.
    let mut refused = connect(&server.ws_url("bad")).await;
    assert_eq!(recv_close(&mut refused).await.0, 4001);

    let text = scrape(&server).await;
    assert!(text.contains("# TYPE tidings_fanout_seconds histogram"));
    assert!(sample(&text, "tidings_connections") >= 1);
    assert_eq!(sample(&text, "tidings_subscriptions"), 2);
    assert_eq!(sample(&text, "tidings_topics"), 2);
    assert_eq!(sample(&text, "tidings_messages_in_total"), 2 + pings);
    // 2 acks, 1 event, the pongs and the error reply.
    assert_eq!(sample(&text, "tidings_messages_out_total"), 3 + pings);
    assert_eq!(sample(&text, "tidings_publishes_total"), 1);
    assert_eq!(sample(&text, "tidings_deliveries_total"), 1);
    assert_eq!(sample(&text, "tidings_rate_limited_total"), 1);
    assert_eq!(sample(&text, "tidings_closes_total{code=\"4001\"}"), 1);
    assert_eq!(sample(&text, "tidings_fanout_seconds_count"), 1);
    assert_eq!(
        sample(&text, "tidings_fanout_seconds_bucket{le=\"+Inf\"}"),
        1
    );
    assert_eq!(sample(&text, "tidings_slow_consumer_drops_total"), 0);

    // A client that leaves is counted as a 1000 close once the server has seen it.
    ws.close(None).await.expect("close");
    assert!(
        eventually(|| async {
            sample(
                &scrape(&server).await,
                "tidings_closes_total{code=\"1000\"}",
            ) == 1
        })
        .await
    );
}

/// Issue 10 item 6: with a metrics token, a scrape without it (or with another) gets 401, and
/// one with `Authorization: Bearer <token>` gets the page.
#[tokio::test]
async fn a_metrics_token_protects_the_page() {
    let server =
        start_server_with(Config::new(SECRET).with_metrics_token(Some("scrape-s3cret".into())))
            .await;
    let client = reqwest::Client::new();
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer scrape-s3cre"),
        Some("scrape-s3cret"),
    ] {
        let mut request = client.get(server.http_url("/metrics"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert!(!response.text().await.unwrap().contains("tidings_"));
    }
    let response = client
        .get(server.http_url("/metrics"))
        .bearer_auth("scrape-s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("tidings_connections")
    );
}

/// Issue 10 item 6: with the metrics route off, the public router has no `/metrics`, and
/// `Tidings::metrics_router` serves it on another listener.
#[tokio::test]
async fn metrics_can_move_to_their_own_listener() {
    let server = start_server_with(Config::new(SECRET).with_metrics_route(false)).await;
    let response = reqwest::get(server.http_url("/metrics")).await.unwrap();
    assert_eq!(response.status(), 404);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tidings = server.tidings.clone();
    tokio::spawn(tidings_server::serve(
        listener,
        tidings.metrics_router(),
        tidings,
        std::future::pending(),
    ));
    let mut ws = server.client().await;
    subscribe(&mut ws, "list:1").await;
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert_eq!(sample(&text, "tidings_subscriptions"), 1);
    // Only the metrics live there.
    let response = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}
