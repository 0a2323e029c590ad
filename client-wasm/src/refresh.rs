//! In-band token refresh: when to swap an open connection's token for a fresh one.
//!
//! A tidings server closes a connection with 4002 once its token's `exp` passes. To keep the
//! connection instead, the client reads the `exp` of the token it connected with and, before
//! it passes, asks `getToken` for a new one and sends `{"action":"refresh","token":T}`; the
//! server answers `{"action":"refreshed"}` and the next refresh is scheduled from the new
//! token's `exp`. The refresh happens at [`LIFETIME_FRACTION`] of the remaining lifetime but
//! at most [`MAX_LEAD_MS`] before `exp`: an hour-long token is refreshed a minute before it
//! expires, a short one with a fifth of its life to spare.
//!
//! Nothing is scheduled for a token whose `exp` cannot be read, one already expired by the
//! browser's clock, or after a refresh that did not move `exp` forward (an app whose
//! `getToken` returns a cached token would otherwise refresh in a tight loop): the server's
//! 4002 close and the normal reconnect, which fetches a fresh token, take over.

/// The share of a token's remaining lifetime after which it is refreshed.
pub const LIFETIME_FRACTION: f64 = 0.8;
/// A refresh happens at most this long before `exp`, in milliseconds.
pub const MAX_LEAD_MS: f64 = 60_000.0;
/// The shortest delay before a refresh, in milliseconds (a token about to expire is not
/// refreshed in a burst).
pub const MIN_DELAY_MS: f64 = 1_000.0;

/// The delay from `now_ms` until a token expiring at `exp_ms` (both Unix milliseconds) should
/// be refreshed; `None` when it already expired (or the times are not finite).
pub fn delay_ms(exp_ms: f64, now_ms: f64) -> Option<f64> {
    let remaining = exp_ms - now_ms;
    if !remaining.is_finite() || remaining <= 0.0 {
        return None;
    }
    let delay = (remaining * LIFETIME_FRACTION).max(remaining - MAX_LEAD_MS);
    Some(delay.max(MIN_DELAY_MS))
}

/// The decoded payload (the middle part) of a JWT, as text; `None` when `token` is not three
/// dot-separated parts or the payload is not base64url-encoded UTF-8. Nothing is verified:
/// the client only reads `exp` from it to schedule a refresh.
pub fn jwt_payload(token: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    String::from_utf8(base64url_decode(payload)?).ok()
}

/// Decodes base64url (RFC 4648 §5), with or without `=` padding.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in text.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A single leftover character (6 bits) cannot end a valid encoding.
    (bits < 6).then_some(out)
}

/// The refresh state of one open connection.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRefresh {
    /// When the connection's current token expires (Unix ms), if known.
    exp_ms: Option<f64>,
    /// A refresh was sent and not yet confirmed: the `exp` of the token it carried.
    in_flight: Option<Option<f64>>,
}

impl TokenRefresh {
    /// The state of a connection opened with a token expiring at `exp_ms`.
    pub fn new(exp_ms: Option<f64>) -> Self {
        Self {
            exp_ms,
            in_flight: None,
        }
    }

    /// The delay until the first refresh, from `now_ms`.
    pub fn first_delay(&self, now_ms: f64) -> Option<f64> {
        self.exp_ms.and_then(|exp| delay_ms(exp, now_ms))
    }

    /// A refresh was sent with a token expiring at `exp_ms`.
    pub fn sent(&mut self, exp_ms: Option<f64>) {
        self.in_flight = Some(exp_ms);
    }

    /// The server confirmed the refresh at `now_ms`: the connection now runs on the token
    /// sent. Returns the delay until the next refresh (`None`: schedule nothing).
    pub fn refreshed(&mut self, now_ms: f64) -> Option<f64> {
        // A confirmation without a refresh in flight is not ours: ignore it.
        let new = self.in_flight.take()?;
        let old = std::mem::replace(&mut self.exp_ms, new);
        match (new, old) {
            (Some(new), Some(old)) if new <= old => None,
            (Some(new), _) => delay_ms(new, now_ms),
            (None, _) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_token_is_refreshed_at_80_percent() {
        assert_eq!(delay_ms(10_000.0, 0.0), Some(8_000.0));
        assert_eq!(delay_ms(3_000.0, 500.0), Some(2_000.0));
    }

    #[test]
    fn a_long_token_is_refreshed_a_minute_before_exp() {
        // One hour: 80 % would be 12 minutes early; the lead is capped at 60 s.
        assert_eq!(delay_ms(3_600_000.0, 0.0), Some(3_540_000.0));
        // Exactly where both rules agree: 300 s.
        assert_eq!(delay_ms(300_000.0, 0.0), Some(240_000.0));
    }

    #[test]
    fn expired_or_nearly_expired_tokens() {
        assert_eq!(delay_ms(1_000.0, 1_000.0), None);
        assert_eq!(delay_ms(0.0, 5_000.0), None);
        assert_eq!(delay_ms(f64::NAN, 0.0), None);
        assert_eq!(delay_ms(f64::INFINITY, 0.0), None);
        // Half a second left: not sooner than the minimum delay.
        assert_eq!(delay_ms(500.0, 0.0), Some(MIN_DELAY_MS));
    }

    #[test]
    fn decodes_a_jwt_payload() {
        // {"alg":"HS256","typ":"JWT"} . {"sub":"u1","exp":1764153000} . signature
        let token =
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1MSIsImV4cCI6MTc2NDE1MzAwMH0.c2ln";
        assert_eq!(
            jwt_payload(token).as_deref(),
            Some(r#"{"sub":"u1","exp":1764153000}"#)
        );
        // Every tail length, with and without padding, and the URL-safe characters.
        for (encoded, decoded) in [
            ("", &b""[..]),
            ("Zg", b"f"),
            ("Zg==", b"f"),
            ("Zm8", b"fo"),
            ("Zm9v", b"foo"),
            ("Zm9vYg", b"foob"),
            ("-_8", &[0xfb, 0xff]),
        ] {
            assert_eq!(
                base64url_decode(encoded).as_deref(),
                Some(decoded),
                "{encoded}"
            );
        }
    }

    #[test]
    fn malformed_tokens_have_no_payload() {
        for token in [
            "",
            "not-a-jwt",
            "a.b",
            "a.b.c.d",
            "a.e30+.c",
            "a.e30/.c",
            "a.Z.c",
            "a.gA.c",
        ] {
            assert_eq!(jwt_payload(token), None, "{token}");
        }
    }

    #[test]
    fn each_confirmed_refresh_schedules_the_next() {
        let mut r = TokenRefresh::new(Some(3_000.0));
        assert_eq!(r.first_delay(0.0), Some(2_400.0));
        r.sent(Some(5_400.0));
        assert_eq!(r.refreshed(2_400.0), Some(2_400.0));
        r.sent(Some(7_800.0));
        assert_eq!(r.refreshed(4_800.0), Some(2_400.0));
        // An unsolicited confirmation changes nothing.
        assert_eq!(r.refreshed(5_000.0), None);
    }

    #[test]
    fn a_refresh_that_does_not_extend_schedules_nothing() {
        let mut r = TokenRefresh::new(Some(3_000.0));
        r.sent(Some(3_000.0));
        assert_eq!(r.refreshed(2_400.0), None);
        let mut r = TokenRefresh::new(Some(3_000.0));
        r.sent(None);
        assert_eq!(r.refreshed(2_400.0), None);
        assert_eq!(TokenRefresh::new(None).first_delay(0.0), None);
    }
}
