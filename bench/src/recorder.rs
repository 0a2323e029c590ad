//! Counting deliveries and their publish→deliver latency, cheaply enough for hundreds of
//! thousands of events per second on the same two cores as the server.
//!
//! Publisher and receivers live in one process, so a timestamp is simply nanoseconds since a
//! shared [`Instant`] ([`Clock`]); the publisher writes it into the payload as `"t_ns":N` and
//! a receiver finds that field by substring search instead of parsing the event. Latencies go
//! into a few mutex-guarded HDR histograms (receiver `i` uses shard `i % SHARDS`) that are
//! merged at the end.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;
use tidings_protocol::ServerMessage;

/// Number of histogram shards (lock contention vs. memory: ~0.4 MB each).
const SHARDS: usize = 16;
/// Largest latency a histogram records, in microseconds (longer ones are clamped).
const MAX_LATENCY_US: u64 = 60_000_000;
/// Error texts kept for the report; later ones are only counted.
const MAX_ERROR_SAMPLES: usize = 5;
/// The payload field carrying the publish time.
pub const T_NS_FIELD: &str = "\"t_ns\":";

/// Monotonic nanoseconds since the start of the run, shared by publishers and receivers.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        Self(Instant::now())
    }

    /// Nanoseconds since the start.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latencies {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

/// Delivery counter, latency histograms and error log of one run.
pub struct Recorder {
    clock: Clock,
    received: AtomicU64,
    recording: AtomicBool,
    checked_one: AtomicBool,
    shards: Vec<Mutex<Histogram<u64>>>,
    publish_rtt: Mutex<Histogram<u64>>,
    errors: AtomicU64,
    error_samples: Mutex<Vec<String>>,
}

impl Recorder {
    /// A recorder reading time from `clock`; latencies are only kept while recording.
    pub fn new(clock: Clock) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(
                    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                        .expect("static histogram bounds are valid"),
                )
            })
            .collect();
        Self {
            publish_rtt: Mutex::new(
                Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                    .expect("static histogram bounds are valid"),
            ),
            clock,
            received: AtomicU64::new(0),
            recording: AtomicBool::new(false),
            checked_one: AtomicBool::new(false),
            shards,
            errors: AtomicU64::new(0),
            error_samples: Mutex::new(Vec::new()),
        }
    }

    /// The shared clock.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Starts or stops keeping latency samples (warm-up and drain are not recorded).
    pub fn set_recording(&self, on: bool) {
        self.recording.store(on, Ordering::Release);
    }

    /// Events received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Counts one received text frame and records its latency.
    pub fn on_message(&self, shard: usize, text: &str) {
        let now = self.clock.now_ns();
        let Some(sent) = find_t_ns(text) else {
            // Not a benchmark event (e.g. a late reply): nothing to count.
            return;
        };
        self.received.fetch_add(1, Ordering::Relaxed);
        // Once per run, check the frame really is a protocol event (cheap insurance that the
        // server under test speaks the protocol; the hot path only searches a substring).
        if !self.checked_one.swap(true, Ordering::Relaxed)
            && !matches!(ServerMessage::parse(text), Ok(ServerMessage::Event(_)))
        {
            self.error(format!("delivered frame is not a protocol event: {text}"));
        }
        if self.recording.load(Ordering::Acquire) {
            let us = (now.saturating_sub(sent) / 1000).clamp(1, MAX_LATENCY_US);
            if let Ok(mut h) = self.shards[shard % SHARDS].lock() {
                h.saturating_record(us);
            }
        }
    }

    /// Records how long one `POST /publish` took until its 202 (while recording).
    pub fn on_publish(&self, rtt: std::time::Duration) {
        if self.recording.load(Ordering::Acquire) {
            let us = u64::try_from(rtt.as_micros())
                .unwrap_or(MAX_LATENCY_US)
                .clamp(1, MAX_LATENCY_US);
            if let Ok(mut h) = self.publish_rtt.lock() {
                h.saturating_record(us);
            }
        }
    }

    /// Percentiles of the publish round trips.
    pub fn publish_latencies(&self) -> Latencies {
        self.publish_rtt
            .lock()
            .map(|h| summarize(&h))
            .unwrap_or_default()
    }

    /// Logs one error of the run.
    pub fn error(&self, text: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut samples) = self.error_samples.lock() {
            if samples.len() < MAX_ERROR_SAMPLES {
                samples.push(text);
            }
        }
    }

    /// Errors so far and the first few texts.
    pub fn errors(&self) -> (u64, Vec<String>) {
        let samples = self
            .error_samples
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        (self.errors.load(Ordering::Relaxed), samples)
    }

    /// Percentiles over every recorded sample.
    pub fn latencies(&self) -> Latencies {
        let mut all = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)
            .expect("static histogram bounds are valid");
        for shard in &self.shards {
            if let Ok(h) = shard.lock() {
                let _ = all.add(&*h);
            }
        }
        summarize(&all)
    }
}

fn summarize(h: &Histogram<u64>) -> Latencies {
    if h.is_empty() {
        return Latencies::default();
    }
    Latencies {
        count: h.len(),
        p50: h.value_at_quantile(0.50),
        p99: h.value_at_quantile(0.99),
        max: h.max(),
    }
}

/// The number after `"t_ns":` in a frame, if any.
pub fn find_t_ns(text: &str) -> Option<u64> {
    let start = text.find(T_NS_FIELD)? + T_NS_FIELD.len();
    let digits = text[start..].trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_timestamp() {
        let text = r#"{"topic":"bench:1","event":"UPDATED","data":{"entity_id":"1","payload":{"t_ns":12345,"n":1},"user_id":"u","timestamp":"t"}}"#;
        assert_eq!(find_t_ns(text), Some(12345));
        assert_eq!(find_t_ns(r#"{"t_ns": 7}"#), Some(7));
        assert_eq!(find_t_ns(r#"{"action":"pong"}"#), None);
        assert_eq!(find_t_ns(r#"{"t_ns":"x"}"#), None);
    }

    #[test]
    fn records_and_counts() {
        let rec = Recorder::new(Clock::start());
        rec.set_recording(true);
        let text = r#"{"topic":"bench:1","event":"UPDATED","data":{"entity_id":"1","payload":{"t_ns":0},"user_id":"u","timestamp":"t"}}"#;
        rec.on_message(3, text);
        rec.on_message(4, r#"{"action":"pong"}"#);
        assert_eq!(rec.received(), 1);
        assert_eq!(rec.latencies().count, 1);
        assert_eq!(rec.errors().0, 0);
        rec.on_message(5, r#"{"t_ns":1}"#);
        assert_eq!(rec.received(), 2);
    }
}
