//! `tidings-bench`: drives a running tidings server (or the Node `ws` comparison peer) over
//! loopback and reports what the server spends per unit of work.
//!
//! Scenarios (issue 3): `idle` (RSS per idle subscribed connection), `fanout` (deliveries/s,
//! server CPU per delivery, latency), `latency` (p50/p99/max at a fixed event rate) and
//! `handshake` (connect + auth + subscribe + ack + close per second, server CPU per
//! handshake), and `presence` (issue 15: RSS per present connection, CPU per join/leave).
//! `--spawn tidings --spawn node` runs the scenario against both, one after the
//! other, and prints them side by side. Every run is bounded and ends by itself; all traffic
//! goes to 127.0.0.1. See `docs/BENCHMARKS.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use tidings_bench::conn::SourceAddrs;
use tidings_bench::report::{Report, Run};
use tidings_bench::scenario::chaos::ChaosOpts;
use tidings_bench::scenario::handshake::HandshakeOpts;
use tidings_bench::scenario::idle::IdleOpts;
use tidings_bench::scenario::presence::PresenceOpts;
use tidings_bench::scenario::pubsub::{FanoutOpts, LatencyOpts};
use tidings_bench::scenario::{self, Common};
use tidings_bench::server::{Kind, Programs, Server};
use tidings_bench::token::Minter;

/// File descriptors kept free beyond the scenario's connections (publishers, pipes, runtime).
const FD_RESERVE: u64 = 100;

#[derive(Parser)]
#[command(
    version,
    about = "Load tool for tidings and peers speaking its protocol"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,

    /// Start this server for the run (repeat to compare: `--spawn tidings --spawn node`).
    /// Default: tidings, unless --server-pid is given.
    #[arg(long, global = true, value_enum)]
    spawn: Vec<Kind>,

    /// Measure an already running server with this pid instead (needs --addr and --secret).
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Address of the running server (with --server-pid).
    #[arg(long, global = true, default_value = "127.0.0.1:8000")]
    addr: SocketAddr,
    /// JWT secret of the running server (with --server-pid).
    #[arg(long, global = true, env = "JWT_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Name of the running server in the result table (with --server-pid).
    #[arg(long, global = true, default_value = "server")]
    name: String,

    /// The tidings binary to spawn. Default: $CARGO_TARGET_DIR (or ./target)/release/tidings.
    #[arg(long, global = true)]
    tidings_bin: Option<PathBuf>,
    /// The Node peer to spawn.
    #[arg(long, global = true, default_value = "bench/peers/ws-server.mjs")]
    node_script: PathBuf,

    /// Connections per loopback source address before moving to the next (127.0.0.2, …);
    /// keep below the ephemeral port range (28,232 by default).
    #[arg(long, global = true, default_value_t = 25_000)]
    conns_per_source: usize,
    /// Connections opened at the same time when building subscriber swarms.
    #[arg(long, global = true, default_value_t = 200)]
    connect_concurrency: usize,
    /// Also write the report as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Scenario {
    /// Server RSS per idle subscribed connection.
    Idle(IdleOpts),
    /// Deliveries per second and server CPU per delivery, publishing as fast as possible.
    Fanout(FanoutOpts),
    /// Publish→deliver latency at a fixed event rate.
    Latency(LatencyOpts),
    /// Connect + auth + subscribe + ack + close per second, and server CPU per handshake.
    Handshake(HandshakeOpts),
    /// Presence (issue 15): server RSS per present connection and CPU per join/leave (plain
    /// subscribe/unsubscribe alongside for comparison).
    Presence(PresenceOpts),
    /// Clients with the real reconnect rules against a running cluster (--addr: its load
    /// balancer, --secret) while fault commands run; checks every event arrived exactly once
    /// and in order. See `scripts/test-cluster`.
    Chaos(ChaosOpts),
}

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Scenario::Idle(_) => "idle",
            Scenario::Fanout(_) => "fanout",
            Scenario::Latency(_) => "latency",
            Scenario::Handshake(_) => "handshake",
            Scenario::Presence(_) => "presence",
            Scenario::Chaos(_) => "chaos",
        }
    }

    fn params(&self) -> String {
        match self {
            Scenario::Idle(o) => {
                format!(
                    "conns={} topics={} settle={}s{}",
                    o.conns,
                    o.topics,
                    o.settle,
                    if o.no_subscribe { " no-subscribe" } else { "" }
                )
            }
            Scenario::Fanout(o) => format!(
                "subscribers={} topics={} publishers={} batch={} max_in_flight={} warmup={}s duration={}s",
                o.subscribers,
                o.topics,
                o.publishers,
                o.batch,
                o.max_in_flight,
                o.warmup,
                o.duration
            ),
            Scenario::Latency(o) => format!(
                "subscribers={} topics={} rate={}/s publishers={} sample_every={} stalled_readers={} warmup={}s duration={}s nodes={} first_topic={}",
                o.subscribers,
                o.topics,
                o.rate,
                o.publishers,
                o.sample_every,
                o.stalled_readers,
                o.warmup,
                o.duration,
                o.nodes.len().max(1),
                o.first_topic
            ),
            Scenario::Handshake(o) => format!(
                "workers={} topics={} warmup={}s duration={}s",
                o.workers, o.topics, o.warmup, o.duration
            ),
            Scenario::Presence(o) => format!(
                "conns={} topics={} workers={} watchers={} pool={} settle={}s duration={}s",
                o.conns, o.topics, o.workers, o.watchers, o.pool, o.settle, o.duration
            ),
            Scenario::Chaos(o) => format!("clients={} topics={}", o.clients, o.topics),
        }
    }

    /// Open connections the tool itself holds at the peak.
    fn peak_conns(&self) -> u64 {
        match self {
            Scenario::Idle(o) => o.conns as u64,
            Scenario::Fanout(o) => (o.subscribers + o.publishers) as u64,
            Scenario::Latency(o) => {
                (o.subscribers + o.publishers + o.stalled_readers * o.topics) as u64
            }
            Scenario::Handshake(o) => o.workers as u64,
            Scenario::Presence(o) => (o.conns + o.workers * (o.watchers + o.pool)) as u64,
            Scenario::Chaos(o) => (o.clients + o.publishers) as u64,
        }
    }

    async fn run(&self, server: &Server, common: &Common) -> Result<Run> {
        match self {
            Scenario::Idle(o) => scenario::idle::run(server, common, o).await,
            Scenario::Fanout(o) => scenario::pubsub::fanout(server, common, o).await,
            Scenario::Latency(o) => scenario::pubsub::latency(server, common, o).await,
            Scenario::Handshake(o) => scenario::handshake::run(server, common, o).await,
            Scenario::Presence(o) => scenario::presence::run(server, common, o).await,
            Scenario::Chaos(_) => bail!("chaos runs against a cluster: see run_chaos"),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Scenario::Chaos(o) = &cli.scenario {
        return match runtime.block_on(run_chaos(&cli, o)) {
            Ok((report, ok)) => {
                print!("{report}");
                if ok {
                    ExitCode::SUCCESS
                } else {
                    eprintln!("FAILED: the chaos checker found a problem (see the report)");
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match runtime.block_on(run(cli)) {
        Ok(report) => {
            print!("{}", report.table());
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                eprintln!("FAILED: a run saw errors or did no work");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `chaos`: against the cluster at `--addr` (its load balancer) signed with `--secret`.
async fn run_chaos(cli: &Cli, o: &ChaosOpts) -> Result<(String, bool)> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")?;
    let needed = cli.scenario.peak_conns() + FD_RESERVE;
    if needed > limit {
        bail!("chaos needs about {needed} open files but this process may open {limit}");
    }
    if !cli.addr.ip().is_loopback() {
        bail!("--addr must be a loopback address, not {}", cli.addr);
    }
    let secret = cli
        .secret
        .clone()
        .context("chaos needs --secret (or JWT_SECRET)")?;
    scenario::chaos::run(cli.addr, &Minter::new(&secret), o).await
}

async fn run(cli: Cli) -> Result<Report> {
    // Each connection is a file descriptor; the hard limit here is 20,000 per process.
    let limit = rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")?;
    let needed = cli.scenario.peak_conns() + FD_RESERVE;
    if needed > limit {
        bail!(
            "the scenario needs about {needed} open files but this process may open {limit}; \
             use fewer connections or split the load over several tool processes"
        );
    }
    let programs = Programs {
        tidings_bin: cli.tidings_bin.clone().unwrap_or_else(|| {
            let dir = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| PathBuf::from("target"), PathBuf::from);
            dir.join("release").join("tidings")
        }),
        node_script: cli.node_script.clone(),
    };
    let sources = SourceAddrs {
        per_addr: cli.conns_per_source,
    };
    let mut runs = Vec::new();
    // Load is only ever aimed at this machine.
    if !cli.addr.ip().is_loopback() {
        bail!(
            "--addr must be a loopback address (127.0.0.0/8), not {}",
            cli.addr
        );
    }
    if let Some(pid) = cli.server_pid {
        let secret = cli
            .secret
            .clone()
            .context("--server-pid needs --secret (or JWT_SECRET)")?;
        let server = Server::attach(cli.name.clone(), pid, cli.addr, secret)?;
        runs.push(run_one(&cli, &server, sources).await?);
    } else {
        let kinds = if cli.spawn.is_empty() {
            vec![Kind::Tidings]
        } else {
            cli.spawn.clone()
        };
        for kind in kinds {
            eprintln!("-- {} against {}", cli.scenario.name(), kind.name());
            let mut server = Server::spawn(kind, &programs).await?;
            let mut run = run_one(&cli, &server, sources).await?;
            if !server.is_running() {
                run.errors += 1;
                run.error_samples
                    .push("the server process died during the run".to_owned());
            }
            server.stop().await;
            runs.push(run);
        }
    }
    let report = Report {
        scenario: cli.scenario.name(),
        params: cli.scenario.params(),
        runs,
    };
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

async fn run_one(cli: &Cli, server: &Server, sources: SourceAddrs) -> Result<Run> {
    let common = Common {
        minter: Minter::new(&server.secret),
        sources,
        connect_concurrency: cli.connect_concurrency,
    };
    cli.scenario.run(server, &common).await
}
