//! Many subscribed connections at once: opened with bounded concurrency, then either held
//! idle or turned into receivers that timestamp every event they get.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use futures_util::{StreamExt, stream};
use tidings_protocol::Topic;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::conn::{self, SourceAddrs, Ws};
use crate::recorder::Recorder;
use crate::token::Minter;

/// How to open a swarm.
#[derive(Debug, Clone)]
pub struct SwarmSpec {
    /// Number of connections.
    pub conns: usize,
    /// Connection `n` subscribes to `topics[n % topics.len()]`.
    pub topics: Vec<Topic>,
    /// Connections being opened at the same time.
    pub concurrency: usize,
    /// Source address spreading.
    pub sources: SourceAddrs,
    /// Whether each connection subscribes (and waits for the ack) after connecting.
    pub subscribe: bool,
}

/// The topic names `bench:0` … `bench:{n-1}`.
pub fn bench_topics(n: usize) -> Result<Vec<Topic>> {
    bench_topics_from(0, n)
}

/// The topic names `bench:{first}` … `bench:{first+n-1}` (several tool processes on one
/// cluster each take their own range, so that each knows every subscriber of its topics).
pub fn bench_topics_from(first: usize, n: usize) -> Result<Vec<Topic>> {
    (first..first + n.max(1))
        .map(|i| Topic::new(format!("bench:{i}")).context("topic name"))
        .collect()
}

/// Opens `spec.conns` connections, each subscribed (ack received) to its topic.
///
/// # Errors
/// The first connection that fails: a half-open swarm would measure the wrong thing.
pub async fn open(server: SocketAddr, minter: &Minter, spec: &SwarmSpec) -> Result<Vec<Ws>> {
    open_on(&[server], minter, spec).await
}

/// Like [`open`], over several nodes of a cluster: connection `n` (on topic `n % topics`)
/// goes to `servers[(n / topics) % servers.len()]`, so every topic has subscribers on every
/// node (a single node gives [`open`]).
///
/// # Errors
/// As [`open`].
pub async fn open_on(servers: &[SocketAddr], minter: &Minter, spec: &SwarmSpec) -> Result<Vec<Ws>> {
    anyhow::ensure!(!servers.is_empty(), "no server to connect to");
    let opened = AtomicU64::new(0);
    let report_every = (spec.conns / 10).max(1) as u64;
    let results: Vec<Result<Ws>> = stream::iter(0..spec.conns)
        .map(|n| {
            let opened = &opened;
            async move {
                let token = minter.subscriber(n)?;
                let source = spec.sources.for_conn(n)?;
                let topic = &spec.topics[n % spec.topics.len()];
                let server = servers[(n / spec.topics.len()) % servers.len()];
                let mut ws = conn::connect(server, &token, source)
                    .await
                    .with_context(|| format!("connection {n}"))?;
                if spec.subscribe {
                    conn::subscribe(&mut ws, topic)
                        .await
                        .with_context(|| format!("connection {n}"))?;
                }
                let done = opened.fetch_add(1, Ordering::Relaxed) + 1;
                if done % report_every == 0 {
                    eprintln!("  {done}/{} connected", spec.conns);
                }
                Ok(ws)
            }
        })
        .buffer_unordered(spec.concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// Holds a connection open without traffic until `stop`, still reading so that control
/// frames (server pings) are answered. Returns an error text if the server closed it.
pub async fn hold_idle(mut ws: Ws, stop: CancellationToken) -> Option<String> {
    // Registered once: a fresh `cancelled()` per message would lock the token's shared waiter
    // list twice per message, and thousands of receivers contend on that one lock.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            // The run is over: close politely so the server frees the connection.
            _ = &mut stopped => {
                let _ = ws.close(None).await;
                return None;
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Close(frame))) => return Some(format!("server closed: {frame:?}")),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Some(format!("read error: {e}")),
                None => return Some("connection ended".to_owned()),
            }
        }
    }
}

/// Receives events until `stop`, recording each one's publish→deliver latency.
///
/// A receiver given `parked_until` does not read until that token fires: its events wait in
/// the kernel's socket buffer (a few KiB per subscriber over a bounded run) and are only
/// counted, not timed, when it drains them. The server does the same work for it, but the
/// tool does not spend CPU on it during the measurement.
pub async fn receive(
    mut ws: Ws,
    recorder: Arc<Recorder>,
    shard: usize,
    parked_until: Option<CancellationToken>,
    stop: CancellationToken,
) {
    // Registered once (see `hold_idle`).
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    if let Some(parked) = parked_until {
        tokio::select! {
            _ = parked.cancelled() => {}
            _ = &mut stopped => {
                let _ = ws.close(None).await;
                return;
            }
        }
    }
    loop {
        tokio::select! {
            // Checked first so a stopped run does not keep counting a backlog.
            biased;
            _ = &mut stopped => {
                let _ = ws.close(None).await;
                return;
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => recorder.on_message(shard, &text),
                Some(Ok(Message::Close(frame))) => {
                    recorder.error(format!("server closed a subscriber: {frame:?}"));
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    recorder.error(format!("subscriber read error: {e}"));
                    return;
                }
                None => {
                    recorder.error("subscriber connection ended".to_owned());
                    return;
                }
            }
        }
    }
}
