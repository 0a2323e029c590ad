//! The connection status machine: what the app sees (`status`), and what the client does after
//! each close.
//!
//! ```text
//!  idle ──connect()──▶ connecting ──server answered──▶ open ──close / failure / offline──▶ reconnecting
//! (autoConnect:false)   │  ▲  (retries keep                 ▲                               │  (attempt n,
//!                       │  │   `connecting`)                └──────server answered──────────┘   next delay)
//!                       │  └─ failure before any answer
//!                       ├── 4001 twice in a row (from connecting or reconnecting) ──▶ unauthorized
//!                       │                                       (connect() tries again)
//!                       └── client.close() from any state ─────────────────────────▶ closed (final)
//! ```
//!
//! `open` means the server has answered on this socket: the first frame after the handshake
//! (the client sends a ping at once, so a healthy server answers within a round trip). A
//! completed handshake is not enough: a server that refuses the token completes it and then
//! closes with 4001, and that must never show as `open`. Until a first `open` the state stays
//! `connecting`, whatever the number of attempts; `reconnecting` is only for a client that was
//! open before. The browser's `offline` event leaves `open` at once (the socket is closed and
//! retries pause until `online`, which retries at once with a fresh backoff).
//!
//! The reconnect decision uses [`CloseCode::code_is_reconnectable`] from the protocol crate.
//! 4001 ("Unauthorized") is the one refused code that is retried once: the token may simply
//! have expired, so the client asks `getToken` for a fresh one; a second 4001 in a row (no
//! frame received in between) means the app's tokens are refused and the client stops.
//! 1012 ("service restart") is retried promptly, and the retries after it keep short windows
//! ([`Backoff::restart_delay_ms`]).

use tidings_protocol::CloseCode;

use crate::backoff::Backoff;

/// The states of [`Status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Created with `autoConnect: false`; `connect()` not called yet.
    Idle,
    /// Connecting, and never open yet (every attempt until the server first answered).
    Connecting,
    /// The socket is open and the server has answered on it.
    Open,
    /// Was open before; waiting for (or making) a reconnect attempt, or offline.
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
            State::Idle => "idle",
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
    /// Connecting or reconnecting after a failure: the retry number since the last open (1
    /// for the first retry).
    pub attempt: Option<u32>,
    /// Waiting for a retry: its delay, in milliseconds.
    pub next_delay_ms: Option<f64>,
    /// Connection attempts started since the client was created (0 before the first).
    pub attempts: u32,
    /// The code of the last close, if the last connection ended with one.
    pub close_code: Option<u16>,
    /// The reason of the last close (or why the client gave up on a connection).
    pub close_reason: Option<String>,
}

/// The close reason while the browser is offline.
pub const OFFLINE: &str = "the browser is offline";

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
    /// A socket completed its handshake before (topics resume from their positions).
    has_opened: bool,
    /// The server answered on a socket before (`reconnecting`, not `connecting`).
    has_answered: bool,
}

impl StatusMachine {
    /// A client about to make its first attempt (`Connecting`), or waiting for `connect()`
    /// (`Idle`, when `idle`).
    pub fn new(backoff: Backoff, idle: bool) -> Self {
        Self {
            status: Status {
                state: if idle { State::Idle } else { State::Connecting },
                attempt: None,
                next_delay_ms: None,
                attempts: 0,
                close_code: None,
                close_reason: None,
            },
            backoff,
            unauthorized_in_a_row: 0,
            has_opened: false,
            has_answered: false,
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

    /// Whether the state is `open`.
    pub fn is_open(&self) -> bool {
        self.status.state == State::Open
    }

    /// A connection attempt starts (a token is fetched, then a socket opened): counted in
    /// `attempts`; `idle` becomes `connecting`. The wait for it is over (`nextDelayMs`).
    pub fn attempt_started(&mut self) {
        self.status.attempts = self.status.attempts.saturating_add(1);
        self.status.next_delay_ms = None;
        if self.status.state == State::Idle {
            self.status.state = State::Connecting;
        }
    }

    /// `connect()` after the client stopped on refused tokens (`unauthorized`): the app
    /// presumably has a new one, so the 4001 count and the backoff start over. Returns `false`
    /// when the client is closed for good.
    pub fn restart(&mut self) -> bool {
        match self.status.state {
            State::Closed => false,
            State::Unauthorized => {
                self.unauthorized_in_a_row = 0;
                self.backoff.reset();
                self.status.state = self.waiting_state();
                true
            }
            _ => true,
        }
    }

    /// The WebSocket handshake completed. Returns `true` when a socket opened before (the
    /// topics resume from their positions). The status does not change: see [`Self::answered`].
    pub fn socket_opened(&mut self) -> bool {
        let reconnect = self.has_opened;
        self.has_opened = true;
        reconnect
    }

    /// The server answered on the open socket (its first frame): the state becomes `open`.
    ///
    /// The last close's code and reason are cleared: an open connection showing "open (close
    /// 1006)" reads as a problem that is over.
    pub fn answered(&mut self) {
        self.has_answered = true;
        self.status.state = State::Open;
        self.status.attempt = None;
        self.status.next_delay_ms = None;
        self.status.close_code = None;
        self.status.close_reason = None;
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
            let delay = self.backoff.prompt_delay_ms(random);
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

    /// The browser went offline: the socket is dropped and no retry is scheduled until
    /// [`Self::online`]. `open` is left at once.
    pub fn offline(&mut self) {
        self.status.state = self.waiting_state();
        self.status.next_delay_ms = None;
        self.status.close_code = None;
        self.status.close_reason = Some(OFFLINE.to_owned());
    }

    /// The browser is online again: the backoff starts over and the retry is immediate.
    pub fn online(&mut self) {
        self.backoff.reset();
        self.status.attempt = None;
        self.status.next_delay_ms = None;
    }

    /// The app called `close()`.
    pub fn close_requested(&mut self) {
        if !self.is_final() {
            self.status.close_code = Some(CloseCode::Normal.code());
            self.status.close_reason = Some("closed by the client".to_owned());
        }
        self.stop(State::Closed);
    }

    /// `connecting` until the server first answered, `reconnecting` after.
    fn waiting_state(&self) -> State {
        if self.has_answered {
            State::Reconnecting
        } else {
            State::Connecting
        }
    }

    fn retry(&mut self, delay_ms: f64) -> Decision {
        self.status.state = self.waiting_state();
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
        StatusMachine::new(Backoff::new(500.0, 30_000.0), false)
    }

    /// A socket opened and the server answered on it.
    fn opened(m: &mut StatusMachine) -> bool {
        let reconnect = m.socket_opened();
        m.answered();
        reconnect
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
        assert!(!opened(&mut m), "first open is not a reconnect");
        assert_eq!(m.status().state, State::Open);
        let d = delay(m.closed(1006, "", 0.5));
        assert_eq!(d, 250.0);
        let s = m.status();
        assert_eq!(s.state, State::Reconnecting);
        assert_eq!(s.attempt, Some(1));
        assert_eq!(s.next_delay_ms, Some(250.0));
        assert_eq!(s.close_code, Some(1006));
        assert!(opened(&mut m), "second open is a reconnect");
        assert_eq!(m.status().attempt, None);
        assert_eq!(m.status().close_code, None, "a reconnect clears the close");
        assert_eq!(m.status().close_reason, None);
    }

    #[test]
    fn backoff_grows_until_a_frame_arrives() {
        let mut m = machine();
        opened(&mut m);
        let d1 = delay(m.closed(1006, "", 0.99));
        m.socket_opened(); // opens, but dies before any frame
        let d2 = delay(m.closed(1011, "internal error", 0.99));
        assert!(d2 > d1);
        assert_eq!(m.status().attempt, Some(2));
        opened(&mut m);
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
        opened(&mut m);
        delay(m.closed(4001, "Unauthorized", 0.1));
        assert_eq!(m.status().state, State::Reconnecting);
        opened(&mut m);
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
        opened(&mut m);
        delay(m.closed(4001, "", 0.1));
        opened(&mut m);
        m.frame_received();
        delay(m.closed(4001, "", 0.1));
        opened(&mut m);
        delay(m.closed(1006, "", 0.1));
        opened(&mut m);
        delay(m.closed(4001, "", 0.1));
        // A failed token fetch in between does not reset it.
        delay(m.failed("getToken failed", 0.1));
        assert_eq!(m.closed(4001, "", 0.1), Decision::Stop);
    }

    #[test]
    fn terminal_codes_stop() {
        for code in [1000, 1003, 1007, 1008, 4006] {
            let mut m = machine();
            opened(&mut m);
            assert_eq!(m.closed(code, "x", 0.5), Decision::Stop, "{code}");
            assert_eq!(m.status().state, State::Closed);
        }
    }

    #[test]
    fn restart_is_prompt_with_jitter() {
        let mut m = machine();
        opened(&mut m);
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
        opened(&mut m);
        m.close_requested();
        assert_eq!(m.status().state, State::Closed);
        assert_eq!(m.status().close_code, Some(1000));
        let mut m = machine();
        opened(&mut m);
        m.closed(4001, "", 0.0);
        m.closed(4001, "", 0.0);
        m.close_requested();
        assert_eq!(
            m.status().close_code,
            Some(4001),
            "keeps the refusal's code"
        );
    }

    #[test]
    fn connecting_until_the_server_first_answers() {
        let mut m = machine();
        m.attempt_started();
        assert_eq!(m.status().attempts, 1);
        // The server is down: every retry before a first open stays `connecting`.
        for n in 1..=3 {
            delay(m.closed(1006, "", 0.5));
            assert_eq!(m.status().state, State::Connecting);
            assert_eq!(m.status().attempt, Some(n));
            m.attempt_started();
        }
        assert_eq!(m.status().attempts, 4);
        // A handshake alone is not `open`.
        assert!(!m.socket_opened());
        assert_eq!(m.status().state, State::Connecting);
        m.answered();
        assert_eq!(m.status().state, State::Open);
        delay(m.closed(1006, "", 0.5));
        assert_eq!(m.status().state, State::Reconnecting);
    }

    #[test]
    fn a_refused_token_never_shows_open() {
        let mut m = machine();
        m.attempt_started();
        m.socket_opened();
        delay(m.closed(4001, "Unauthorized", 0.5));
        assert_eq!(m.status().state, State::Connecting);
        m.attempt_started();
        m.socket_opened();
        assert_eq!(m.closed(4001, "Unauthorized", 0.5), Decision::Stop);
        assert_eq!(m.status().state, State::Unauthorized);
        // connect() with a new token starts over.
        assert!(m.restart());
        assert_eq!(m.status().state, State::Connecting);
        m.socket_opened();
        delay(m.closed(4001, "Unauthorized", 0.5));
        assert_eq!(
            m.status().state,
            State::Connecting,
            "the 4001 count started over"
        );
    }

    #[test]
    fn idle_until_connect() {
        let mut m = StatusMachine::new(Backoff::new(500.0, 30_000.0), true);
        assert_eq!(m.status().state, State::Idle);
        assert_eq!(m.status().attempts, 0);
        m.attempt_started();
        assert_eq!(m.status().state, State::Connecting);
        m.close_requested();
        assert!(!m.restart(), "closed is final");
    }

    #[test]
    fn offline_leaves_open_at_once_and_online_starts_over() {
        let mut m = machine();
        opened(&mut m);
        for _ in 0..5 {
            delay(m.closed(1006, "", 0.5));
            m.socket_opened();
        }
        opened(&mut m);
        m.offline();
        let s = m.status();
        assert_eq!(s.state, State::Reconnecting);
        assert_eq!(s.close_reason.as_deref(), Some(OFFLINE));
        assert_eq!(s.next_delay_ms, None);
        m.online();
        assert_eq!(m.status().attempt, None);
        delay(m.closed(1006, "", 0.99));
        assert_eq!(m.status().attempt, Some(1), "the backoff started over");
        // Offline before any open stays `connecting`.
        let mut m = machine();
        m.offline();
        assert_eq!(m.status().state, State::Connecting);
    }
}
