//! The server under test: either spawned by the tool (`--spawn tidings|node`) or an already
//! running process given by pid and address.
//!
//! A spawned server gets a fresh random `JWT_SECRET` and `BIND=127.0.0.1:0`; the tool reads
//! the port from the `... listening on http://127.0.0.1:PORT` line both servers print, and
//! kills the process when the scenario is done (also if the tool fails half-way:
//! `kill_on_drop`). The child inherits the tool's raised open-file limit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use rand::Rng;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::procfs::ProcStats;

/// How long a spawned server may take to print its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Which server implementation to spawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// `target/release/tidings` (build it with `cargo build -p tidings-server --release`).
    Tidings,
    /// `node bench/peers/ws-server.mjs` (install with `npm ci` in `bench/peers`).
    Node,
}

impl Kind {
    /// Short name used in result tables.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tidings => "tidings",
            Kind::Node => "node-ws",
        }
    }
}

/// Where the servers' executables are.
#[derive(Debug, Clone)]
pub struct Programs {
    /// Path of the `tidings` binary.
    pub tidings_bin: PathBuf,
    /// Path of the Node peer's script.
    pub node_script: PathBuf,
}

/// A server the scenarios drive.
pub struct Server {
    /// Name for the result table.
    pub name: String,
    /// Its `host:port`.
    pub addr: SocketAddr,
    /// Its secret, to mint tokens.
    pub secret: String,
    /// Its `/proc` reader.
    pub stats: ProcStats,
    child: Option<Child>,
}

impl Server {
    /// Starts a server of `kind` and waits for its listening line.
    ///
    /// # Errors
    /// When the program is missing, exits early or prints no listening line in time.
    pub async fn spawn(kind: Kind, programs: &Programs) -> Result<Self> {
        let secret: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(48)
            .map(char::from)
            .collect();
        let mut cmd = match kind {
            Kind::Tidings => {
                if !programs.tidings_bin.exists() {
                    bail!(
                        "{} not found: run `cargo build -p tidings-server --release` first",
                        programs.tidings_bin.display()
                    );
                }
                let mut c = Command::new(&programs.tidings_bin);
                // Per-connection log lines would cost the server CPU we are measuring.
                if std::env::var_os("RUST_LOG").is_none() {
                    c.env("RUST_LOG", "warn");
                }
                // The benchmark's publisher is trusted and publishes flat out: the
                // per-publisher rate limit (1,000/s by default) would measure the limiter.
                if std::env::var_os("PUBLISH_RATE").is_none() {
                    c.env("PUBLISH_RATE", "4000000000")
                        .env("PUBLISH_BURST", "4000000000");
                }
                // Every simulated client connects from loopback: the per-address limits
                // (2,048 sockets, 100 handshakes/s) would refuse the swarm.
                if std::env::var_os("MAX_CONNECTIONS_PER_IP").is_none() {
                    c.env("MAX_CONNECTIONS_PER_IP", "0")
                        .env("HANDSHAKE_RATE_PER_IP", "0");
                }
                c
            }
            Kind::Node => {
                let mut c = Command::new("node");
                c.arg(&programs.node_script);
                c
            }
        };
        cmd.env("JWT_SECRET", &secret)
            .env("BIND", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting the {} server", kind.name()))?;
        let pid = child.id().context("server exited at once")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(STARTUP_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = parse_listening_line(&line) {
                    return Ok(addr);
                }
            }
            bail!("server closed stdout without a listening line")
        })
        .await
        .context("server printed no listening line in time")??;
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            name: kind.name().to_owned(),
            addr,
            secret,
            stats: ProcStats::new(pid)?,
            child: Some(child),
        })
    }

    /// A server started by someone else.
    ///
    /// # Errors
    /// When no process `pid` exists.
    pub fn attach(name: String, pid: u32, addr: SocketAddr, secret: String) -> Result<Self> {
        Ok(Self {
            name,
            addr,
            secret,
            stats: ProcStats::new(pid)?,
            child: None,
        })
    }

    /// Stops a spawned server (SIGKILL: the scenario is over, nothing to drain).
    pub async fn stop(mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill().await;
        }
    }

    /// Whether a spawned server is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }
}

/// Finds `http://HOST:PORT` in a `... listening on http://HOST:PORT` line.
fn parse_listening_line(line: &str) -> Option<SocketAddr> {
    let rest = line.split("listening on http://").nth(1)?;
    let addr = rest.split(['/', ' ']).next()?;
    addr.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines() {
        assert_eq!(
            parse_listening_line("tidings listening on http://127.0.0.1:4321"),
            Some("127.0.0.1:4321".parse().unwrap())
        );
        assert_eq!(
            parse_listening_line("ws-server listening on http://127.0.0.1:80/ now"),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(parse_listening_line("starting"), None);
    }
}
