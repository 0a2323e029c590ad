//! `presence`: what presence (issue 15) costs the server.
//!
//! Two measurements, one server:
//!
//! 1. **Memory.** N connections, each a distinct user, subscribe with `"presence":"join"` to
//!    one of T topics (a snapshot per join, a `presence_join` to every watcher of the topic
//!    so far) and stay; after a settle period the server's RSS growth / N is the cost of one
//!    present connection, its connection and subscription included (compare with `idle`, the
//!    same without presence, for presence's own share). They are closed before step 2.
//! 2. **CPU per join/leave.** W workers, each on its own topic watched by K connections
//!    (`"presence":"watch"`), loop subscribe → ack → unsubscribe → ack: first plainly, then
//!    with `"presence":"join"` (the ack, the snapshot, then the unsubscribe: one join and one
//!    leave, each sent to the K watchers). Server CPU (user + kernel) over each window divided
//!    by the cycles gives µs per cycle; the difference is what one join plus one leave adds.
//!
//! A peer without presence (the Node `ws` server) gets the plain parts only: memory per
//! subscribed connection and CPU per subscribe/unsubscribe, the per-connection cost presence
//! is added to.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt, stream};
use tidings_protocol::Topic;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{Common, secs};
use crate::conn::{self, STEP_TIMEOUT, Ws};
use crate::procfs::Window;
use crate::report::{Metric, Run};
use crate::server::{Kind, Server};
use crate::swarm;

/// Options of the `presence` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct PresenceOpts {
    /// Present connections (distinct users) for the memory measurement.
    #[arg(long, default_value_t = 5_000)]
    pub conns: usize,
    /// Topics they join (round robin).
    #[arg(long, default_value_t = 100)]
    pub topics: usize,
    /// Churn workers, each joining and leaving its own topic.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// Watchers of each churn topic (each join and leave is sent to them).
    #[arg(long, default_value_t = 10)]
    pub watchers: usize,
    /// Connections (one user each) a churn worker takes turns with: one connection may send
    /// 100 messages per second after a burst of 1,000 (the default rate limit), so a worker
    /// faster than that needs several.
    #[arg(long, default_value_t = 32)]
    pub pool: usize,
    /// Seconds before each RSS reading, and of churn before each CPU window.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
    /// Seconds of each CPU window (plain, then presence).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
}

/// Runs `presence` against `server`.
///
/// # Errors
/// When the server's `/proc` entry cannot be read or tokens cannot be signed; connection
/// failures are reported in the [`Run`].
pub async fn run(server: &Server, common: &Common, opts: &PresenceOpts) -> Result<Run> {
    let presence = server.name != Kind::Node.name();
    let mut run = Run {
        server: server.name.clone(),
        metrics: Vec::new(),
        errors: 0,
        error_samples: Vec::new(),
        work: 0,
    };
    let record = |run: &mut Run, e: anyhow::Error| {
        run.errors += 1;
        if run.error_samples.len() < 5 {
            run.error_samples.push(format!("{e:#}"));
        }
    };

    // 1. Memory per present connection.
    tokio::time::sleep(secs(opts.settle)).await;
    let rss_before = server.stats.rss_kib()?;
    let cpu_before = server.stats.cpu()?;
    let topics = swarm::bench_topics(opts.topics)?;
    let mode = presence.then_some("join");
    let started = Instant::now();
    let opened: Vec<Result<Ws>> = stream::iter(0..opts.conns)
        .map(|n| {
            let topic = &topics[n % topics.len()];
            async move {
                let token = common.minter.subscriber(n)?;
                let mut ws = conn::connect(server.addr, &token, common.sources.for_conn(n)?)
                    .await
                    .with_context(|| format!("connection {n}"))?;
                subscribe(&mut ws, topic, mode).await?;
                Ok(ws)
            }
        })
        .buffer_unordered(common.connect_concurrency.max(1))
        .collect()
        .await;
    let open_secs = started.elapsed().as_secs_f64();
    let cpu_after_open = server.stats.cpu()?;
    let stop = CancellationToken::new();
    let mut holders = JoinSet::new();
    let mut present = 0usize;
    for ws in opened {
        match ws {
            Ok(ws) => {
                present += 1;
                holders.spawn(swarm::hold_idle(ws, stop.clone()));
            }
            Err(e) => record(&mut run, e),
        }
    }
    tokio::time::sleep(secs(opts.settle)).await;
    let rss_after = server.stats.rss_kib()?;
    stop.cancel();
    while holders.join_next().await.is_some() {}
    let n = present.max(1) as f64;
    run.metrics.push(Metric::new(
        if presence {
            "present connections"
        } else {
            "subscribed connections (no presence)"
        },
        "count",
        present as f64,
    ));
    run.metrics.push(Metric::new(
        "server RSS per connection",
        "KiB",
        rss_after.saturating_sub(rss_before) as f64 / n,
    ));
    run.metrics.push(Metric::new(
        "server CPU per connect+subscribe(+join)",
        "µs",
        server.stats.cpu_micros(cpu_before, cpu_after_open) / n,
    ));
    run.metrics.push(Metric::new(
        "connect+subscribe(+join) rate",
        "conn/s",
        n / open_secs.max(1e-9),
    ));

    // 2. CPU per join/leave, against plain subscribe/unsubscribe.
    let churn_topics: Vec<Topic> = (0..opts.workers.max(1))
        .map(|i| Topic::new(format!("presence:{i}")).context("topic name"))
        .collect::<Result<_>>()?;
    let stop = CancellationToken::new();
    let mut watchers = JoinSet::new();
    for (t, topic) in churn_topics.iter().enumerate() {
        for w in 0..opts.watchers {
            let user = opts.conns + t * opts.watchers + w;
            let token = common.minter.subscriber(user)?;
            let mut ws = conn::connect(server.addr, &token, None).await?;
            subscribe(&mut ws, topic, presence.then_some("watch")).await?;
            watchers.spawn(swarm::hold_idle(ws, stop.clone()));
        }
    }
    let plain = churn(server, common, opts, &churn_topics, None).await?;
    run.metrics.push(Metric::new(
        "server CPU per subscribe+unsubscribe",
        "µs",
        plain.cpu_us_per_cycle,
    ));
    run.errors += plain.errors;
    run.error_samples.extend(plain.samples.clone());
    let mut work = plain.cycles;
    if presence {
        let joined = churn(server, common, opts, &churn_topics, Some("join")).await?;
        run.metrics.push(Metric::new(
            "server CPU per join+leave cycle",
            "µs",
            joined.cpu_us_per_cycle,
        ));
        run.metrics.push(Metric::new(
            "  presence's share (join + leave)",
            "µs",
            joined.cpu_us_per_cycle - plain.cpu_us_per_cycle,
        ));
        run.metrics.push(Metric::new(
            "  of which kernel (sys)",
            "µs",
            joined.sys_us_per_cycle,
        ));
        run.metrics
            .push(Metric::new("join+leave cycles", "per s", joined.per_sec));
        run.metrics.push(Metric::new(
            "watchers per churn topic",
            "count",
            opts.watchers as f64,
        ));
        run.errors += joined.errors;
        run.error_samples.extend(joined.samples);
        work = work.min(joined.cycles);
    }
    stop.cancel();
    while let Some(result) = watchers.join_next().await {
        if let Ok(Some(error)) = result {
            record(&mut run, anyhow::anyhow!("watcher: {error}"));
        }
    }
    run.error_samples.truncate(5);
    run.work = work.min(present as u64);
    Ok(run)
}

/// What one churn window measured.
struct Churn {
    cycles: u64,
    per_sec: f64,
    cpu_us_per_cycle: f64,
    sys_us_per_cycle: f64,
    errors: u64,
    samples: Vec<String>,
}

/// W workers subscribe/unsubscribe (with `mode` as `presence`) in a loop: `settle` seconds of
/// warm-up, then a `duration` CPU window.
async fn churn(
    server: &Server,
    common: &Common,
    opts: &PresenceOpts,
    topics: &[Topic],
    mode: Option<&'static str>,
) -> Result<Churn> {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = CancellationToken::new();
    let mut workers = JoinSet::new();
    for (w, topic) in topics.iter().enumerate() {
        // Users past the memory step's and the watchers', one per pooled connection (the
        // server bounds connections per user).
        let first = opts.conns + topics.len() * opts.watchers + w * opts.pool.max(1);
        let mut pool = Vec::with_capacity(opts.pool.max(1));
        for i in 0..opts.pool.max(1) {
            let token = common.minter.subscriber(first + i)?;
            pool.push(conn::connect(server.addr, &token, None).await?);
        }
        let (done, errors, stop, topic) =
            (done.clone(), errors.clone(), stop.clone(), topic.clone());
        workers.spawn(async move {
            let mut turn = 0;
            while !stop.is_cancelled() {
                turn = (turn + 1) % pool.len();
                let ws = &mut pool[turn];
                let cycle = async {
                    subscribe(ws, &topic, mode).await?;
                    unsubscribe(ws, &topic).await
                };
                match cycle.await {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.lock().unwrap().push(format!("worker {w}: {e:#}"));
                        return;
                    }
                }
            }
            for ws in pool {
                conn::close(ws).await;
            }
        });
    }
    tokio::time::sleep(secs(opts.settle)).await;
    let window = Window::start(&server.stats)?;
    let n0 = done.load(Ordering::Relaxed);
    tokio::time::sleep(secs(opts.duration)).await;
    let n1 = done.load(Ordering::Relaxed);
    let cpu = window.end()?;
    stop.cancel();
    while workers.join_next().await.is_some() {}
    let cycles = n1 - n0;
    let samples = std::mem::take(&mut *errors.lock().unwrap());
    Ok(Churn {
        cycles,
        per_sec: cycles as f64 / cpu.secs,
        cpu_us_per_cycle: cpu.server_us / cycles.max(1) as f64,
        sys_us_per_cycle: cpu.server_sys_us / cycles.max(1) as f64,
        errors: samples.len() as u64,
        samples: samples.into_iter().take(5).collect(),
    })
}

/// Subscribes to `topic` (with `presence` when given) and waits for the ack and, with
/// presence, the snapshot.
async fn subscribe(ws: &mut Ws, topic: &Topic, presence: Option<&str>) -> Result<()> {
    let text = match presence {
        Some(mode) => format!(r#"{{"action":"subscribe","topic":"{topic}","presence":"{mode}"}}"#),
        None => format!(r#"{{"action":"subscribe","topic":"{topic}"}}"#),
    };
    ws.send(Message::text(text))
        .await
        .context("sending subscribe")?;
    expect(ws, r#""action":"subscribed""#).await?;
    if presence.is_some() {
        expect(ws, r#""action":"presence","#).await?;
    }
    Ok(())
}

async fn unsubscribe(ws: &mut Ws, topic: &Topic) -> Result<()> {
    let text = format!(r#"{{"action":"unsubscribe","topic":"{topic}"}}"#);
    ws.send(Message::text(text))
        .await
        .context("sending unsubscribe")?;
    expect(ws, r#""action":"unsubscribed""#).await
}

/// Reads frames until one containing `needle` (others, such as presence changes, are
/// skipped); an error frame fails.
async fn expect(ws: &mut Ws, needle: &str) -> Result<()> {
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) if text.contains(needle) => return Ok(()),
                Some(Ok(Message::Text(text))) if text.starts_with(r#"{"error""#) => {
                    bail!("error reply: {text}")
                }
                Some(Ok(Message::Close(frame))) => bail!("closed: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("read error: {e}"),
                None => bail!("connection ended"),
            }
        }
    };
    tokio::time::timeout(STEP_TIMEOUT, wait)
        .await
        .with_context(|| format!("no {needle} in time"))?
}
