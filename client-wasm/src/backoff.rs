//! Reconnect delays: exponential backoff with full jitter.
//!
//! The n-th retry after a drop waits a uniformly random time in `[0, min(max, initial · 2ⁿ))`
//! ("full jitter", as in the AWS architecture blog's comparison): a server restart that drops
//! every client at once gets its reconnects spread over the whole window instead of a
//! thundering herd at each step. The randomness is passed in (`Math.random()` in the browser,
//! fixed numbers in tests) so this module stays pure.

/// Default first retry window, in milliseconds (`initialDelayMs`).
pub const DEFAULT_INITIAL_DELAY_MS: f64 = 500.0;
/// Default largest retry window, in milliseconds (`maxDelayMs`).
pub const DEFAULT_MAX_DELAY_MS: f64 = 30_000.0;

/// The retry schedule of one client. Counts attempts since the last healthy connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    initial_ms: f64,
    max_ms: f64,
    attempt: u32,
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
        }
    }

    /// How many retries were scheduled since the last [`Backoff::reset`].
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The window of the next retry: `min(max, initial · 2^attempt)`.
    pub fn window_ms(&self) -> f64 {
        // 2^attempt overflows nothing as an f64, and min() caps it.
        (self.initial_ms * 2f64.powi(self.attempt.min(64) as i32)).min(self.max_ms)
    }

    /// Schedules one more retry and returns its delay in milliseconds.
    ///
    /// `random` is a uniform number in `[0, 1)`; values outside are clamped.
    pub fn next_delay_ms(&mut self, random: f64) -> f64 {
        let window = self.window_ms();
        self.attempt = self.attempt.saturating_add(1);
        full_jitter(window, random)
    }

    /// A prompt retry (after 1012 "service restart"): jittered over the first window only,
    /// and the attempt count starts over, since the server was healthy until it restarted.
    pub fn restart_delay_ms(&mut self, random: f64) -> f64 {
        self.attempt = 1;
        full_jitter(self.initial_ms, random)
    }

    /// Forgets past failures: called once a connection proved healthy (a frame arrived).
    pub fn reset(&mut self) {
        self.attempt = 0;
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
    fn bad_settings_fall_back() {
        let b = Backoff::new(f64::NAN, -3.0);
        assert_eq!(b.window_ms(), DEFAULT_INITIAL_DELAY_MS);
        let b = Backoff::new(2000.0, 10.0);
        assert_eq!(b.window_ms(), 2000.0);
    }
}
