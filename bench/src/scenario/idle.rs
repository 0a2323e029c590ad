//! `idle`: the server's resident memory per idle subscribed connection.
//!
//! RSS is read once the server has settled, then N connections each authenticate, subscribe
//! to one of a few topics and get their ack, then stay silent; after a settle period RSS is
//! read again and (after − before) / N is the cost of one connection, including its share of
//! the topic index. The connections keep reading, so server heartbeats are answered.

use std::time::Instant;

use anyhow::Result;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Common, secs};
use crate::report::{Goal, Metric, Run};
use crate::server::Server;
use crate::swarm::{self, SwarmSpec};

/// Options of the `idle` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleOpts {
    /// Idle subscribed connections to open.
    #[arg(long, default_value_t = 19_000)]
    pub conns: usize,
    /// Distinct topics the connections subscribe to (round robin).
    #[arg(long, default_value_t = 100)]
    pub topics: usize,
    /// Connect and authenticate only, without subscribing (to tell the connection's own
    /// cost from the subscription's).
    #[arg(long)]
    pub no_subscribe: bool,
    /// Seconds to wait before each RSS reading.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
}

/// The target: at most 4 KiB of server memory per idle connection.
const GOAL_KIB_PER_CONN: f64 = 4.0;

/// Runs `idle` against `server`.
///
/// # Errors
/// Only when the server's `/proc` entry cannot be read; connection failures are reported in
/// the [`Run`].
pub async fn run(server: &Server, common: &Common, opts: &IdleOpts) -> Result<Run> {
    let mut run = Run {
        server: server.name.clone(),
        metrics: Vec::new(),
        errors: 0,
        error_samples: Vec::new(),
        work: 0,
    };
    tokio::time::sleep(secs(opts.settle)).await;
    let rss_before = server.stats.rss_kib()?;
    let cpu_before = server.stats.cpu()?;
    let spec = SwarmSpec {
        conns: opts.conns,
        topics: swarm::bench_topics(opts.topics)?,
        concurrency: common.connect_concurrency,
        sources: common.sources,
        subscribe: !opts.no_subscribe,
    };
    let started = Instant::now();
    let conns = match swarm::open(server.addr, &common.minter, &spec).await {
        Ok(conns) => conns,
        Err(e) => {
            run.errors = 1;
            run.error_samples.push(format!("{e:#}"));
            return Ok(run);
        }
    };
    let open_secs = started.elapsed().as_secs_f64();
    let cpu_after_open = server.stats.cpu()?;
    let stop = CancellationToken::new();
    let mut holders = JoinSet::new();
    for ws in conns {
        holders.spawn(swarm::hold_idle(ws, stop.clone()));
    }
    tokio::time::sleep(secs(opts.settle)).await;
    let rss_after = server.stats.rss_kib()?;
    stop.cancel();
    while let Some(result) = holders.join_next().await {
        if let Ok(Some(error)) = result {
            run.errors += 1;
            if run.error_samples.len() < 5 {
                run.error_samples.push(error);
            }
        }
    }
    let n = opts.conns.max(1) as f64;
    let per_conn_kib = rss_after.saturating_sub(rss_before) as f64 / n;
    let cpu_us = server.stats.cpu_micros(cpu_before, cpu_after_open);
    run.work = opts.conns as u64;
    run.metrics = vec![
        Metric::new("idle connections", "count", opts.conns as f64),
        Metric::new("server RSS before", "MiB", rss_before as f64 / 1024.0),
        Metric::new("server RSS after", "MiB", rss_after as f64 / 1024.0),
        Metric::new("server RSS per connection", "KiB", per_conn_kib)
            .with_goal(Goal::AtMost(GOAL_KIB_PER_CONN)),
        Metric::new("connect+subscribe rate", "conn/s", n / open_secs.max(1e-9)),
        Metric::new("server CPU per connect+subscribe", "µs", cpu_us / n),
    ];
    Ok(run)
}
