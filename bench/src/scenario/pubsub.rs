//! `fanout` and `latency`: subscribers spread over topics, HTTP publishers, and the server's
//! CPU time per delivered message.
//!
//! Both open the subscribers first (not measured), start the publishers, let a warm-up pass,
//! then measure over a fixed window: deliveries counted by the receivers, CPU time charged to
//! the server process, and publish→deliver latency of every event received in the window.
//! After the window the publishers stop and the receivers drain what the server still owes
//! them (the sum of the `delivered` counts it answered); anything missing is an error.
//!
//! `fanout` publishes as fast as the server accepts, but keeps at most `--max-in-flight`
//! deliveries published-but-not-received, so that the receivers (on the same two cores)
//! never fall so far behind that the server drops them as slow consumers. `latency` publishes
//! at a fixed total rate, spread over the publishers; with `--stalled-readers N` it measures
//! twice, without and then with N subscribers per topic that never read, and reports how much
//! the stalled readers raise the healthy subscribers' p99.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tidings_protocol::Topic;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::{Common, secs};
use crate::procfs::Window;
use crate::publish::Publisher;
use crate::recorder::{Clock, Recorder};
use crate::report::{Goal, Metric, Run};
use crate::server::Server;
use crate::swarm::{self, SwarmSpec};

/// How long the receivers may take to catch up after the publishers stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Options of the `fanout` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutOpts {
    /// Subscribed connections.
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,
    /// Topics (subscribers are spread round robin; each event goes to subscribers/topics).
    #[arg(long, default_value_t = 10)]
    pub topics: usize,
    /// Concurrent HTTP publishers (one keep-alive connection each).
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Most deliveries published but not yet received before publishers wait.
    #[arg(long, default_value_t = 100_000)]
    pub max_in_flight: u64,
    /// Events per request: 1 publishes with `POST /publish`, more with one
    /// `POST /publish/batch` of that many events (reported: server CPU per published event).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Seconds of publishing before the measurement window.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
}

/// Options of the `latency` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct LatencyOpts {
    /// Subscribed connections.
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,
    /// Topics (subscribers are spread round robin).
    #[arg(long, default_value_t = 100)]
    pub topics: usize,
    /// Events published per second in total.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Concurrent HTTP publishers sharing the rate (each waits for its 202 before its next
    /// publish, so several keep the rate when one request is slow).
    #[arg(long, default_value_t = 8)]
    pub publishers: usize,
    /// Only every K-th subscriber reads and times events during the run; the others leave
    /// them in their socket buffers and drain them afterwards (every delivery is still
    /// checked). 1 = all read live. Keeps the load tool's CPU from inflating the latency.
    #[arg(long, default_value_t = 1)]
    pub sample_every: usize,
    /// Stalled readers per topic: extra subscribers that connect, subscribe and then never
    /// read a byte. With N > 0 the scenario runs twice against the same server, first without
    /// them (baseline), then with them, and reports the healthy subscribers' p50/p99 of both
    /// and the p99 ratio (target ≤ 2).
    #[arg(long, default_value_t = 0)]
    pub stalled_readers: usize,
    /// Seconds of publishing before the measurement window.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Cluster (issue 17's scale figures): the nodes the subscribers connect to, comma
    /// separated. Subscriber n (on topic n % topics) goes to node (n / topics) % count, so
    /// every topic has subscribers on every listed node; one node concentrates them. The
    /// server's `delivered` answer only counts the publishing node's subscribers, so here the
    /// drain check owes each event its topic's subscribers in this process instead.
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<SocketAddr>,
    /// Cluster: the nodes the publishers post to (publisher k to the k-th, round robin, as a
    /// load balancer would). Default: --nodes.
    #[arg(long, value_delimiter = ',')]
    pub publish_nodes: Vec<SocketAddr>,
    /// Number of the first topic (`bench:{first}` …): several tool processes on one cluster
    /// each take their own topics, so each knows every subscriber of what it publishes.
    #[arg(long, default_value_t = 0)]
    pub first_topic: usize,
    /// Create this file once every subscriber is connected and subscribed.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Wait until this file exists before publishing (lets a script start several tool
    /// processes' windows together).
    #[arg(long)]
    pub go_file: Option<PathBuf>,
}

/// The targets.
const GOAL_CPU_US_PER_DELIVERY: f64 = 1.5;
/// Server CPU per event published with `POST /publish` (keep-alive), and through
/// `POST /publish/batch` (issue 14).
const GOAL_CPU_US_PER_PUBLISH: f64 = 30.0;
const GOAL_CPU_US_PER_BATCHED_PUBLISH: f64 = 10.0;
const GOAL_P99_US: f64 = 5_000.0;
/// A slow reader may not raise a healthy subscriber's p99 by more than this factor.
const GOAL_STALLED_P99_RATIO: f64 = 2.0;

/// How the publishers pace themselves.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// As fast as possible, with at most this many deliveries outstanding.
    Saturate { max_in_flight: u64 },
    /// This many events per second in total.
    Rate(f64),
}

struct Plan {
    subscribers: usize,
    topics: usize,
    publishers: usize,
    warmup: f64,
    duration: f64,
    pace: Pace,
    sample_every: usize,
    /// Subscribers per topic that never read (not owed anything by the drain check).
    stalled_per_topic: u64,
    /// Events per publish request (1: `POST /publish`; more: `POST /publish/batch`).
    batch: usize,
    /// Cluster mode (see [`LatencyOpts::nodes`]); `None`: the one server.
    cluster: Option<Cluster>,
}

/// Where a cluster run connects and how it lines up with other tool processes.
#[derive(Clone)]
struct Cluster {
    nodes: Vec<SocketAddr>,
    publish_nodes: Vec<SocketAddr>,
    first_topic: usize,
    ready_file: Option<PathBuf>,
    go_file: Option<PathBuf>,
}

/// Runs `fanout` against `server`.
///
/// # Errors
/// Only when the server's `/proc` entry cannot be read or tokens cannot be signed.
pub async fn fanout(server: &Server, common: &Common, opts: &FanoutOpts) -> Result<Run> {
    let plan = Plan {
        subscribers: opts.subscribers,
        topics: opts.topics,
        publishers: opts.publishers,
        warmup: opts.warmup,
        duration: opts.duration,
        pace: Pace::Saturate {
            max_in_flight: opts.max_in_flight,
        },
        // The in-flight window counts received events: every subscriber must read live.
        sample_every: 1,
        stalled_per_topic: 0,
        batch: opts.batch.max(1),
        cluster: None,
    };
    run(server, common, &plan).await
}

/// Runs `latency` against `server`.
///
/// # Errors
/// As [`fanout`].
pub async fn latency(server: &Server, common: &Common, opts: &LatencyOpts) -> Result<Run> {
    let mut plan = Plan {
        subscribers: opts.subscribers,
        topics: opts.topics,
        publishers: opts.publishers,
        warmup: opts.warmup,
        duration: opts.duration,
        pace: Pace::Rate(opts.rate),
        sample_every: opts.sample_every.max(1),
        stalled_per_topic: 0,
        batch: 1,
        cluster: None,
    };
    if !opts.nodes.is_empty() {
        let publish_nodes = if opts.publish_nodes.is_empty() {
            opts.nodes.clone()
        } else {
            opts.publish_nodes.clone()
        };
        // Load is only ever aimed at this machine.
        if let Some(a) = opts
            .nodes
            .iter()
            .chain(&publish_nodes)
            .find(|a| !a.ip().is_loopback())
        {
            anyhow::bail!("--nodes and --publish-nodes must be loopback addresses, not {a}");
        }
        anyhow::ensure!(
            opts.stalled_readers == 0,
            "--stalled-readers is not supported with --nodes"
        );
        plan.cluster = Some(Cluster {
            nodes: opts.nodes.clone(),
            publish_nodes,
            first_topic: opts.first_topic,
            ready_file: opts.ready_file.clone(),
            go_file: opts.go_file.clone(),
        });
        return run(server, common, &plan).await;
    }
    if opts.stalled_readers == 0 {
        return run(server, common, &plan).await;
    }
    let baseline = run(server, common, &plan).await?;
    if !baseline.ok() {
        return Ok(baseline);
    }
    // Subscriber n is on topic n % topics: stalled_readers of them on every topic. They are
    // held, never polled, so their socket buffers and then their server-side queues fill up
    // (the server closes them 4003 once a queue overflows; nothing here reads that either).
    let spec = SwarmSpec {
        conns: opts.stalled_readers * plan.topics.max(1),
        topics: swarm::bench_topics(plan.topics)?,
        concurrency: common.connect_concurrency,
        sources: common.sources,
        subscribe: true,
    };
    let stalled = match swarm::open(server.addr, &common.minter, &spec).await {
        Ok(conns) => conns,
        Err(e) => {
            let mut failed = baseline;
            failed.errors += 1;
            failed.error_samples.push(format!("stalled readers: {e:#}"));
            return Ok(failed);
        }
    };
    // The server counts the stalled readers in its `delivered` answers; they owe no drain.
    plan.stalled_per_topic = opts.stalled_readers as u64;
    let mut with = run(server, common, &plan).await?;
    drop(stalled);
    let value = |run: &Run, name: &str| {
        run.metrics
            .iter()
            .find(|m| m.name == name)
            .map_or(0.0, |m| m.value)
    };
    let (p50_0, p99_0) = (
        value(&baseline, "latency p50"),
        value(&baseline, "latency p99"),
    );
    let p99_1 = value(&with, "latency p99");
    let others_0 = value(&baseline, "other processes' CPU");
    with.metrics.extend([
        Metric::new(
            "stalled readers (per topic)",
            "count",
            opts.stalled_readers as f64,
        ),
        Metric::new("without stalled readers: latency p50", "µs", p50_0),
        Metric::new("without stalled readers: latency p99", "µs", p99_0),
        Metric::new(
            "without stalled readers: other processes' CPU",
            "% of 1 core",
            others_0,
        ),
        Metric::new(
            "p99 with / without stalled readers",
            "ratio",
            p99_1 / p99_0.max(1.0),
        )
        .with_goal(Goal::AtMost(GOAL_STALLED_P99_RATIO)),
    ]);
    with.errors += baseline.errors;
    Ok(with)
}

/// Shared by the publishers: what the server said it delivered, and how many events went out.
#[derive(Default)]
struct Published {
    events: AtomicU64,
    deliveries: AtomicU64,
}

async fn run(server: &Server, common: &Common, plan: &Plan) -> Result<Run> {
    let mut run = Run {
        server: server.name.clone(),
        metrics: Vec::new(),
        errors: 0,
        error_samples: Vec::new(),
        work: 0,
    };
    let topics = match &plan.cluster {
        Some(c) => swarm::bench_topics_from(c.first_topic, plan.topics)?,
        None => swarm::bench_topics(plan.topics)?,
    };
    let spec = SwarmSpec {
        conns: plan.subscribers,
        topics: topics.clone(),
        concurrency: common.connect_concurrency,
        sources: common.sources,
        subscribe: true,
    };
    let nodes = plan
        .cluster
        .as_ref()
        .map_or_else(|| vec![server.addr], |c| c.nodes.clone());
    let conns = match swarm::open_on(&nodes, &common.minter, &spec).await {
        Ok(conns) => conns,
        Err(e) => {
            run.errors = 1;
            run.error_samples.push(format!("{e:#}"));
            return Ok(run);
        }
    };
    // In a cluster the publishing node's `delivered` counts only its own subscribers: owe
    // each event what this process subscribed to its topic (subscriber n is on topic n % T).
    let audience = plan.cluster.as_ref().map(|_| {
        let t = topics.len();
        Arc::new(
            (0..t)
                .map(|i| (plan.subscribers / t + usize::from(i < plan.subscribers % t)) as u64)
                .collect::<Vec<u64>>(),
        )
    });
    if let Some(c) = &plan.cluster {
        if let Some(ready) = &c.ready_file {
            std::fs::write(ready, b"ready\n")
                .with_context(|| format!("writing {}", ready.display()))?;
        }
        if let Some(go) = &c.go_file {
            eprintln!("  connected; waiting for {}", go.display());
            while !go.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    let recorder = Arc::new(Recorder::new(Clock::start()));
    let stop_receivers = CancellationToken::new();
    let unpark = CancellationToken::new();
    let mut receivers = JoinSet::new();
    for (i, ws) in conns.into_iter().enumerate() {
        // Subscriber i is on topic i % topics: sample by i / topics so that every topic
        // keeps 1 in `sample_every` of its subscribers live.
        let round = i / plan.topics.max(1);
        let parked = (round % plan.sample_every != 0).then(|| unpark.clone());
        receivers.spawn(swarm::receive(
            ws,
            recorder.clone(),
            i,
            parked,
            stop_receivers.clone(),
        ));
    }

    let published = Arc::new(Published::default());
    let stop_publishers = CancellationToken::new();
    let mut loops = Vec::new();
    let token = common.minter.publisher()?;
    let count = plan.publishers.max(1);
    for id in 0..count {
        let addr = plan
            .cluster
            .as_ref()
            .map_or(server.addr, |c| c.publish_nodes[id % c.publish_nodes.len()]);
        let publisher = Publisher::new(addr, &token)?;
        let shared = PublishShared {
            count,
            audience: audience.clone(),
            topics: topics.clone(),
            pace: plan.pace,
            stalled_per_topic: plan.stalled_per_topic,
            batch: plan.batch,
            recorder: recorder.clone(),
            published: published.clone(),
            stop: stop_publishers.clone(),
        };
        loops.push(publish_loop(publisher, id, shared));
    }
    // The publishers get their own thread and runtime: on the receivers' runtime a publisher
    // would wait behind every receiver its own event just woke, and the tool would time
    // itself instead of the server.
    let thread_recorder = recorder.clone();
    let publishers = std::thread::Builder::new()
        .name("publishers".to_owned())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    rt.block_on(futures_util::future::join_all(loops));
                }
                Err(e) => thread_recorder.error(format!("publisher runtime: {e}")),
            }
        })
        .context("starting the publisher thread")?;

    tokio::time::sleep(secs(plan.warmup)).await;
    recorder.set_recording(true);
    let window = Window::start(&server.stats)?;
    let (recv0, pub0, owed0) = (
        recorder.received(),
        published.events.load(Ordering::Relaxed),
        published.deliveries.load(Ordering::Relaxed),
    );
    tokio::time::sleep(secs(plan.duration)).await;
    let (recv1, pub1, owed1) = (
        recorder.received(),
        published.events.load(Ordering::Relaxed),
        published.deliveries.load(Ordering::Relaxed),
    );
    let cpu = window.end()?;
    recorder.set_recording(false);
    stop_publishers.cancel();
    if !matches!(
        tokio::task::spawn_blocking(move || publishers.join()).await,
        Ok(Ok(()))
    ) {
        recorder.error("the publisher thread panicked".to_owned());
    }
    unpark.cancel();

    // Drain: the server owes every delivery it counted in its 202 answers.
    let owed = published.deliveries.load(Ordering::Relaxed);
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    while recorder.received() < owed && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let missing = owed.saturating_sub(recorder.received());
    if missing > 0 {
        recorder.error(format!(
            "{missing} of {owed} deliveries the server counted never arrived"
        ));
    }
    stop_receivers.cancel();
    while receivers.join_next().await.is_some() {}

    let secs = cpu.secs;
    // With every subscriber reading live, count what arrived; with parked subscribers, count
    // what the server accepted for delivery in the window (the drain above checks that all
    // of it arrived).
    let deliveries = if plan.sample_every == 1 {
        recv1 - recv0
    } else {
        owed1 - owed0
    };
    let lat = recorder.latencies();
    let rtt = recorder.publish_latencies();
    let (errors, samples) = recorder.errors();
    run.errors = errors;
    run.error_samples = samples;
    run.work = deliveries;
    let per_delivery = cpu.server_us / (deliveries.max(1) as f64);
    let mut cpu_metric = Metric::new("server CPU per delivery", "µs", per_delivery);
    let mut p99 = Metric::new("latency p99", "µs", lat.p99 as f64);
    match plan.pace {
        Pace::Saturate { .. } => {
            cpu_metric = cpu_metric.with_goal(Goal::AtMost(GOAL_CPU_US_PER_DELIVERY))
        }
        Pace::Rate(_) => p99 = p99.with_goal(Goal::AtMost(GOAL_P99_US)),
    }
    let events = pub1 - pub0;
    let per_event_goal = if plan.batch > 1 {
        GOAL_CPU_US_PER_BATCHED_PUBLISH
    } else {
        GOAL_CPU_US_PER_PUBLISH
    };
    let per_event = Metric::new(
        "server CPU per published event",
        "µs",
        cpu.server_us / (events.max(1) as f64),
    );
    let per_event = match plan.pace {
        Pace::Saturate { .. } => per_event.with_goal(Goal::AtMost(per_event_goal)),
        Pace::Rate(_) => per_event,
    };
    run.metrics = vec![
        Metric::new("events per request", "count", plan.batch as f64),
        Metric::new("events published", "events/s", events as f64 / secs),
        per_event,
        Metric::new("messages delivered", "msg/s", deliveries as f64 / secs),
        cpu_metric,
        Metric::new(
            "  of which kernel (sys)",
            "µs",
            cpu.server_sys_us / (deliveries.max(1) as f64),
        ),
        Metric::new(
            "TCP segments per delivery (both ways)",
            "count",
            cpu.tcp_segments as f64 / (deliveries.max(1) as f64),
        ),
        Metric::new("server CPU load", "% of 1 core", cpu.server_us / secs / 1e4),
        Metric::new(
            "load tool CPU load",
            "% of 1 core",
            cpu.tool_us / secs / 1e4,
        ),
        Metric::new(
            "other processes' CPU",
            "% of 1 core",
            cpu.others_us / secs / 1e4,
        ),
        Metric::new("latency p50", "µs", lat.p50 as f64),
        p99,
        Metric::new("latency max", "µs", lat.max as f64),
        Metric::new("publish request (until 202) p50", "µs", rtt.p50 as f64),
        Metric::new("publish request (until 202) p99", "µs", rtt.p99 as f64),
    ];
    Ok(run)
}

/// What every publisher task of a run shares.
struct PublishShared {
    /// Number of publisher tasks.
    count: usize,
    /// Cluster mode: subscribers per topic (index as `topics`), owed instead of `delivered`.
    audience: Option<Arc<Vec<u64>>>,
    topics: Vec<Topic>,
    pace: Pace,
    /// Subtracted from every `delivered` answer (see [`Plan::stalled_per_topic`]).
    stalled_per_topic: u64,
    /// Events per request.
    batch: usize,
    recorder: Arc<Recorder>,
    published: Arc<Published>,
    stop: CancellationToken,
}

/// One publisher task: topics `id`, `id + count`, … in turn, paced by `pace`.
async fn publish_loop(publisher: Publisher, id: usize, shared: PublishShared) {
    let PublishShared {
        count,
        audience,
        topics,
        pace,
        stalled_per_topic,
        batch,
        recorder,
        published,
        stop,
    } = shared;
    let mut ticker = match pace {
        Pace::Rate(rate) => {
            let period = Duration::from_secs_f64(count as f64 / rate.max(0.001));
            // Publisher `id` starts `id / count` of a period late, so that together they
            // publish evenly spaced events; in phase they would send `count` events at once
            // and time the burst instead of the server.
            let offset = period.mul_f64(id as f64 / count as f64);
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
            // Catch up after a slow publish instead of silently lowering the rate.
            t.set_missed_tick_behavior(MissedTickBehavior::Burst);
            Some(t)
        }
        Pace::Saturate { .. } => None,
    };
    let mut next = id;
    loop {
        if stop.is_cancelled() {
            return;
        }
        match (pace, ticker.as_mut()) {
            (Pace::Rate(_), Some(t)) => {
                tokio::select! {
                    // Stop promptly even between ticks.
                    _ = stop.cancelled() => return,
                    _ = t.tick() => {}
                }
            }
            (Pace::Saturate { max_in_flight }, _) => {
                let owed = published.deliveries.load(Ordering::Relaxed);
                if owed.saturating_sub(recorder.received()) > max_in_flight {
                    tokio::time::sleep(Duration::from_micros(500)).await;
                    continue;
                }
            }
            _ => {}
        }
        let index = next % topics.len();
        let topic = &topics[index];
        next += count;
        let sent = Instant::now();
        let t_ns = recorder.clock().now_ns();
        let result = if batch > 1 {
            publisher.publish_batch(topic, t_ns, batch).await
        } else {
            publisher.publish(topic, t_ns).await
        };
        match result {
            Ok(delivered) => {
                recorder.on_publish(sent.elapsed());
                // A stalled reader the server already closed (4003) is no longer counted:
                // then less is owed than arrives, which the drain check (arrived ≥ owed) accepts.
                let owed = match &audience {
                    Some(a) => a[index] * batch as u64,
                    None => delivered.saturating_sub(stalled_per_topic * batch as u64),
                };
                published.deliveries.fetch_add(owed, Ordering::Relaxed);
                published.events.fetch_add(batch as u64, Ordering::Relaxed);
            }
            Err(e) => {
                recorder.error(format!("publisher {id}: {e:#}"));
                // A publisher that fails once stops: the run is already marked failed and a
                // retry loop would only flood the report.
                return;
            }
        }
    }
}
