//! The inbound message rate limit of one connection: a token bucket plus a count of recent
//! violations.
//!
//! Every frame a client sends (data, Ping or Pong) takes one token; tokens refill at a steady
//! rate up to a burst size, so a client resubscribing hundreds of topics right after a
//! reconnect passes while a flood does not. A message arriving with the bucket empty is a
//! violation: it is dropped and answered with `{"error":"Rate limit exceeded"}` (a control
//! frame is not answered). Too many violations within a window means the client ignores those
//! replies, and the connection is closed with 1008.
//! The limiter is plain data owned by the connection's reader, so it needs no lock.

use tokio::time::Instant;

/// The error text sent back for a message dropped by the rate limit.
pub const RATE_LIMIT_EXCEEDED: &str = tidings_protocol::WSError::RATE_LIMIT_EXCEEDED;

/// The limit's settings: the config's rate group, read as it is (never rebuilt per message).
pub(crate) use crate::config::Rate as RateSettings;

/// What to do with one inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Handle it.
    Allow,
    /// Drop it and tell the client.
    Drop,
    /// Drop it and close the connection (1008).
    Close,
}

/// One connection's bucket (see the module docs).
#[derive(Debug)]
pub(crate) struct RateLimiter {
    // f32: it lives in every connection, and a token count needs no more precision.
    tokens: f32,
    refilled: Instant,
    violations: u32,
    window_start: Instant,
}

impl RateLimiter {
    pub(crate) fn new(settings: &RateSettings, now: Instant) -> Self {
        Self {
            tokens: settings.burst as f32,
            refilled: now,
            violations: 0,
            window_start: now,
        }
    }

    /// Accounts for one message arriving at `now`.
    pub(crate) fn check(&mut self, settings: &RateSettings, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens =
            (f64::from(self.tokens) + elapsed * settings.per_second).min(settings.burst) as f32;
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        if now.saturating_duration_since(self.window_start) > settings.window {
            self.window_start = now;
            self.violations = 0;
        }
        self.violations = self.violations.saturating_add(1);
        if self.violations >= settings.max_violations {
            Verdict::Close
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> RateSettings {
        RateSettings {
            per_second: 10.0,
            burst: 5.0,
            max_violations: 3,
            window: Duration::from_secs(10),
        }
    }

    #[test]
    fn burst_then_refill_then_close_on_sustained_abuse() {
        let s = settings();
        let t0 = Instant::now();
        let mut r = RateLimiter::new(&s, t0);
        for _ in 0..5 {
            assert_eq!(r.check(&s, t0), Verdict::Allow);
        }
        assert_eq!(r.check(&s, t0), Verdict::Drop);
        // 100 ms later one token is back.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(r.check(&s, t1), Verdict::Allow);
        assert_eq!(r.check(&s, t1), Verdict::Drop);
        assert_eq!(r.check(&s, t1), Verdict::Close);
    }

    #[test]
    fn violations_are_forgotten_after_the_window() {
        let s = settings();
        let t0 = Instant::now();
        let mut r = RateLimiter::new(&s, t0);
        r.tokens = 0.0;
        assert_eq!(r.check(&s, t0), Verdict::Drop);
        assert_eq!(r.check(&s, t0), Verdict::Drop);
        let later = t0 + Duration::from_secs(11);
        r.tokens = 0.0;
        r.refilled = later;
        assert_eq!(r.check(&s, later), Verdict::Drop);
    }
}
