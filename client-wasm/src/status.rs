//! The connection status machine: what the app sees (`status`), and what the client does after
//! each close.
//!
//! ```text
//! connecting ──open──▶ open ──close the app did not ask for──▶ reconnecting ──open──▶ open
//!      │                 │                                     │  (attempt n, next delay)
//!      │                 └── 4001 twice in a row ─────────────▶ unauthorized (no retries)
//!      └──────── client.close() from any state ───────────────▶ closed
//! ```
//!
//! The reconnect decision uses [`CloseCode::code_is_reconnectable`] from the protocol crate.
//! 4001 ("Unauthorized") is the one refused code that is retried once: the token may simply
//! have expired, so the client asks `getToken` for a fresh one; a second 4001 in a row (no
//! frame received in between) means the app's tokens are refused and the client stops.
//! 1012 ("service restart") is retried promptly (jittered over the first backoff window).

use tidings_protocol::CloseCode;

use crate::backoff::Backoff;

/// The states of [`Status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// First connection attempt.
    Connecting,
    /// The socket is open.
    Open,
    /// Waiting for (or making) a reconnect attempt.
    Reconnecting,
    /// The server refused the token twice in a row; no further attempts.
    Unauthorized,
    /// Closed: by the app, or by a close that must not be retried.
    Closed,
}

impl State {
    /// The name the JavaScript API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Open => "open",
            State::Reconnecting => "reconnecting",
            State::Unauthorized => "unauthorized",
            State::Closed => "closed",
        }
    }
}

/// What the app sees.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The state.
    pub state: State,
    /// Reconnecting: the attempt number (1 for the first retry).
    pub attempt: Option<u32>,
    /// Reconnecting: the delay before this attempt, in milliseconds.
    pub next_delay_ms: Option<f64>,
    /// The code of the last close, if the last connection ended with one.
    pub close_code: Option<u16>,
    /// The reason of the last close (or why the client gave up on a connection).
    pub close_reason: Option<String>,
}

/// What to do after a connection ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Try again after this many milliseconds (fetch a fresh token first).
    Reconnect {
        /// The delay.
        delay_ms: f64,
    },
    /// Do not reconnect.
    Stop,
}

/// The status plus the retry bookkeeping behind it.
#[derive(Debug, Clone)]
pub struct StatusMachine {
    status: Status,
    backoff: Backoff,
    unauthorized_in_a_row: u32,
    has_opened: bool,
}

impl StatusMachine {
    /// A client about to make its first attempt.
    pub fn new(backoff: Backoff) -> Self {
        Self {
            status: Status {
                state: State::Connecting,
                attempt: None,
                next_delay_ms: None,
                close_code: None,
                close_reason: None,
            },
            backoff,
            unauthorized_in_a_row: 0,
            has_opened: false,
        }
    }

    /// The current status.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Whether the client stopped for good (closed or unauthorized).
    pub fn is_final(&self) -> bool {
        matches!(self.status.state, State::Closed | State::Unauthorized)
    }

    /// The socket opened. Returns `true` when this is a reconnect (not the first open).
    ///
    /// The last close's code and reason are cleared: an open connection showing "open (close
    /// 1006)" reads as a problem that is over.
    pub fn opened(&mut self) -> bool {
        let reconnect = self.has_opened;
        self.has_opened = true;
        self.status.state = State::Open;
        self.status.attempt = None;
        self.status.next_delay_ms = None;
        self.status.close_code = None;
        self.status.close_reason = None;
        reconnect
    }

    /// A frame arrived: the connection is healthy and the token was accepted.
    pub fn frame_received(&mut self) {
        self.unauthorized_in_a_row = 0;
        self.backoff.reset();
    }

    /// The server (or the network) closed the socket with `code` and `reason`.
    ///
    /// `random` is uniform in `[0, 1)` (the jitter).
    pub fn closed(&mut self, code: u16, reason: &str, random: f64) -> Decision {
        self.status.close_code = Some(code);
        self.status.close_reason = Some(reason.to_owned());
        if code == CloseCode::Unauthorized.code() {
            self.unauthorized_in_a_row += 1;
            if self.unauthorized_in_a_row >= 2 {
                return self.stop(State::Unauthorized);
            }
            let delay = self.backoff.restart_delay_ms(random);
            return self.retry(delay);
        }
        self.unauthorized_in_a_row = 0;
        if !CloseCode::code_is_reconnectable(code) {
            return self.stop(State::Closed);
        }
        let delay = if code == CloseCode::ServiceRestart.code() {
            self.backoff.restart_delay_ms(random)
        } else {
            self.backoff.next_delay_ms(random)
        };
        self.retry(delay)
    }

    /// The client gave up on a connection attempt or an open socket for `reason` (no pong,
    /// handshake timeout, `getToken` failed, the socket could not be created): retry with
    /// backoff. The 4001 count is kept: a failed token fetch does not make the next 4001 a
    /// first one.
    pub fn failed(&mut self, reason: &str, random: f64) -> Decision {
        self.status.close_code = None;
        self.status.close_reason = Some(reason.to_owned());
        let delay = self.backoff.next_delay_ms(random);
        self.retry(delay)
    }

    /// The app called `close()`.
    pub fn close_requested(&mut self) {
        if !self.is_final() {
            self.status.close_code = Some(CloseCode::Normal.code());
            self.status.close_reason = Some("closed by the client".to_owned());
        }
        self.stop(State::Closed);
    }

    fn retry(&mut self, delay_ms: f64) -> Decision {
        self.status.state = State::Reconnecting;
        self.status.attempt = Some(self.backoff.attempt());
        self.status.next_delay_ms = Some(delay_ms);
        Decision::Reconnect { delay_ms }
    }

    fn stop(&mut self, state: State) -> Decision {
        self.status.state = state;
        self.status.attempt = None;
        self.status.next_delay_ms = None;
        Decision::Stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> StatusMachine {
        StatusMachine::new(Backoff::new(500.0, 30_000.0))
    }

    fn delay(d: Decision) -> f64 {
        match d {
            Decision::Reconnect { delay_ms } => delay_ms,
            Decision::Stop => panic!("expected a reconnect"),
        }
    }

    #[test]
    fn first_open_then_reconnect() {
        let mut m = machine();
        assert_eq!(m.status().state, State::Connecting);
        assert!(!m.opened(), "first open is not a reconnect");
        assert_eq!(m.status().state, State::Open);
        let d = delay(m.closed(1006, "", 0.5));
        assert_eq!(d, 250.0);
        let s = m.status();
        assert_eq!(s.state, State::Reconnecting);
        assert_eq!(s.attempt, Some(1));
        assert_eq!(s.next_delay_ms, Some(250.0));
        assert_eq!(s.close_code, Some(1006));
        assert!(m.opened(), "second open is a reconnect");
        assert_eq!(m.status().attempt, None);
        assert_eq!(m.status().close_code, None, "a reconnect clears the close");
        assert_eq!(m.status().close_reason, None);
    }

    #[test]
    fn backoff_grows_until_a_frame_arrives() {
        let mut m = machine();
        m.opened();
        let d1 = delay(m.closed(1006, "", 0.99));
        m.opened(); // opens, but dies before any frame
        let d2 = delay(m.closed(1011, "internal error", 0.99));
        assert!(d2 > d1);
        assert_eq!(m.status().attempt, Some(2));
        m.opened();
        m.frame_received();
        delay(m.closed(1006, "", 0.99));
        assert_eq!(
            m.status().attempt,
            Some(1),
            "healthy connection resets the backoff"
        );
    }

    #[test]
    fn unauthorized_is_retried_once() {
        let mut m = machine();
        m.opened();
        delay(m.closed(4001, "Unauthorized", 0.1));
        assert_eq!(m.status().state, State::Reconnecting);
        m.opened();
        assert_eq!(m.closed(4001, "Unauthorized", 0.1), Decision::Stop);
        let s = m.status();
        assert_eq!(s.state, State::Unauthorized);
        assert_eq!(s.close_code, Some(4001));
        assert_eq!(s.close_reason.as_deref(), Some("Unauthorized"));
        assert!(m.is_final());
    }

    #[test]
    fn unauthorized_count_resets_on_a_frame_or_another_close() {
        let mut m = machine();
        m.opened();
        delay(m.closed(4001, "", 0.1));
        m.opened();
        m.frame_received();
        delay(m.closed(4001, "", 0.1));
        m.opened();
        delay(m.closed(1006, "", 0.1));
        m.opened();
        delay(m.closed(4001, "", 0.1));
        // A failed token fetch in between does not reset it.
        delay(m.failed("getToken failed", 0.1));
        assert_eq!(m.closed(4001, "", 0.1), Decision::Stop);
    }

    #[test]
    fn terminal_codes_stop() {
        for code in [1000, 1003, 1007, 1008, 4006] {
            let mut m = machine();
            m.opened();
            assert_eq!(m.closed(code, "x", 0.5), Decision::Stop, "{code}");
            assert_eq!(m.status().state, State::Closed);
        }
    }

    #[test]
    fn restart_is_prompt_with_jitter() {
        let mut m = machine();
        m.opened();
        for _ in 0..6 {
            m.closed(1006, "", 0.99);
        }
        let d = delay(m.closed(1012, "service restart", 0.99));
        assert!(d < 500.0, "{d}");
        assert_eq!(delay(m.closed(1012, "", 0.0)), 0.0);
    }

    #[test]
    fn close_requested_is_final() {
        let mut m = machine();
        m.opened();
        m.close_requested();
        assert_eq!(m.status().state, State::Closed);
        assert_eq!(m.status().close_code, Some(1000));
        let mut m = machine();
        m.opened();
        m.closed(4001, "", 0.0);
        m.closed(4001, "", 0.0);
        m.close_requested();
        assert_eq!(
            m.status().close_code,
            Some(4001),
            "keeps the refusal's code"
        );
    }
}
