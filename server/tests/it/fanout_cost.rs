//! A measurement, not a test: fan-out cost through the Redis broker next to the in-memory one.
//! One process, one topic, `SUBSCRIBERS` WebSocket clients; `EVENTS` events published at
//! `RATE` per second with `Tidings::publish`; the time until every client has every event, and
//! the process CPU time spent. Run it with a redis-server (see `docs/BENCHMARKS.md`):
//!
//! ```text
//! TIDINGS_TEST_REDIS_URL=redis://127.0.0.1:6379 cargo test --release -p tidings-server \
//!     --test it -- --ignored --nocapture fanout_cost::
//! ```

use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::StreamExt;
use tidings_server::Config;

const SUBSCRIBERS: usize = 500;
const EVENTS: usize = 1000;
/// Publishes per second: the same pace for both brokers, so that writes batch alike.
const RATE: u64 = 200;

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 per second on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit(") ").next().unwrap().split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

async fn measure(config: Config, topic: &str, redis: bool) -> (Duration, f64) {
    let server = start_server_with(
        config
            .with_outbound_queue_capacity(EVENTS + 10)
            .with_max_connections_per_user(SUBSCRIBERS + 10),
    )
    .await;
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut ws = server.client().await;
        subscribe(&mut ws, topic).await;
        readers.push(tokio::spawn(async move {
            let mut n = 0;
            while n < EVENTS {
                match ws.next().await {
                    Some(Ok(m)) if m.is_text() => n += 1,
                    Some(Ok(_)) => {}
                    _ => panic!("connection lost after {n} events"),
                }
            }
        }));
    }
    if redis {
        assert!(
            eventually(|| async { server.tidings.broker_degraded().is_none() }).await,
            "redis unavailable"
        );
    }
    let cpu = cpu_seconds();
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    let mut publish_time = Duration::ZERO;
    for i in 0..EVENTS {
        tick.tick().await;
        let t = Instant::now();
        server
            .tidings
            .publish(event(topic, &i.to_string()))
            .await
            .expect("publish");
        publish_time += t.elapsed();
    }
    println!(
        "  mean publish call: {:.0} us",
        publish_time.as_secs_f64() * 1e6 / EVENTS as f64
    );
    for r in readers {
        r.await.unwrap();
    }
    (start.elapsed(), cpu_seconds() - cpu)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; needs TIDINGS_TEST_REDIS_URL"]
async fn fanout_cost_redis_vs_memory() {
    let url = std::env::var("TIDINGS_TEST_REDIS_URL").expect("TIDINGS_TEST_REDIS_URL");
    let deliveries = (SUBSCRIBERS * EVENTS) as f64;
    for (name, config, redis) in [
        ("memory", Config::new(SECRET), false),
        (
            "redis",
            Config::new(SECRET).with_redis_url(Some(url.clone())),
            true,
        ),
    ] {
        let topic = format!("fanout-{name}-{}", std::process::id());
        let (elapsed, cpu) = measure(config, &topic, redis).await;
        println!(
            "fanout {name}: {SUBSCRIBERS} subscribers x {EVENTS} events at {RATE}/s: \
             {:.2} s, {:.0} deliveries/s, {:.0} publishes/s, process CPU {:.2} s \
             ({:.2} us per delivery, clients included)",
            elapsed.as_secs_f64(),
            deliveries / elapsed.as_secs_f64(),
            EVENTS as f64 / elapsed.as_secs_f64(),
            cpu,
            cpu * 1e6 / deliveries
        );
    }
}
