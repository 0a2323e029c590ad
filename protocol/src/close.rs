//! WebSocket close codes the server uses, and what a client should do after each.
//!
//! Codes 1000–1015 are the standard ones of RFC 6455; 4001 is the seed's "Unauthorized";
//! 4002–4006 are tidings additions in the private range. A client decides whether to reconnect
//! with [`CloseCode::is_reconnectable`].

use std::fmt;

/// A close code sent by a tidings server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u16)]
pub enum CloseCode {
    /// 1000: normal closure (the peer asked for it).
    Normal = 1000,
    /// 1001: the server is going away for good (the client may try another server).
    GoingAway = 1001,
    /// 1002: the peer broke the WebSocket protocol.
    ProtocolError = 1002,
    /// 1003: a frame type the server does not accept (binary frames).
    UnsupportedData = 1003,
    /// 1007: a text frame that is not valid UTF-8.
    InvalidPayload = 1007,
    /// 1008: policy violation, e.g. sustained message flooding or a refused `Origin`.
    PolicyViolation = 1008,
    /// 1009: an inbound frame larger than the configured limit.
    MessageTooBig = 1009,
    /// 1011: the server hit an unexpected condition.
    InternalError = 1011,
    /// 1012: the server is restarting; reconnect (with jitter).
    ServiceRestart = 1012,
    /// 1013: try again later. With the Redis broker: the node's pub/sub link broke and events
    /// of a subscribed topic were missed that it cannot replay; reconnect and resubscribe with
    /// `since` (which recovers, or answers `recovered: false`).
    TryAgainLater = 1013,
    /// 4001: the token is missing, invalid or expired at connect time (the seed's code).
    Unauthorized = 4001,
    /// 4002: the token expired during the connection; reconnect with a fresh token.
    TokenExpired = 4002,
    /// 4003: the client did not read fast enough and its outbound queue overflowed.
    SlowConsumer = 4003,
    /// 4004: the client answered no heartbeat within the timeout.
    NoPong = 4004,
    /// 4005: too many connections (in total or for this user).
    TooManyConnections = 4005,
    /// 4006: the server's operator ended the user's session (`POST /admin/disconnect` or a
    /// revocation: logout, a member removed); the client must not reconnect on its own.
    Disconnected = 4006,
}

impl CloseCode {
    /// Every code, in declaration order.
    pub const ALL: [CloseCode; 16] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::UnsupportedData,
        CloseCode::InvalidPayload,
        CloseCode::PolicyViolation,
        CloseCode::MessageTooBig,
        CloseCode::InternalError,
        CloseCode::ServiceRestart,
        CloseCode::TryAgainLater,
        CloseCode::Unauthorized,
        CloseCode::TokenExpired,
        CloseCode::SlowConsumer,
        CloseCode::NoPong,
        CloseCode::TooManyConnections,
        CloseCode::Disconnected,
    ];

    /// The numeric code.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The code for a number, if it is one of ours.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The reason text the server sends with the code.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal closure",
            CloseCode::GoingAway => "going away",
            CloseCode::ProtocolError => "protocol error",
            CloseCode::UnsupportedData => "binary frames are not supported",
            CloseCode::InvalidPayload => "invalid UTF-8",
            CloseCode::PolicyViolation => "policy violation",
            CloseCode::MessageTooBig => "message too big",
            CloseCode::InternalError => "internal error",
            CloseCode::ServiceRestart => "service restart",
            CloseCode::TryAgainLater => "try again later",
            CloseCode::Unauthorized => "Unauthorized",
            CloseCode::TokenExpired => "token expired",
            CloseCode::SlowConsumer => "slow consumer",
            CloseCode::NoPong => "no pong",
            CloseCode::TooManyConnections => "too many connections",
            CloseCode::Disconnected => "disconnected",
        }
    }

    /// Whether a client should reconnect (with backoff) after this close.
    ///
    /// `false` for closes that would repeat on every retry without a change on the client's
    /// side: a refused token (4001: a client fetches a fresh token once, then stops), a session
    /// the operator ended (4006), a policy
    /// violation (1008), an unsupported or invalid frame (1003, 1007) and the normal closure
    /// that a client itself asked for (1000). Everything else (restarts, overload, slow
    /// consumer, expired token, lost heartbeat) is transient.
    pub fn is_reconnectable(self) -> bool {
        !matches!(
            self,
            CloseCode::Normal
                | CloseCode::Unauthorized
                | CloseCode::Disconnected
                | CloseCode::PolicyViolation
                | CloseCode::UnsupportedData
                | CloseCode::InvalidPayload
        )
    }

    /// As [`CloseCode::is_reconnectable`] for any number: unknown codes (including 1005 "no
    /// status" and 1006 "abnormal closure", which browsers report for dropped connections)
    /// are reconnectable.
    pub fn code_is_reconnectable(code: u16) -> bool {
        Self::from_code(code).is_none_or(Self::is_reconnectable)
    }
}

impl From<CloseCode> for u16 {
    fn from(value: CloseCode) -> Self {
        value.code()
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_codes() {
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
        }
        assert_eq!(CloseCode::Unauthorized.code(), 4001);
        assert_eq!(CloseCode::ServiceRestart.code(), 1012);
    }

    #[test]
    fn reconnect_decisions() {
        assert!(!CloseCode::Unauthorized.is_reconnectable());
        assert!(CloseCode::ServiceRestart.is_reconnectable());
        assert!(CloseCode::TokenExpired.is_reconnectable());
        assert!(CloseCode::SlowConsumer.is_reconnectable());
        assert!(CloseCode::code_is_reconnectable(1006));
        assert!(!CloseCode::code_is_reconnectable(1008));
        assert!(!CloseCode::Disconnected.is_reconnectable());
        assert_eq!(CloseCode::from_code(4006), Some(CloseCode::Disconnected));
    }
}
