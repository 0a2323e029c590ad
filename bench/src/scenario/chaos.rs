//! `chaos`: many clients with the real reconnect rules against a cluster while faults happen,
//! and a checker that every event reached every subscriber exactly once and in order (issue 17).
//!
//! The clients follow the browser client's rules (`client-wasm/src/backoff.rs`,
//! `client-wasm/src/topics.rs`): on any close they reconnect after a full-jitter delay (a
//! uniformly random time in `[0, min(max, initial · 2ⁿ))`, n counting attempts since the last
//! healthy connection; after a 1012 the window stays at 2 × initial) and resubscribe every topic
//! with `since` = the last `{seq, epoch}` they received on it. A `recovered: false` answer is
//! recorded (the real client would refetch) and the topic's position is forgotten.
//!
//! Publishers post at a fixed total rate over HTTP. Each topic is owned by one publisher task
//! that awaits every answer before its next event, so a topic's events are numbered by Redis in
//! the order they were sent; the payload carries the publisher's own number `n` for the event.
//! A publish that fails (503 while Redis is away, a node killed mid-request) may or may not
//! have been numbered: it is *uncertain* and may arrive or not.
//!
//! Faults are shell commands (`--fault NAME=COMMAND`, run with `sh -c` one after the other):
//! after each, the run waits until every client that went down is back (connected, every topic
//! acknowledged) and measures how long that took.
//!
//! The checker, per client and topic, over its deliveries in arrival order:
//! - *duplicated*: an `n` (or an `(epoch, seq)`) received twice;
//! - *out of order*: an `n` below one received before;
//! - *seq gaps*: consecutive deliveries of one epoch whose `seq` skips, with no
//!   `recovered: false` between them (an event lost even if its publish was uncertain);
//! - *lost*: an event whose publish was answered 202, sent after the client's first ack of the
//!   topic, and never received — unless a `recovered: false` for that topic came after the
//!   client's last delivery before it and after the event was sent (then it is counted as
//!   *excused by recovered:false*).
//!
//! `recovered: false` is only allowed after a fault named in `--data-loss-fault` (Redis
//! restarted without persistence: every stream is gone and starts a new epoch); anywhere else
//! it fails the run.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tidings_protocol::{ServerMessage, StreamPosition, Topic, WSClientMessage, WSReply};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::conn;
use crate::publish::Publisher;
use crate::scenario::secs;
use crate::token::Minter;

/// Options of `tidings-bench chaos`.
#[derive(Args, Debug, Clone)]
pub struct ChaosOpts {
    /// WebSocket clients.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Topics (`chaos:0` …), spread round robin over the clients.
    #[arg(long, default_value_t = 50)]
    pub topics: usize,
    /// Topics each client subscribes to.
    #[arg(long, default_value_t = 2)]
    pub topics_per_client: usize,
    /// Events per second over all topics.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Publisher tasks (each owns a share of the topics).
    #[arg(long, default_value_t = 5)]
    pub publishers: usize,
    /// Seconds of publishing before the first fault (every client must have an event by then).
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// A fault: `NAME=SHELL COMMAND`, run in order (repeat).
    #[arg(long = "fault")]
    pub faults: Vec<String>,
    /// Names of faults after which `recovered: false` is allowed (Redis lost its data).
    #[arg(long = "data-loss-fault")]
    pub data_loss_faults: Vec<String>,
    /// Seconds to wait after a fault's command before checking that every client is back.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    /// Seconds within which every client must be back after a fault.
    #[arg(long, default_value_t = 10.0)]
    pub back_within: f64,
    /// Seconds of publishing after the last fault.
    #[arg(long, default_value_t = 2.0)]
    pub tail: f64,
    /// Seconds to wait for deliveries after publishing stops.
    #[arg(long, default_value_t = 2.0)]
    pub drain: f64,
    /// First reconnect window in ms (the browser client's `initialDelayMs`).
    #[arg(long, default_value_t = 500.0)]
    pub initial_delay_ms: f64,
    /// Largest reconnect window in ms (the browser client's `maxDelayMs`).
    #[arg(long, default_value_t = 30_000.0)]
    pub max_delay_ms: f64,
    /// Storm measurements: the file holding the PID of the server the clients use (read again
    /// after each fault, which may have restarted it): its CPU per reconnect, peak RSS and RSS
    /// per connection after the storm against when the clients connected at the start.
    #[arg(long)]
    pub pid_file: Option<std::path::PathBuf>,
    /// Where the publishers post (default: --addr), e.g. a load balancer in front of other
    /// nodes so that publishing goes on while the measured node restarts.
    #[arg(long)]
    pub publish_addr: Option<SocketAddr>,
    /// Connections opened per second at the start (0: as fast as 100 at a time go).
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,
    /// Seconds to let the server settle before reading its RSS (storm measurements).
    #[arg(long, default_value_t = 3.0)]
    pub settle_rss: f64,
}

/// The measured server (`--pid-file`), read again after each fault.
fn measured(o: &ChaosOpts) -> Option<crate::procfs::ProcStats> {
    let path = o.pid_file.as_ref()?;
    let pid = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    crate::procfs::ProcStats::new(pid).ok()
}

/// What the storm measurements saw around one fault.
#[derive(Default)]
struct StormFigures {
    /// RSS of the (new) server right after the fault's command, KiB.
    rss_fresh: u64,
    /// Its CPU from then until every client was back, µs, minus the steady publishing's.
    storm_cpu_us: f64,
    /// How long the fault's command took, s.
    command_s: f64,
    /// The publishing's share subtracted from the storm's CPU, µs.
    steady_us: f64,
    /// Peak and settled RSS after the storm, KiB.
    hwm: u64,
    rss_after: u64,
}

/// One thing a client saw on a topic, in arrival order.
#[derive(Debug, Clone)]
enum Seen {
    /// An event: the publisher's number, the stream's epoch and seq.
    Event {
        n: u64,
        epoch: String,
        seq: u64,
        #[expect(dead_code, reason = "printed through Debug in the report's samples")]
        conn: u32,
    },
    /// `subscribed` with `recovered: false`, at this time.
    NotRecovered { at: Instant },
    /// Any other `subscribed` (for the report of a failure): its `since` and connection.
    #[expect(dead_code, reason = "printed through Debug in the report's samples")]
    Ack {
        since: Option<u64>,
        recovered: Option<bool>,
        conn: u32,
    },
}

/// What one client recorded.
#[derive(Default)]
struct ClientLog {
    /// Per topic index: when the first `subscribed` arrived.
    first_ack: HashMap<usize, Instant>,
    /// Per topic index: what arrived.
    seen: HashMap<usize, Vec<Seen>>,
}

/// A client going down or coming back.
#[derive(Debug, Clone, Copy)]
enum Change {
    Down { code: Option<u16> },
    Up,
}

/// Shared between the clients and the driver.
struct Shared {
    started: AtomicUsize,
    down: AtomicUsize,
    changes: Mutex<Vec<(Instant, usize, Change)>>,
    stop: CancellationToken,
}

impl Shared {
    fn change(&self, client: usize, change: Change) {
        self.changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((Instant::now(), client, change));
    }
}

/// One publish: topic index, number, when it was sent, whether it was answered 202.
struct Sent {
    topic: usize,
    n: u64,
    at: Instant,
    ok: bool,
}

/// Runs the scenario against the cluster at `addr` (HAProxy) whose secret `minter` holds.
/// Returns the report text and whether every check passed.
///
/// # Errors
/// Bad options, or the clients could not connect at the start.
pub async fn run(addr: SocketAddr, minter: &Minter, o: &ChaosOpts) -> Result<(String, bool)> {
    if o.topics == 0 || o.clients == 0 || o.topics_per_client == 0 || o.rate <= 0.0 {
        bail!("--clients, --topics, --topics-per-client and --rate must be positive");
    }
    let faults = o
        .faults
        .iter()
        .map(|f| {
            f.split_once('=')
                .map(|(n, c)| (n.to_owned(), c.to_owned()))
                .with_context(|| format!("--fault {f:?}: expected NAME=COMMAND"))
        })
        .collect::<Result<Vec<_>>>()?;
    let topics: Vec<Topic> = (0..o.topics)
        .map(|i| Topic::new(format!("chaos:{i}")))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("topic name: {e}"))?;
    let topics = Arc::new(topics);
    let shared = Arc::new(Shared {
        started: AtomicUsize::new(0),
        down: AtomicUsize::new(0),
        changes: Mutex::new(Vec::new()),
        stop: CancellationToken::new(),
    });

    let rss_empty = measured(o).and_then(|p| p.rss_kib().ok());
    // Clients: client c subscribes to topics c, c + clients, … (mod topics), distinct.
    let t0 = Instant::now();
    let mut clients = Vec::with_capacity(o.clients);
    let connect_gate = Arc::new(tokio::sync::Semaphore::new(100));
    for c in 0..o.clients {
        let mine: Vec<usize> = (0..o.topics_per_client.min(o.topics))
            .map(|k| (c + k * o.clients.max(1) / o.topics_per_client.max(1) + k) % o.topics)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if o.connect_rate > 0.0 {
            // Connecting slowly: the baseline the RSS after a storm is compared with.
            let due = t0 + Duration::from_secs_f64(c as f64 / o.connect_rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let token = minter.subscriber(c)?;
        clients.push(tokio::spawn(client(
            c,
            addr,
            token,
            mine,
            topics.clone(),
            shared.clone(),
            connect_gate.clone(),
            o.clone(),
        )));
    }
    // Everyone connected and subscribed once.
    let deadline = Instant::now()
        + Duration::from_secs(60 + (o.clients as f64 / o.connect_rate.max(1.0)) as u64);
    while shared.started.load(Ordering::SeqCst) < o.clients {
        if Instant::now() > deadline {
            shared.stop.cancel();
            bail!(
                "only {} of {} clients subscribed within 60 s",
                shared.started.load(Ordering::SeqCst),
                o.clients
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connected_in = t0.elapsed();
    eprintln!(
        "chaos: {} clients subscribed in {:.1} s",
        o.clients,
        connected_in.as_secs_f64()
    );

    let rss_connected = match (rss_empty, measured(o)) {
        (Some(_), Some(p)) => {
            tokio::time::sleep(secs(o.settle_rss)).await;
            p.rss_kib().ok()
        }
        _ => None,
    };
    // Publishers.
    let publishing = CancellationToken::new();
    let sent = Arc::new(Mutex::new(Vec::<Sent>::new()));
    let mut pubs = Vec::new();
    let publishers = o.publishers.clamp(1, o.topics);
    for p in 0..publishers {
        let owned: Vec<usize> = (p..o.topics).step_by(publishers).collect();
        let target = o.publish_addr.unwrap_or(addr);
        if !target.ip().is_loopback() {
            bail!("--publish-addr must be a loopback address, not {target}");
        }
        let publisher = Publisher::new(target, &minter.publisher()?)?;
        let period = Duration::from_secs_f64(publishers as f64 / o.rate);
        pubs.push(tokio::spawn(publish_loop(
            publisher,
            owned,
            topics.clone(),
            period,
            sent.clone(),
            publishing.clone(),
        )));
    }
    tokio::time::sleep(secs(o.warmup)).await;

    // Faults, one after the other, each followed by the wait for every client to be back.
    let mut phases = Vec::new();
    let mut storms = Vec::new();
    let mut ok = true;
    for (name, command) in &faults {
        // The server's CPU rate while only publishing, subtracted from the storm's.
        let steady_us_per_s = match measured(o) {
            Some(p) => {
                let (a, t) = (p.cpu()?, Instant::now());
                tokio::time::sleep(Duration::from_secs(2)).await;
                p.cpu_micros(a, p.cpu()?) / t.elapsed().as_secs_f64()
            }
            None => 0.0,
        };
        let at = Instant::now();
        eprintln!("chaos: fault {name}: {command}");
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .status()
            .await
            .with_context(|| format!("running fault {name}"))?;
        if !status.success() {
            eprintln!("chaos: fault {name} exited with {status}");
            ok = false;
        }
        let server = measured(o);
        let mut storm = StormFigures::default();
        let cpu0 = match &server {
            Some(p) => {
                storm.rss_fresh = p.rss_kib().unwrap_or(0);
                Some((p.cpu()?, Instant::now()))
            }
            None => None,
        };
        storm.command_s = at.elapsed().as_secs_f64();
        // The server's CPU at the first moment every client is back (polled), for the storm's
        // cost; then the settle time before the check below.
        let limit = at + secs(o.back_within.max(o.settle) + 20.0);
        let mut back_cpu = None;
        while Instant::now() < limit {
            let down = shared.down.load(Ordering::SeqCst);
            if down == 0 && back_cpu.is_none() {
                if let Some(p) = &server {
                    back_cpu = Some((p.cpu()?, Instant::now()));
                }
            } else if down > 0 {
                back_cpu = None;
            }
            if down == 0 && at.elapsed() >= secs(o.settle) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let (Some(p), Some((c0, t0)), Some((c1, t1))) = (&server, cpu0, back_cpu) {
            let spent = p.cpu_micros(c0, c1);
            storm.steady_us = steady_us_per_s * (t1 - t0).as_secs_f64();
            storm.storm_cpu_us = (spent - storm.steady_us).max(0.0);
            tokio::time::sleep(secs(o.settle_rss)).await;
            storm.hwm = p.peak_rss_kib().unwrap_or(0);
            storm.rss_after = p.rss_kib().unwrap_or(0);
        }
        storms.push(storm);
        // A moment more so late effects (a 1013 after a resync) land in this phase.
        tokio::time::sleep(Duration::from_millis(500)).await;
        while shared.down.load(Ordering::SeqCst) > 0 && Instant::now() < limit {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        phases.push((name.clone(), at, Instant::now()));
    }
    tokio::time::sleep(secs(o.tail)).await;
    publishing.cancel();
    for p in pubs {
        let _ = p.await;
    }
    let published_until = Instant::now();
    tokio::time::sleep(secs(o.drain)).await;
    shared.stop.cancel();
    let mut logs = Vec::with_capacity(clients.len());
    for c in clients {
        logs.push(c.await.context("client task")?);
    }
    let sent = std::mem::take(&mut *sent.lock().unwrap_or_else(PoisonError::into_inner));
    let changes = std::mem::take(
        &mut *shared
            .changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );

    // --- the checker ---
    let mut by_topic: Vec<Vec<&Sent>> = vec![Vec::new(); o.topics];
    for s in &sent {
        by_topic[s.topic].push(s);
    }
    let published_ok = sent.iter().filter(|s| s.ok).count();
    let uncertain = sent.len() - published_ok;
    let (mut expected, mut received, mut lost, mut excused) = (0u64, 0u64, 0u64, 0u64);
    let (mut duplicated, mut out_of_order, mut seq_gaps, mut not_recovered) = (0u64, 0u64, 0u64, 0);
    let mut samples = Vec::new();
    let mut not_recovered_at = Vec::new();
    for (c, log) in logs.iter().enumerate() {
        for (&t, first) in &log.first_ack {
            let seen = log.seen.get(&t).map_or(&[][..], Vec::as_slice);
            let mut got = HashMap::new();
            let mut positions = HashSet::new();
            let mut max_n = None;
            let mut last: Option<(&str, u64)> = None;
            // (last n received before it, when) for each recovered:false.
            let mut resets: Vec<(Option<u64>, Instant)> = Vec::new();
            for (i, s) in seen.iter().enumerate() {
                match s {
                    Seen::Event { n, epoch, seq, .. } => {
                        received += 1;
                        let before = got.insert(*n, (epoch.as_str(), *seq));
                        if before.is_some() || !positions.insert((epoch.as_str(), *seq)) {
                            duplicated += 1;
                            if samples.len() < 10 {
                                samples.push(format!(
                                    "client {c} topic {t}: duplicate n={n} epoch={epoch} seq={seq} \
                                     (first as {before:?}, delivery {i} of {}); around it: {:?}",
                                    seen.len(),
                                    &seen[i.saturating_sub(4)..(i + 2).min(seen.len())]
                                ));
                            }
                            continue;
                        }
                        if max_n.is_some_and(|m| *n < m) {
                            out_of_order += 1;
                            if samples.len() < 10 {
                                samples
                                    .push(format!("client {c} topic {t}: n={n} after {max_n:?}"));
                            }
                        }
                        if let Some((e, s0)) = last
                            && e == epoch
                            && *seq != s0 + 1
                        {
                            seq_gaps += seq.saturating_sub(s0 + 1).max(1);
                            if samples.len() < 10 {
                                samples.push(format!(
                                    "client {c} topic {t}: seq {seq} after {s0} in epoch {e}"
                                ));
                            }
                        }
                        last = Some((epoch, *seq));
                        max_n = max_n.max(Some(*n));
                    }
                    Seen::Ack { .. } => {}
                    Seen::NotRecovered { at } => {
                        not_recovered += 1;
                        not_recovered_at.push(*at);
                        resets.push((max_n, *at));
                        last = None;
                    }
                }
            }
            for s in &by_topic[t] {
                if !s.ok || s.at < *first || s.at > published_until {
                    continue;
                }
                expected += 1;
                if got.contains_key(&s.n) {
                    continue;
                }
                let excuse = resets
                    .iter()
                    .any(|(before, at)| before.is_none_or(|b| s.n > b) && s.at < *at);
                if excuse {
                    excused += 1;
                } else {
                    lost += 1;
                    if samples.len() < 10 {
                        samples.push(format!("client {c} topic {t}: lost n={}", s.n));
                    }
                }
            }
        }
    }

    // Per fault: who went down after it and when they were back; recovered:false in it.
    let mut report = String::new();
    let _ = writeln!(
        report,
        "== chaos (clients={} topics={} per-client={} rate={}/s publishers={} faults={}) ==",
        o.clients,
        o.topics,
        o.topics_per_client,
        o.rate,
        publishers,
        faults.len()
    );
    let _ = writeln!(report, "{:<52}{:>12}", "metric", "value");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(report, "{k:<52}{v:>12}");
    };
    row(
        "clients connected+subscribed at start [s]",
        format!("{:.2}", connected_in.as_secs_f64()),
    );
    if let (Some(before), Some(after)) = (rss_empty, rss_connected) {
        row(
            "server RSS per conn, connected at the start [KiB]",
            format!(
                "{:.2}",
                after.saturating_sub(before) as f64 / o.clients as f64
            ),
        );
    }
    row("events published (202)", published_ok.to_string());
    row("publishes failed (uncertain)", uncertain.to_string());
    row("deliveries expected", expected.to_string());
    row("deliveries received", received.to_string());
    row("lost", lost.to_string());
    row("duplicated", duplicated.to_string());
    row("out of order", out_of_order.to_string());
    row("seq gaps (within an epoch)", seq_gaps.to_string());
    row(
        "recovered:false (client x topic)",
        not_recovered.to_string(),
    );
    row(
        "  missed events excused by recovered:false",
        excused.to_string(),
    );
    let mut codes: HashMap<String, usize> = HashMap::new();
    for (_, _, ch) in &changes {
        if let Change::Down { code } = ch {
            *codes
                .entry(code.map_or("none".to_owned(), |c| c.to_string()))
                .or_default() += 1;
        }
    }
    let mut codes: Vec<_> = codes.into_iter().collect();
    codes.sort();
    row(
        "closes by code",
        codes
            .iter()
            .map(|(c, n)| format!("{c}:{n}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    let mut stray_not_recovered = 0;
    for (i, (name, at, end)) in phases.iter().enumerate() {
        let next = phases.get(i + 1).map(|p| p.1);
        let in_phase = |t: Instant| t >= *at && next.is_none_or(|n| t < n);
        let mut went_down = HashSet::new();
        let mut back = Duration::ZERO;
        for (t, c, ch) in &changes {
            if !in_phase(*t) {
                continue;
            }
            match ch {
                Change::Down { .. } => {
                    went_down.insert(*c);
                }
                Change::Up if went_down.contains(c) => back = back.max(*t - *at),
                Change::Up => {}
            }
        }
        let nr = not_recovered_at.iter().filter(|t| in_phase(**t)).count();
        if nr > 0 && !o.data_loss_faults.contains(name) {
            stray_not_recovered += nr;
        }
        let within = back <= secs(o.back_within);
        if !within {
            ok = false;
        }
        row(
            &format!("fault {name}: clients that went down"),
            went_down.len().to_string(),
        );
        row(
            &format!("fault {name}: all back after [s]"),
            format!(
                "{:.2}{}",
                back.as_secs_f64(),
                if within { "" } else { " (>limit)" }
            ),
        );
        row(&format!("fault {name}: recovered:false"), nr.to_string());
        if o.pid_file.is_some() {
            let ups = changes
                .iter()
                .filter(|(t, _, ch)| in_phase(*t) && matches!(ch, Change::Up))
                .count();
            let st = &storms[i];
            row(
                &format!("fault {name}: reconnect+recover [count]"),
                ups.to_string(),
            );
            row(
                &format!("fault {name}: command took [s]"),
                format!("{:.2}", st.command_s),
            );
            row(
                &format!("fault {name}: server CPU per reconnect+recover [µs]"),
                format!("{:.1}", st.storm_cpu_us / ups.max(1) as f64),
            );
            row(
                &format!("fault {name}:   (publishing's CPU subtracted [ms])"),
                format!("{:.0}", st.steady_us / 1000.0),
            );
            row(
                &format!("fault {name}: server peak RSS [MiB]"),
                format!("{:.1}", st.hwm as f64 / 1024.0),
            );
            // The new process's RSS when the restart command returned is its empty baseline
            // only if no client was back yet; clients that reconnect faster than the command
            // returns are already in it. The first process's RSS before any client (same
            // binary, empty) bounds it from below: the smaller of the two is the baseline.
            let empty = rss_empty.map_or(st.rss_fresh, |e| e.min(st.rss_fresh));
            row(
                &format!("fault {name}: server RSS after [MiB]"),
                format!("{:.1}", st.rss_after as f64 / 1024.0),
            );
            row(
                &format!("fault {name}: server RSS per conn after [KiB]"),
                format!(
                    "{:.2}",
                    st.rss_after.saturating_sub(empty) as f64 / o.clients as f64
                ),
            );
        }
        let _ = end;
    }
    // After a fault that loses Redis' data every stream starts a new epoch: each subscription
    // must have been told `recovered: false` and then seen events of a new epoch (never the
    // old epoch's numbers again, which the seq checks above would catch).
    let subscriptions: usize = logs.iter().map(|l| l.first_ack.len()).sum();
    let new_epoch = logs
        .iter()
        .flat_map(|l| l.seen.values())
        .filter(|seen| {
            let epochs: HashSet<&str> = seen
                .iter()
                .filter_map(|s| match s {
                    Seen::Event { epoch, .. } => Some(epoch.as_str()),
                    _ => None,
                })
                .collect();
            epochs.len() > 1
        })
        .count();
    row(
        "client x topic that moved to a new epoch",
        format!("{new_epoch} of {subscriptions}"),
    );
    let data_loss = phases
        .iter()
        .any(|(name, ..)| o.data_loss_faults.contains(name));
    if data_loss && (new_epoch != subscriptions || not_recovered < subscriptions) {
        ok = false;
        samples.push(
            "after the data-loss fault not every subscription got recovered:false and a new epoch"
                .to_owned(),
        );
    }
    let still_down = shared.down.load(Ordering::SeqCst);
    row("clients down at the end", still_down.to_string());
    ok &= lost == 0
        && duplicated == 0
        && out_of_order == 0
        && seq_gaps == 0
        && stray_not_recovered == 0
        && still_down == 0
        && published_ok > 0
        && received > 0;
    if stray_not_recovered > 0 {
        let _ = writeln!(
            report,
            "recovered:false after a fault that should not lose data: {stray_not_recovered}"
        );
    }
    for s in samples {
        let _ = writeln!(report, "  {s}");
    }
    let _ = writeln!(report, "result: {}", if ok { "PASS" } else { "FAIL" });
    Ok((report, ok))
}

/// Publishes one event at a time per owned topic, round robin, one every `period`.
async fn publish_loop(
    publisher: Publisher,
    owned: Vec<usize>,
    topics: Arc<Vec<Topic>>,
    period: Duration,
    sent: Arc<Mutex<Vec<Sent>>>,
    stop: CancellationToken,
) {
    let mut next_n = vec![0u64; owned.len()];
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in (0..owned.len()).cycle() {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let t = owned[i];
        let n = next_n[i];
        next_n[i] += 1;
        let body = format!(
            r#"{{"topic":"{}","event":"ITEM_UPDATED","data":{{"entity_id":"1","payload":{{"chaos_n":{n}}},"user_id":"chaos","timestamp":"2026-01-01T00:00:00Z"}}}}"#,
            topics[t].as_str()
        );
        let at = Instant::now();
        let ok = publisher.publish_body(body.into_bytes()).await.is_ok();
        sent.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Sent {
                topic: t,
                n,
                at,
                ok,
            });
    }
}

/// Finds `"chaos_n":N` in an event's text.
fn chaos_n(text: &str) -> Option<u64> {
    let rest = text.split("\"chaos_n\":").nth(1)?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// One client: connect, (re)subscribe with `since`, record, reconnect with full jitter.
#[allow(clippy::too_many_arguments)]
async fn client(
    id: usize,
    addr: SocketAddr,
    token: String,
    mine: Vec<usize>,
    topics: Arc<Vec<Topic>>,
    shared: Arc<Shared>,
    gate: Arc<tokio::sync::Semaphore>,
    o: ChaosOpts,
) -> ClientLog {
    let mut log = ClientLog::default();
    let mut positions: HashMap<usize, StreamPosition> = HashMap::new();
    let index: HashMap<&str, usize> = mine.iter().map(|&t| (topics[t].as_str(), t)).collect();
    let started = AtomicBool::new(false);
    let mut attempt: u32 = 0;
    let mut after_restart = false;
    let mut is_down = false;
    let mut conn_no: u32 = 0;
    loop {
        conn_no += 1;
        if shared.stop.is_cancelled() {
            break;
        }
        let connected = {
            // Only the first connection waits at the gate (the start-up herd).
            let _permit = if started.load(Ordering::Relaxed) {
                None
            } else {
                gate.acquire().await.ok()
            };
            tokio::select! {
                () = shared.stop.cancelled() => break,
                r = conn::connect(addr, &token, None) => r,
            }
        };
        let mut healthy = false;
        let mut code = None;
        if let Ok(mut ws) = connected {
            let mut sent_ok = true;
            let mut asked = HashMap::new();
            for &t in &mine {
                let frame = WSClientMessage::Subscribe {
                    topic: topics[t].clone(),
                    since: positions.get(&t).cloned(),
                    // The seed's client rules: no position in the ack.
                    position: false,
                    presence: None,
                };
                asked.insert(t, positions.get(&t).map(|p| p.seq));
                let Ok(text) = serde_json::to_string(&frame) else {
                    continue;
                };
                if ws.send(Message::text(text)).await.is_err() {
                    sent_ok = false;
                    break;
                }
            }
            let mut acked = HashSet::new();
            loop {
                if !sent_ok {
                    break;
                }
                let msg = tokio::select! {
                    () = shared.stop.cancelled() => {
                        conn::close(ws).await;
                        return log;
                    }
                    m = ws.next() => m,
                };
                match msg {
                    Some(Ok(Message::Text(text))) => match ServerMessage::parse(&text) {
                        Ok(ServerMessage::Event(e)) => {
                            let Some(&t) = index.get(e.topic.as_str()) else {
                                continue;
                            };
                            let (Some(seq), Some(epoch), Some(n)) =
                                (e.seq, e.epoch.clone(), chaos_n(&text))
                            else {
                                continue;
                            };
                            positions.insert(
                                t,
                                StreamPosition {
                                    seq,
                                    epoch: epoch.clone(),
                                },
                            );
                            log.seen.entry(t).or_default().push(Seen::Event {
                                n,
                                epoch,
                                seq,
                                conn: conn_no,
                            });
                        }
                        Ok(ServerMessage::Reply(WSReply::Subscribed {
                            topic, recovered, ..
                        })) => {
                            let Some(&t) = index.get(topic.as_str()) else {
                                continue;
                            };
                            let now = Instant::now();
                            log.first_ack.entry(t).or_insert(now);
                            if recovered == Some(false) {
                                positions.remove(&t);
                                log.seen
                                    .entry(t)
                                    .or_default()
                                    .push(Seen::NotRecovered { at: now });
                            } else {
                                log.seen.entry(t).or_default().push(Seen::Ack {
                                    since: asked.get(&t).copied().flatten(),
                                    recovered,
                                    conn: conn_no,
                                });
                            }
                            acked.insert(t);
                            if acked.len() == mine.len() && !healthy {
                                healthy = true;
                                attempt = 0;
                                after_restart = false;
                                if !started.swap(true, Ordering::Relaxed) {
                                    shared.started.fetch_add(1, Ordering::SeqCst);
                                } else if is_down {
                                    shared.down.fetch_sub(1, Ordering::SeqCst);
                                    shared.change(id, Change::Up);
                                }
                                is_down = false;
                            }
                        }
                        _ => {}
                    },
                    Some(Ok(Message::Close(frame))) => {
                        code = frame.map(|f| u16::from(f.code));
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            }
        }
        if started.load(Ordering::Relaxed) && !is_down {
            is_down = true;
            shared.down.fetch_add(1, Ordering::SeqCst);
            shared.change(id, Change::Down { code });
        }
        if code == Some(1012) {
            after_restart = true;
        }
        // Full jitter: uniform in [0, window).
        let mut window =
            (o.initial_delay_ms * 2f64.powi(attempt.min(30) as i32)).min(o.max_delay_ms);
        if after_restart {
            window = window.min(2.0 * o.initial_delay_ms);
        }
        attempt = attempt.saturating_add(1);
        let delay = rand::rng().random_range(0.0..window.max(1.0));
        tokio::select! {
            () = shared.stop.cancelled() => break,
            () = tokio::time::sleep(Duration::from_secs_f64(delay / 1000.0)) => {}
        }
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_number() {
        assert_eq!(chaos_n(r#"{"payload":{"chaos_n":42},"seq":3}"#), Some(42));
        assert_eq!(chaos_n(r#"{"payload":{}}"#), None);
    }
}
