//! The publish rate limit: one token bucket per publisher (the `sub` of a publish token) for
//! `POST /publish`.
//!
//! A publisher that goes over its rate is answered 429 with `Retry-After` and nothing is
//! published, so one backend (or one leaked publish token) cannot flood every subscriber or
//! fill the history. The table of buckets is bounded too
//! ([`Config::with_max_publishers`](crate::Config::with_max_publishers)): a publisher whose
//! bucket has refilled completely has nothing to remember and is forgotten first; when every
//! tracked publisher is still recent, a new one is refused rather than growing the table.
//! In-process publishing ([`Tidings::publish`](crate::Tidings::publish)) is not limited: the
//! embedding application is trusted.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::Config;

/// The per-publisher buckets (see the module docs).
#[derive(Debug)]
pub(crate) struct PublishLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
    per_second: f64,
    burst: f64,
    max_publishers: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant, per_second: f64, burst: f64) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(burst);
        self.refilled = now;
    }
}

impl PublishLimiter {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            buckets: Mutex::new(HashMap::new()),
            per_second: f64::from(config.publish_rate),
            burst: f64::from(config.publish_burst),
            max_publishers: config.max_publishers,
        }
    }

    /// Takes `events` tokens from `publisher`'s bucket at `now`; `Err(wait)` when it has too
    /// few (nothing is taken), `wait` being when enough will have refilled.
    pub(crate) fn check(&self, publisher: &str, events: u32, now: Instant) -> Result<(), Duration> {
        let need = f64::from(events);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.contains_key(publisher) && buckets.len() >= self.max_publishers {
            // Forget the publishers whose bucket is full again: they are indistinguishable
            // from new ones.
            let (per_second, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| {
                b.refill(now, per_second, burst);
                b.tokens < burst
            });
            if buckets.len() >= self.max_publishers {
                return Err(Duration::from_secs(1));
            }
        }
        let bucket = buckets.entry(publisher.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            refilled: now,
        });
        bucket.refill(now, self.per_second, self.burst);
        if bucket.tokens >= need {
            bucket.tokens -= need;
            Ok(())
        } else {
            let missing = need.min(self.burst) - bucket.tokens;
            Err(Duration::from_secs_f64(
                (missing / self.per_second).max(0.001),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, burst: u32, max: usize) -> PublishLimiter {
        PublishLimiter::new(
            &Config::new("s")
                .with_publish_rate(rate, burst)
                .with_max_publishers(max),
        )
    }

    #[test]
    fn burst_then_rate_per_publisher() {
        let l = limiter(10, 5, 10);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.check("a", 1, t0).is_ok());
        }
        let wait = l.check("a", 1, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(101), "{wait:?}");
        // Another publisher has its own bucket.
        assert!(l.check("b", 1, t0).is_ok());
        // 100 ms later one token is back.
        assert!(l.check("a", 1, t0 + Duration::from_millis(100)).is_ok());
        assert!(l.check("a", 1, t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn the_table_is_bounded() {
        let l = limiter(10, 5, 2);
        let t0 = Instant::now();
        assert!(l.check("a", 1, t0).is_ok());
        assert!(l.check("b", 1, t0).is_ok());
        // Both are recent (buckets not full): a third publisher waits.
        assert!(l.check("c", 1, t0).is_err());
        // Once a's and b's buckets are full again they are forgotten.
        assert!(l.check("c", 1, t0 + Duration::from_secs(1)).is_ok());
    }
}
