//! Reconnect delays: exponential backoff with full jitter.
//!
//! The n-th retry after a drop waits a uniformly random time in `[0, min(max, initial · 2ⁿ))`
//! ("full jitter", as in the AWS architecture blog's comparison): a server restart that drops
//! every client at once gets its reconnects spread over the whole window instead of a
//! thundering herd at each step. The randomness is passed in (`Math.random()` in the browser,
//! fixed numbers in tests) so this module stays pure.
//!
//! A planned restart (close 1012) is different: the server was healthy and is expected back
//! within seconds, so the retries that follow it keep full jitter but their window stays at
//! [`RESTART_WINDOW_FACTOR`] × the first window (1 s with the defaults) until a connection is
//! healthy again or [`RESTART_BUDGET_MS`] of such delays have been waited out (a "restart" that
//! lasts longer is an outage, and the normal exponential backoff takes over from there). A
//! client is then back within about one window of the server listening again, instead of the
//! 8–16 s a grown backoff would wait.

/// Default first retry window, in milliseconds (`initialDelayMs`).
pub const DEFAULT_INITIAL_DELAY_MS: f64 = 500.0;
/// Default largest retry window, in milliseconds (`maxDelayMs`).
pub const DEFAULT_MAX_DELAY_MS: f64 = 30_000.0;
/// After a 1012, retry windows are at most this many first windows (full jitter inside).
pub const RESTART_WINDOW_FACTOR: f64 = 2.0;
/// How long (sum of the delays scheduled) the short windows after a 1012 last.
pub const RESTART_BUDGET_MS: f64 = 60_000.0;

/// The retry schedule of one client. Counts attempts since the last healthy connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    initial_ms: f64,
    max_ms: f64,
    attempt: u32,
    /// After a 1012: what is left of [`RESTART_BUDGET_MS`] (`None`: normal backoff).
    restart_budget_ms: Option<f64>,
}

impl Backoff {
    /// A schedule whose first window is `initial_ms` and whose windows never exceed `max_ms`.
    ///
    /// Non-finite or negative values are replaced by the defaults; `max_ms` below `initial_ms`
    /// is raised to `initial_ms`.
    pub fn new(initial_ms: f64, max_ms: f64) -> Self {
        let initial_ms = if initial_ms.is_finite() && initial_ms >= 0.0 {
            initial_ms
        } else {
            DEFAULT_INITIAL_DELAY_MS
        };
        let max_ms = if max_ms.is_finite() && max_ms >= 0.0 {
            max_ms
        } else {
            DEFAULT_MAX_DELAY_MS
        };
        Self {
            initial_ms,
            max_ms: max_ms.max(initial_ms),
            attempt: 0,
            restart_budget_ms: None,
        }
    }

    /// How many retries were scheduled since the last [`Backoff::reset`].
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The window of the next retry: `min(max, initial · 2^attempt)`.
    /// While a planned restart's budget lasts, at most `RESTART_WINDOW_FACTOR · initial`.
    pub fn window_ms(&self) -> f64 {
        // 2^attempt overflows nothing as an f64, and min() caps it.
        let window = (self.initial_ms * 2f64.powi(self.attempt.min(64) as i32)).min(self.max_ms);
        match self.restart_budget_ms {
            Some(left) if left > 0.0 => window.min(self.initial_ms * RESTART_WINDOW_FACTOR),
            _ => window,
        }
    }

    /// Schedules one more retry and returns its delay in milliseconds.
    ///
    /// `random` is a uniform number in `[0, 1)`; values outside are clamped.
    pub fn next_delay_ms(&mut self, random: f64) -> f64 {
        let window = self.window_ms();
        self.attempt = self.attempt.saturating_add(1);
        let delay = full_jitter(window, random);
        if let Some(left) = &mut self.restart_budget_ms {
            *left -= delay.max(self.initial_ms);
        }
        delay
    }

    /// A prompt retry (after 1012 "service restart"): jittered over the first window only,
    /// the attempt count starts over (the server was healthy until it restarted), and the
    /// retries that follow keep short windows for [`RESTART_BUDGET_MS`].
    pub fn restart_delay_ms(&mut self, random: f64) -> f64 {
        self.restart_budget_ms = Some(RESTART_BUDGET_MS);
        self.prompt_delay_ms(random)
    }

    /// A prompt retry that says nothing about the next ones (after a first 4001: retried once
    /// with a fresh token): jittered over the first window, the attempt count starts over.
    pub fn prompt_delay_ms(&mut self, random: f64) -> f64 {
        self.attempt = 1;
        full_jitter(self.initial_ms, random)
    }

    /// Forgets past failures: called once a connection proved healthy (a frame arrived), and
    /// when the browser reports the network back.
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.restart_budget_ms = None;
    }
}

fn full_jitter(window: f64, random: f64) -> f64 {
    let random = if random.is_finite() {
        random.clamp(0.0, 1.0)
    } else {
        0.0
    };
    (window * random).floor()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_double_up_to_the_cap() {
        let mut b = Backoff::new(500.0, 30_000.0);
        let mut windows = Vec::new();
        for _ in 0..10 {
            windows.push(b.window_ms());
            b.next_delay_ms(0.5);
        }
        assert_eq!(
            windows,
            [
                500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0, 30000.0, 30000.0, 30000.0, 30000.0
            ]
        );
        assert_eq!(b.attempt(), 10);
    }

    #[test]
    fn delay_is_full_jitter_within_the_window() {
        let mut b = Backoff::new(500.0, 30_000.0);
        assert_eq!(b.next_delay_ms(0.0), 0.0);
        assert_eq!(b.next_delay_ms(0.5), 500.0); // window 1000
        assert_eq!(b.next_delay_ms(0.999), 1998.0); // window 2000
        // Out-of-range randomness cannot leave the window.
        assert_eq!(b.next_delay_ms(7.0), 4000.0);
        assert_eq!(b.next_delay_ms(-1.0), 0.0);
        assert_eq!(b.next_delay_ms(f64::NAN), 0.0);
    }

    #[test]
    fn many_attempts_do_not_overflow() {
        let mut b = Backoff::new(500.0, 30_000.0);
        for _ in 0..10_000 {
            assert!(b.next_delay_ms(0.99) < 30_000.0);
        }
    }

    #[test]
    fn reset_and_restart() {
        let mut b = Backoff::new(100.0, 1000.0);
        for _ in 0..5 {
            b.next_delay_ms(0.5);
        }
        b.reset();
        assert_eq!(b.window_ms(), 100.0);
        for _ in 0..5 {
            b.next_delay_ms(0.5);
        }
        assert!(b.restart_delay_ms(0.99) < 100.0);
        assert_eq!(b.attempt(), 1);
    }

    #[test]
    fn after_a_restart_windows_stay_short_until_the_budget_is_spent() {
        let mut b = Backoff::new(500.0, 30_000.0);
        for _ in 0..6 {
            b.next_delay_ms(0.5); // a grown backoff: window 32 s → 30 s
        }
        assert!(b.restart_delay_ms(0.99) < 500.0);
        // The server is still down: connection refused, again and again.
        let mut waited = 0.0;
        while waited < RESTART_BUDGET_MS - 1000.0 {
            assert_eq!(b.window_ms(), 1000.0);
            let d = b.next_delay_ms(0.99);
            assert!(d < 1000.0, "{d}");
            waited += d.max(500.0);
        }
        // An outage, not a restart: the exponential backoff resumes.
        for _ in 0..3 {
            b.next_delay_ms(0.5);
        }
        assert!(b.window_ms() > 1000.0);
        // A healthy connection ends the restart mode too.
        b.restart_delay_ms(0.5);
        b.reset();
        for _ in 0..5 {
            b.next_delay_ms(0.5);
        }
        assert_eq!(b.window_ms(), 16_000.0);
    }

    #[test]
    fn a_prompt_retry_does_not_keep_the_windows_short() {
        let mut b = Backoff::new(500.0, 30_000.0);
        b.prompt_delay_ms(0.5);
        for _ in 0..3 {
            b.next_delay_ms(0.5);
        }
        assert_eq!(b.window_ms(), 8000.0);
    }

    #[test]
    fn bad_settings_fall_back() {
        let b = Backoff::new(f64::NAN, -3.0);
        assert_eq!(b.window_ms(), DEFAULT_INITIAL_DELAY_MS);
        let b = Backoff::new(2000.0, 10.0);
        assert_eq!(b.window_ms(), 2000.0);
    }
}
