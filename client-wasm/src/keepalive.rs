//! Keepalive decisions: when to send `{"action":"ping"}` and when a silent socket is dead.
//!
//! A ping goes out every `ping_interval_ms`. After a ping, any frame from the server (the pong,
//! or an event that was already on its way) proves the connection alive; if none arrives
//! within `pong_timeout_ms`, the socket is dead and the client reconnects.
//!
//! Everything is judged by elapsed wall-clock time (`Date.now()` in the browser), never by
//! counting timer ticks: background tabs throttle timers to once a minute or less, so a tick
//! may come very late. A late tick must not cause a false disconnect: when the timer that was
//! to check a pong fires more than a pong timeout after it was due, the page itself was
//! suspended and the pong may be queued behind the timer, so the client sends a fresh ping
//! and waits a full timeout again instead of declaring the socket dead.

/// Default ping interval, in milliseconds (`pingIntervalMs`).
pub const DEFAULT_PING_INTERVAL_MS: f64 = 30_000.0;
/// Default pong timeout, in milliseconds (`pongTimeoutMs`).
pub const DEFAULT_PONG_TIMEOUT_MS: f64 = 10_000.0;

/// What a timer tick asks the caller to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tick {
    /// Send a ping, then call [`Keepalive::ping_sent`].
    Ping,
    /// The socket is dead: close it and reconnect.
    Dead,
    /// Nothing; tick again at the given time (ms, same clock as `now`).
    WaitUntil(f64),
}

/// The keepalive state of one open socket.
#[derive(Debug, Clone, PartialEq)]
pub struct Keepalive {
    interval_ms: f64,
    timeout_ms: f64,
    last_ping_at: f64,
    /// When the unanswered ping was sent.
    outstanding: Option<f64>,
    /// When the current timer is due.
    due_at: f64,
}

fn positive_or(v: f64, default: f64) -> f64 {
    if v.is_finite() && v > 0.0 { v } else { default }
}

impl Keepalive {
    /// Starts the keepalive of a socket that opened at `now`. Returns when to tick first.
    pub fn start(interval_ms: f64, timeout_ms: f64, now: f64) -> (Self, f64) {
        let interval_ms = positive_or(interval_ms, DEFAULT_PING_INTERVAL_MS);
        let due_at = now + interval_ms;
        let k = Self {
            interval_ms,
            timeout_ms: positive_or(timeout_ms, DEFAULT_PONG_TIMEOUT_MS),
            last_ping_at: now,
            outstanding: None,
            due_at,
        };
        (k, due_at)
    }

    /// Whether a ping is waiting for an answer.
    pub fn awaiting_pong(&self) -> bool {
        self.outstanding.is_some()
    }

    /// Any frame arrived at `now`: the connection is alive.
    pub fn frame_received(&mut self, _now: f64) {
        self.outstanding = None;
    }

    /// A ping was sent at `now`. Returns when to tick next (the pong deadline).
    pub fn ping_sent(&mut self, now: f64) -> f64 {
        self.last_ping_at = now;
        self.outstanding = Some(now);
        self.due_at = now + self.timeout_ms;
        self.due_at
    }

    /// The timer fired at `now`.
    pub fn tick(&mut self, now: f64) -> Tick {
        let late_by = now - self.due_at;
        match self.outstanding {
            Some(sent_at) if now - sent_at >= self.timeout_ms => {
                if late_by > self.timeout_ms {
                    // The page was suspended: the pong may be queued behind this tick.
                    Tick::Ping
                } else {
                    Tick::Dead
                }
            }
            Some(sent_at) => self.wait_until(sent_at + self.timeout_ms),
            None if now - self.last_ping_at >= self.interval_ms => Tick::Ping,
            None => self.wait_until(self.last_ping_at + self.interval_ms),
        }
    }

    /// The network came back or the page became visible: check liveness now. Returns
    /// `true` when the caller should ping (no ping is already waiting for its pong).
    pub fn check_now(&self) -> bool {
        self.outstanding.is_none()
    }

    fn wait_until(&mut self, at: f64) -> Tick {
        self.due_at = at;
        Tick::WaitUntil(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_every_interval_while_answered() {
        let (mut k, due) = Keepalive::start(30_000.0, 10_000.0, 0.0);
        assert_eq!(due, 30_000.0);
        // Early tick (timers may fire a little early): wait for the rest.
        assert_eq!(k.tick(29_000.0), Tick::WaitUntil(30_000.0));
        assert_eq!(k.tick(30_000.0), Tick::Ping);
        assert_eq!(k.ping_sent(30_000.0), 40_000.0);
        assert!(k.awaiting_pong());
        k.frame_received(30_050.0);
        assert_eq!(k.tick(40_000.0), Tick::WaitUntil(60_000.0));
        assert_eq!(k.tick(60_000.0), Tick::Ping);
    }

    #[test]
    fn no_pong_within_the_timeout_is_dead() {
        let (mut k, _) = Keepalive::start(30_000.0, 10_000.0, 0.0);
        assert_eq!(k.tick(30_000.0), Tick::Ping);
        k.ping_sent(30_000.0);
        assert_eq!(k.tick(35_000.0), Tick::WaitUntil(40_000.0));
        assert_eq!(k.tick(40_001.0), Tick::Dead);
    }

    #[test]
    fn a_throttled_timer_does_not_cause_a_false_disconnect() {
        let (mut k, _) = Keepalive::start(30_000.0, 10_000.0, 0.0);
        k.tick(30_000.0);
        k.ping_sent(30_000.0);
        // The tick due at 40 s fires at 95 s (background tab): ping again instead of dying.
        assert_eq!(k.tick(95_000.0), Tick::Ping);
        assert_eq!(k.ping_sent(95_000.0), 105_000.0);
        // The queued pong is then delivered.
        k.frame_received(95_001.0);
        assert_eq!(k.tick(105_000.0), Tick::WaitUntil(125_000.0));
        // But a timely tick after a real silence still detects the dead socket.
        assert_eq!(k.tick(125_000.0), Tick::Ping);
        k.ping_sent(125_000.0);
        assert_eq!(k.tick(135_500.0), Tick::Dead);
    }

    #[test]
    fn check_now_only_when_no_ping_is_pending() {
        let (mut k, _) = Keepalive::start(30_000.0, 10_000.0, 0.0);
        assert!(k.check_now());
        k.ping_sent(1_000.0);
        assert!(!k.check_now());
        k.frame_received(1_010.0);
        assert!(k.check_now());
    }

    #[test]
    fn bad_settings_fall_back() {
        let (k, due) = Keepalive::start(f64::NAN, -1.0, 0.0);
        assert_eq!(due, DEFAULT_PING_INTERVAL_MS);
        assert_eq!(k.timeout_ms, DEFAULT_PONG_TIMEOUT_MS);
    }
}
