//! The connection's clock: server pings, the dead-peer timeout and the token's expiry.
//!
//! The server sends a WebSocket Ping frame every ping interval. Any inbound frame (a message,
//! a Pong, a Ping) proves the peer alive; a connection that sent nothing for the pong timeout
//! is closed with 4004 (no pong) and dropped, which removes peers that vanished without a FIN
//! long before TCP keepalive would. A connection whose token expires (its `exp` plus the
//! leeway passes) is closed with 4002 (token expired) so that the client reconnects with a
//! fresh token, unless it sent a `refresh` with a newer token first, which moves that deadline
//! ([`Heartbeat::set_token_exp`]). One timer per connection serves all three: the reader sleeps until the
//! earliest of them and asks [`Heartbeat::on_deadline`] what is due.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// The instant a token with `exp` (seconds since the Unix epoch) stops being valid, `leeway`
/// included; `None` when it is beyond what `Instant` can represent (as good as never).
fn expiry(now: Instant, token_exp: u64, leeway: Duration) -> Option<Instant> {
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let ends = Duration::from_secs(token_exp).saturating_add(leeway);
    now.checked_add(ends.saturating_sub(unix_now))
}

/// What the reader has to do when its timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Nothing yet (the timer fired early or traffic moved a deadline).
    Nothing,
    /// Send a Ping frame.
    Ping,
    /// No inbound frame within the pong timeout: close with 4004.
    NoPong,
    /// The token expired: close with 4002.
    TokenExpired,
}

/// The heartbeat settings: the config's heartbeat group, read as it is.
pub(crate) use crate::config::Heartbeat as HeartbeatSettings;

/// One connection's deadlines (see the module docs).
#[derive(Debug)]
pub(crate) struct Heartbeat {
    last_seen: Instant,
    next_ping: Instant,
    expires: Option<Instant>,
}

impl Heartbeat {
    /// `token_exp` is the token's `exp` (seconds since the Unix epoch); the connection may live
    /// until `exp + leeway`.
    pub(crate) fn new(
        settings: &HeartbeatSettings,
        now: Instant,
        token_exp: u64,
        leeway: Duration,
    ) -> Self {
        Self {
            last_seen: now,
            next_ping: now + settings.ping_interval,
            expires: expiry(now, token_exp, leeway),
        }
    }

    /// Moves the token deadline to a refreshed token's `exp` (plus `leeway`). The reader's
    /// timer may still fire at the old deadline; [`Heartbeat::on_deadline`] then finds nothing
    /// due and the timer is reset to the new one.
    pub(crate) fn set_token_exp(&mut self, now: Instant, token_exp: u64, leeway: Duration) {
        self.expires = expiry(now, token_exp, leeway);
    }

    /// Records inbound traffic at `now`.
    pub(crate) fn seen(&mut self, now: Instant) {
        self.last_seen = now;
    }

    /// When the reader must next call [`Heartbeat::on_deadline`].
    pub(crate) fn deadline(&self, settings: &HeartbeatSettings) -> Instant {
        let dead = self.last_seen + settings.pong_timeout;
        let next = self.next_ping.min(dead);
        self.expires.map_or(next, |e| next.min(e))
    }

    /// What is due at `now` (the most severe first).
    pub(crate) fn on_deadline(&mut self, settings: &HeartbeatSettings, now: Instant) -> Due {
        if self.expires.is_some_and(|e| now >= e) {
            return Due::TokenExpired;
        }
        if now >= self.last_seen + settings.pong_timeout {
            return Due::NoPong;
        }
        if now >= self.next_ping {
            self.next_ping = now + settings.ping_interval;
            return Due::Ping;
        }
        Due::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: HeartbeatSettings = HeartbeatSettings {
        ping_interval: Duration::from_secs(25),
        pong_timeout: Duration::from_secs(60),
    };

    fn far_exp() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600
    }

    #[test]
    fn pings_then_drops_a_silent_peer() {
        let t0 = Instant::now();
        let mut h = Heartbeat::new(&S, t0, far_exp(), Duration::ZERO);
        assert_eq!(h.deadline(&S), t0 + S.ping_interval);
        assert_eq!(h.on_deadline(&S, t0 + Duration::from_secs(1)), Due::Nothing);
        assert_eq!(h.on_deadline(&S, t0 + S.ping_interval), Due::Ping);
        assert_eq!(h.on_deadline(&S, t0 + Duration::from_secs(50)), Due::Ping);
        // Traffic moves the dead-peer deadline.
        h.seen(t0 + Duration::from_secs(55));
        assert_eq!(
            h.on_deadline(&S, t0 + Duration::from_secs(61)),
            Due::Nothing
        );
        assert_eq!(
            h.on_deadline(&S, t0 + Duration::from_secs(115)),
            Due::NoPong
        );
    }

    #[test]
    fn expiry_is_exp_plus_leeway() {
        let t0 = Instant::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut h = Heartbeat::new(&S, t0, unix + 2, Duration::from_secs(3));
        let deadline = h.deadline(&S);
        assert!(deadline > t0 + Duration::from_secs(3) && deadline <= t0 + Duration::from_secs(5));
        assert_eq!(h.on_deadline(&S, deadline), Due::TokenExpired);
        // A refresh moves the deadline: the old one finds nothing due, the new one expires.
        let mut r = Heartbeat::new(&S, t0, unix + 2, Duration::ZERO);
        let old = r.deadline(&S);
        r.set_token_exp(t0, unix + 40, Duration::ZERO);
        assert_eq!(r.on_deadline(&S, old), Due::Nothing);
        assert_eq!(
            r.on_deadline(&S, t0 + Duration::from_secs(10)),
            Due::Nothing
        );
        assert_eq!(
            r.on_deadline(&S, t0 + Duration::from_secs(40)),
            Due::TokenExpired
        );
        // An already expired token (possible within the leeway) is due at once.
        let mut h = Heartbeat::new(&S, t0, unix - 10, Duration::ZERO);
        assert_eq!(h.on_deadline(&S, t0), Due::TokenExpired);
    }
}
