//! The server's own resource use, read from `/proc/<pid>`: resident memory and CPU time.
//!
//! The load tool shares the machine with the server, so wall-clock rates say as much about
//! the tool as about the server. CPU time charged to the server's process (user + system,
//! all threads) divided by the work done is the number that compares servers fairly.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Reads `/proc/<pid>/status` and `/proc/<pid>/stat` of one process.
#[derive(Debug, Clone)]
pub struct ProcStats {
    pid: u32,
    clock_ticks_per_sec: u64,
}

/// A point-in-time reading of the server's CPU time.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    /// utime in clock ticks.
    user: u64,
    /// stime in clock ticks.
    system: u64,
}

impl ProcStats {
    /// Watches process `pid`; asks `getconf CLK_TCK` for the tick rate (falls back to 100,
    /// the value of every Linux build in common use).
    ///
    /// # Errors
    /// When `/proc/<pid>` does not exist.
    pub fn new(pid: u32) -> Result<Self> {
        let status = PathBuf::from(format!("/proc/{pid}/status"));
        if !status.exists() {
            bail!("no process with pid {pid} (is the server running?)");
        }
        let clock_ticks_per_sec = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100);
        Ok(Self {
            pid,
            clock_ticks_per_sec,
        })
    }

    /// The watched process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Resident set size (`VmRSS`) in KiB.
    ///
    /// # Errors
    /// When the process is gone or the file cannot be parsed.
    pub fn rss_kib(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        text.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no VmRSS in {path}"))
    }

    /// Peak resident set size (`VmHWM`) in KiB.
    ///
    /// # Errors
    /// When the process is gone or the file cannot be parsed.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        text.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no VmHWM in {path}"))
    }

    /// User + system CPU time consumed so far by all threads of the process.
    ///
    /// # Errors
    /// When the process is gone or the file cannot be parsed.
    pub fn cpu(&self) -> Result<CpuSample> {
        let path = format!("/proc/{}/stat", self.pid);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        // The command name (field 2) is in parentheses and may contain spaces: count fields
        // from the last ')'. utime and stime are fields 14 and 15 of the whole line.
        let rest = text
            .rfind(')')
            .map(|i| &text[i + 1..])
            .with_context(|| format!("malformed {path}"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| -> Result<u64> {
            fields
                .get(n - 3)
                .and_then(|f| f.parse().ok())
                .with_context(|| format!("field {n} missing in {path}"))
        };
        Ok(CpuSample {
            user: field(14)?,
            system: field(15)?,
        })
    }

    /// CPU microseconds (user + system) between two samples.
    pub fn cpu_micros(&self, from: CpuSample, to: CpuSample) -> f64 {
        self.user_micros(from, to) + self.system_micros(from, to)
    }

    /// User-mode CPU microseconds between two samples.
    pub fn user_micros(&self, from: CpuSample, to: CpuSample) -> f64 {
        self.ticks_to_micros(to.user.saturating_sub(from.user))
    }

    /// Kernel-mode CPU microseconds between two samples. On loopback this includes much of
    /// the receiving side's TCP processing, which the kernel runs in the sender's context.
    pub fn system_micros(&self, from: CpuSample, to: CpuSample) -> f64 {
        self.ticks_to_micros(to.system.saturating_sub(from.system))
    }

    fn ticks_to_micros(&self, ticks: u64) -> f64 {
        ticks as f64 * 1e6 / self.clock_ticks_per_sec as f64
    }
}

/// CPU ticks all cores spent busy (everything but idle and iowait) since boot, from the
/// `cpu` line of `/proc/stat`.
///
/// # Errors
/// When `/proc/stat` cannot be read or parsed.
pub fn machine_busy_ticks() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| *v)
        .sum();
    Ok(busy)
}

/// TCP segments sent since boot by the whole machine (`OutSegs` of `/proc/net/snmp`).
///
/// Segments per delivery tell how many messages share one write: a message written on its
/// own costs its own segment (and usually an ACK back).
///
/// # Errors
/// When `/proc/net/snmp` cannot be read or parsed.
pub fn tcp_out_segments() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/net/snmp").context("reading /proc/net/snmp")?;
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = tcp
        .next()
        .zip(tcp.next())
        .context("no Tcp lines in /proc/net/snmp")?;
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "OutSegs")
        .and_then(|(_, v)| v.parse().ok())
        .context("no Tcp OutSegs in /proc/net/snmp")
}

/// A measurement window: the server's CPU, the tool's own CPU and the whole machine's busy
/// time at its start, so that its end can say how much CPU *other* processes (parallel
/// compiles on a shared machine) took while we measured.
pub struct Window<'a> {
    server: &'a ProcStats,
    tool: ProcStats,
    server0: CpuSample,
    segments0: u64,
    tool0: CpuSample,
    machine0: u64,
    started: std::time::Instant,
}

/// What a [`Window`] measured.
#[derive(Debug, Clone, Copy)]
pub struct WindowCpu {
    /// Wall-clock seconds.
    pub secs: f64,
    /// Server CPU (user + system), µs.
    pub server_us: f64,
    /// Server CPU in the kernel, µs.
    pub server_sys_us: f64,
    /// The load tool's own CPU, µs.
    pub tool_us: f64,
    /// CPU of every other process on the machine, µs.
    pub others_us: f64,
    /// TCP segments sent on the whole machine (loopback: both directions, ACKs included).
    pub tcp_segments: u64,
}

impl<'a> Window<'a> {
    /// Starts a window on `server`.
    ///
    /// # Errors
    /// When `/proc` cannot be read.
    pub fn start(server: &'a ProcStats) -> Result<Self> {
        let tool = ProcStats::new(std::process::id())?;
        Ok(Self {
            server0: server.cpu()?,
            segments0: tcp_out_segments()?,
            tool0: tool.cpu()?,
            machine0: machine_busy_ticks()?,
            started: std::time::Instant::now(),
            server,
            tool,
        })
    }

    /// Ends the window.
    ///
    /// # Errors
    /// When `/proc` cannot be read (e.g. the server died).
    pub fn end(&self) -> Result<WindowCpu> {
        let server1 = self.server.cpu()?;
        let segments1 = tcp_out_segments()?;
        let tool1 = self.tool.cpu()?;
        let machine1 = machine_busy_ticks()?;
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let server_us = self.server.cpu_micros(self.server0, server1);
        let tool_us = self.tool.cpu_micros(self.tool0, tool1);
        let machine_us = self
            .server
            .ticks_to_micros(machine1.saturating_sub(self.machine0));
        Ok(WindowCpu {
            secs,
            server_us,
            server_sys_us: self.server.system_micros(self.server0, server1),
            tool_us,
            others_us: (machine_us - server_us - tool_us).max(0.0),
            tcp_segments: segments1.saturating_sub(self.segments0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let stats = ProcStats::new(std::process::id()).unwrap();
        assert!(stats.rss_kib().unwrap() > 0);
        let a = stats.cpu().unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = stats.cpu().unwrap();
        assert!(stats.cpu_micros(a, b) >= 0.0);
    }

    #[test]
    fn window_over_own_process() {
        let stats = ProcStats::new(std::process::id()).unwrap();
        let window = Window::start(&stats).unwrap();
        let cpu = window.end().unwrap();
        assert!(cpu.secs > 0.0 && cpu.others_us >= 0.0);
        assert!(tcp_out_segments().is_ok());
    }
}
