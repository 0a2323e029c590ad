//! `GET /metrics` over HTTP: the Prometheus text reflects real traffic.

mod common;

use common::*;
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
