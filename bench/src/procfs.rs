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
}
