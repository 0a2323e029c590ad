//! Server metrics and `GET /metrics` in the Prometheus text format.
//!
//! The counters are plain atomics owned by the [`Hub`](crate::Hub) inside the
//! [`Tidings`](crate::Tidings) handle (no globals, no metrics crate): bumping one is a relaxed
//! atomic add on paths that already do far more. Gauges (connections, subscriptions, topics)
//! are read when scraped. The fan-out histogram records the time each
//! [`Hub::publish`](crate::Hub::publish) spends serializing and queuing one event. The page
//! carries counts only: no token, user id or topic name.
//!
//! A scrape costs the same with ten topics or a million: [`render`] takes the gauges as plain
//! numbers ([`Gauges`]), read from counters the hub and the connection tracker maintain, and
//! never sees a topic or a connection. With
//! [`Config::with_metrics_token`](crate::Config::with_metrics_token) a scrape needs
//! `Authorization: Bearer <token>` (401 otherwise); with
//! [`Config::with_metrics_route`](crate::Config::with_metrics_route) off, the page is served
//! only where the app mounts [`Tidings::metrics_router`](crate::Tidings::metrics_router).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tidings_protocol::CloseCode;

use crate::Tidings;
use crate::config::Secret;

/// Upper bounds of the fan-out latency buckets, in seconds.
const FANOUT_BUCKETS: [f64; 12] = [
    0.000_001, 0.000_005, 0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 1.0,
];

/// Every counter the server keeps (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    publishes: AtomicU64,
    deliveries: AtomicU64,
    rate_limited: AtomicU64,
    closes: [AtomicU64; CloseCode::ALL.len()],
    fanout_buckets: [AtomicU64; FANOUT_BUCKETS.len()],
    fanout_count: AtomicU64,
    fanout_nanos: AtomicU64,
    /// `/ws` handshakes answered 429 by the per-address limits (issue 14).
    handshakes_refused: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// One inbound data frame (text or binary) from a client.
    pub(crate) fn message_in(&self) {
        add(&self.messages_in, 1);
    }

    /// `n` frames written to a client's socket.
    pub(crate) fn messages_out(&self, n: usize) {
        add(&self.messages_out, n as u64);
    }

    /// One `/ws` handshake refused with 429 by a per-address limit.
    pub(crate) fn handshake_refused(&self) {
        add(&self.handshakes_refused, 1);
    }

    /// One message dropped by the inbound rate limit.
    pub(crate) fn rate_limited(&self) {
        add(&self.rate_limited, 1);
    }

    /// A connection closed with `code`.
    pub(crate) fn closed(&self, code: CloseCode) {
        if let Some(i) = CloseCode::ALL.iter().position(|c| *c == code) {
            add(&self.closes[i], 1);
        }
    }

    /// One event published, queued for `delivered` connections in `took`.
    pub(crate) fn published(&self, delivered: usize, took: Duration) {
        add(&self.publishes, 1);
        add(&self.deliveries, delivered as u64);
        let secs = took.as_secs_f64();
        if let Some(i) = FANOUT_BUCKETS.iter().position(|b| secs <= *b) {
            add(&self.fanout_buckets[i], 1);
        }
        add(&self.fanout_count, 1);
        add(
            &self.fanout_nanos,
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
        );
    }

    pub(crate) fn closes_with(&self, code: CloseCode) -> u64 {
        CloseCode::ALL
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.closes[i].load(Ordering::Relaxed))
    }
}

/// The gauges of one scrape, each read from a maintained counter (O(1)), never by walking
/// topics or connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gauges {
    pub(crate) connections: u64,
    pub(crate) subscriptions: u64,
    pub(crate) topics: u64,
    /// Bytes charged to the in-memory history (see `Config::with_history_max_total_bytes`).
    pub(crate) history_bytes: u64,
    /// Topics holding in-memory history.
    pub(crate) history_topics: u64,
    /// Present (topic, user) entries this node holds (issue 15).
    pub(crate) presence_entries: u64,
    /// (connection, topic) pairs watching presence on this node.
    pub(crate) presence_watchers: u64,
}

impl Gauges {
    /// Reads the gauges of `tidings`.
    pub(crate) fn read(tidings: &Tidings) -> Self {
        let hub = tidings.hub();
        Self {
            // The task tracker's count: one atomic load.
            connections: tidings.connection_count() as u64,
            subscriptions: hub.subscription_count() as u64,
            topics: hub.topic_count() as u64,
            history_bytes: hub.history_bytes() as u64,
            history_topics: hub.history_topic_count() as u64,
            presence_entries: tidings.presence().entry_count() as u64,
            presence_watchers: tidings.presence().watcher_count() as u64,
        }
    }
}

/// Renders every metric in the Prometheus text format (version 0.0.4), from the gauges and
/// the counters alone.
pub(crate) fn render(gauges: Gauges, m: &Metrics) -> String {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "tidings_connections",
        "gauge",
        "Open WebSocket connections.",
        gauges.connections,
    );
    metric(
        "tidings_subscriptions",
        "gauge",
        "Subscriptions (connection, topic pairs).",
        gauges.subscriptions,
    );
    metric(
        "tidings_topics",
        "gauge",
        "Topics the hub tracks (with subscribers or recent history).",
        gauges.topics,
    );
    metric(
        "tidings_history_bytes",
        "gauge",
        "Bytes charged to the in-memory history (event text + bookkeeping).",
        gauges.history_bytes,
    );
    metric(
        "tidings_history_topics",
        "gauge",
        "Topics holding in-memory history.",
        gauges.history_topics,
    );
    metric(
        "tidings_presence_entries",
        "gauge",
        "Present (topic, user) entries this node holds (one per user however many connections).",
        gauges.presence_entries,
    );
    metric(
        "tidings_presence_watchers",
        "gauge",
        "Connections watching a topic's presence on this node (connection, topic pairs).",
        gauges.presence_watchers,
    );
    metric(
        "tidings_messages_in_total",
        "counter",
        "Data frames received from clients.",
        load(&m.messages_in),
    );
    metric(
        "tidings_messages_out_total",
        "counter",
        "Frames (events and replies) written to clients.",
        load(&m.messages_out),
    );
    metric(
        "tidings_publishes_total",
        "counter",
        "Events published (HTTP or in process).",
        load(&m.publishes),
    );
    metric(
        "tidings_deliveries_total",
        "counter",
        "Event copies queued for subscribers.",
        load(&m.deliveries),
    );
    metric(
        "tidings_rate_limited_total",
        "counter",
        "Inbound messages dropped by the rate limit.",
        load(&m.rate_limited),
    );
    metric(
        "tidings_handshakes_refused_total",
        "counter",
        "WebSocket handshakes answered 429 by the per-address limits.",
        load(&m.handshakes_refused),
    );
    metric(
        "tidings_slow_consumer_drops_total",
        "counter",
        "Connections closed because their outbound queue overflowed (4003).",
        m.closes_with(CloseCode::SlowConsumer),
    );
    let _ = writeln!(
        out,
        "# HELP tidings_closes_total WebSocket connections closed, by close code.\n\
         # TYPE tidings_closes_total counter"
    );
    for (code, count) in CloseCode::ALL.iter().zip(&m.closes) {
        let _ = writeln!(
            out,
            "tidings_closes_total{{code=\"{}\"}} {}",
            code.code(),
            load(count)
        );
    }
    let _ = writeln!(
        out,
        "# HELP tidings_fanout_seconds Time one publish spends serializing and queuing an event.\n\
         # TYPE tidings_fanout_seconds histogram"
    );
    let mut cumulative = 0;
    for (bound, count) in FANOUT_BUCKETS.iter().zip(&m.fanout_buckets) {
        cumulative += load(count);
        let _ = writeln!(
            out,
            "tidings_fanout_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    let count = load(&m.fanout_count);
    let _ = writeln!(out, "tidings_fanout_seconds_bucket{{le=\"+Inf\"}} {count}");
    let sum = load(&m.fanout_nanos) as f64 / 1e9;
    let _ = writeln!(out, "tidings_fanout_seconds_sum {sum}");
    let _ = writeln!(out, "tidings_fanout_seconds_count {count}");
    out
}

/// Handles `GET /metrics`.
pub(crate) async fn serve(State(tidings): State<Tidings>, headers: HeaderMap) -> Response {
    if let Some(expected) = tidings.config().metrics_token.as_ref().map(Secret::expose) {
        if !bearer_matches(&headers, expected) {
            let mut response = (StatusCode::UNAUTHORIZED, "metrics token required").into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(Gauges::read(&tidings), tidings.hub().metrics()),
    )
        .into_response()
}

/// Whether the request carries `Authorization: Bearer <expected>`, compared in time that does
/// not depend on where the first difference is.
fn bearer_matches(headers: &HeaderMap, expected: &str) -> bool {
    let Some(token) = crate::publish::bearer_token(headers) else {
        return false;
    };
    let (a, b) = (token.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.published(2, Duration::from_micros(3));
        m.published(0, Duration::from_secs(5));
        m.closed(CloseCode::SlowConsumer);
        let gauges = Gauges {
            connections: 0,
            subscriptions: 0,
            topics: 0,
            history_bytes: 0,
            history_topics: 0,
            presence_entries: 0,
            presence_watchers: 0,
        };
        let text = render(gauges, &m);
        assert!(text.contains("tidings_fanout_seconds_bucket{le=\"0.000005\"} 1\n"));
        assert!(text.contains("tidings_fanout_seconds_bucket{le=\"1\"} 1\n"));
        assert!(text.contains("tidings_fanout_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("tidings_deliveries_total 2\n"));
        assert!(text.contains("tidings_slow_consumer_drops_total 1\n"));
        assert!(text.contains("tidings_closes_total{code=\"4003\"} 1\n"));
    }

    /// A scrape's cost does not depend on the number of topics or connections: `render` gets
    /// three numbers and the counters, and has no way to walk a topic or a connection. (Its
    /// inputs come from `Gauges::read`, which reads maintained counts only.)
    #[test]
    fn render_takes_numbers_not_topics() {
        let gauges = Gauges {
            connections: 120_000,
            subscriptions: 2_000_000,
            topics: 950_000,
            history_bytes: 1 << 28,
            history_topics: 100_000,
            presence_entries: 5_000,
            presence_watchers: 9_000,
        };
        let text = render(gauges, &Metrics::default());
        assert!(text.contains("\ntidings_topics 950000\n"));
        assert!(text.contains("\ntidings_subscriptions 2000000\n"));
        assert!(text.contains("\ntidings_connections 120000\n"));
        // The page has the same size whatever the counts: nothing is listed per topic.
        let small = render(
            Gauges {
                connections: 1,
                subscriptions: 1,
                topics: 1,
                history_bytes: 1,
                history_topics: 1,
                presence_entries: 1,
                presence_watchers: 1,
            },
            &Metrics::default(),
        );
        assert_eq!(text.lines().count(), small.lines().count());
    }

    #[test]
    fn metrics_token_comparison() {
        let mut headers = HeaderMap::new();
        assert!(!bearer_matches(&headers, "t0ken"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer t0ken"),
        );
        assert!(bearer_matches(&headers, "t0ken"));
        assert!(!bearer_matches(&headers, "t0ke"));
        assert!(!bearer_matches(&headers, "t0kem"));
    }
}
