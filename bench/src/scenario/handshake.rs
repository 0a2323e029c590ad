//! `handshake`: full connection lifecycles per second and the server's CPU per lifecycle.
//!
//! Each of C workers loops: TCP connect, WebSocket upgrade with a token, `subscribe`, wait for
//! the ack, close (1000) and wait for the server's close. Tokens are signed up front (a pool
//! of distinct users) so the tool's own signing cost stays out of the loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Common, secs};
use crate::conn;
use crate::procfs::Window;
use crate::recorder::{Clock, Recorder};
use crate::report::{Goal, Metric, Run};
use crate::server::Server;
use crate::swarm;

/// Distinct subscriber tokens the workers cycle through.
const TOKEN_POOL: usize = 1_000;
/// The target: at most 40 µs of server CPU per handshake.
const GOAL_CPU_US_PER_HANDSHAKE: f64 = 40.0;

/// Options of the `handshake` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct HandshakeOpts {
    /// Concurrent workers, each doing one handshake after the other.
    #[arg(long, default_value_t = 32)]
    pub workers: usize,
    /// Topics subscribed to (round robin).
    #[arg(long, default_value_t = 10)]
    pub topics: usize,
    /// Seconds of handshakes before the measurement window.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
}

/// Runs `handshake` against `server`.
///
/// # Errors
/// Only when the server's `/proc` entry cannot be read or tokens cannot be signed.
pub async fn run(server: &Server, common: &Common, opts: &HandshakeOpts) -> Result<Run> {
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..TOKEN_POOL)
            .map(|n| common.minter.subscriber(n))
            .collect::<Result<_>>()?,
    );
    let topics = Arc::new(swarm::bench_topics(opts.topics)?);
    let recorder = Arc::new(Recorder::new(Clock::start()));
    let done = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let mut workers = JoinSet::new();
    for id in 0..opts.workers.max(1) {
        let (tokens, topics, recorder, done, stop) = (
            tokens.clone(),
            topics.clone(),
            recorder.clone(),
            done.clone(),
            stop.clone(),
        );
        let addr = server.addr;
        let stride = opts.workers.max(1);
        workers.spawn(async move {
            let mut n = id;
            while !stop.is_cancelled() {
                let step = async {
                    let mut ws = conn::connect(addr, &tokens[n % tokens.len()], None).await?;
                    conn::subscribe(&mut ws, &topics[n % topics.len()]).await?;
                    conn::close(ws).await;
                    anyhow::Ok(())
                };
                match step.await {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        recorder.error(format!("worker {id}: {e:#}"));
                        // Do not spin on a refusing server.
                        tokio::time::sleep(secs(0.1)).await;
                    }
                }
                n += stride;
            }
        });
    }
    tokio::time::sleep(secs(opts.warmup)).await;
    let window = Window::start(&server.stats)?;
    let n0 = done.load(Ordering::Relaxed);
    tokio::time::sleep(secs(opts.duration)).await;
    let n1 = done.load(Ordering::Relaxed);
    let cpu = window.end()?;
    stop.cancel();
    while workers.join_next().await.is_some() {}
    let handshakes = n1 - n0;
    let secs = cpu.secs;
    let (errors, error_samples) = recorder.errors();
    Ok(Run {
        server: server.name.clone(),
        metrics: vec![
            Metric::new("handshakes", "per s", handshakes as f64 / secs),
            Metric::new(
                "server CPU per handshake",
                "µs",
                cpu.server_us / handshakes.max(1) as f64,
            )
            .with_goal(Goal::AtMost(GOAL_CPU_US_PER_HANDSHAKE)),
            Metric::new(
                "  of which kernel (sys)",
                "µs",
                cpu.server_sys_us / handshakes.max(1) as f64,
            ),
            Metric::new(
                "TCP segments per handshake (both ways)",
                "count",
                cpu.tcp_segments as f64 / handshakes.max(1) as f64,
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
        ],
        errors,
        error_samples,
        work: handshakes,
    })
}
