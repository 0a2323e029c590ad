//! The browser `Origin` allow-list of `GET /ws`.
//!
//! Browsers let any web page open a WebSocket to any server and send the user's cookies with
//! it; they do set the `Origin` header, which a page cannot forge. With an allow-list
//! configured ([`Config::with_allowed_origins`](crate::Config::with_allowed_origins)), an
//! upgrade request whose `Origin` is not on it is refused with 403 before the handshake. A
//! request without `Origin` (a non-browser client) is let through: it must still bring a valid
//! token. Without an allow-list (the default, as in the seed) every origin is accepted.

use axum::http::HeaderValue;

/// Normalizes an origin for comparison: ASCII lowercase, no trailing `/`.
pub(crate) fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Whether a request with `origin` may upgrade, given the normalized `allowed` list (`None`:
/// no allow-list).
pub(crate) fn is_allowed(allowed: Option<&[String]>, origin: Option<&HeaderValue>) -> bool {
    let (Some(allowed), Some(origin)) = (allowed, origin) else {
        return true;
    };
    // A header that is not even text matches nothing.
    origin
        .to_str()
        .is_ok_and(|o| allowed.iter().any(|a| *a == normalize(o)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list() {
        let allowed = vec![normalize("https://App.example.com/")];
        let check = |o: &str| is_allowed(Some(&allowed), Some(&HeaderValue::from_str(o).unwrap()));
        assert!(check("https://app.example.com"));
        assert!(check("HTTPS://APP.EXAMPLE.COM"));
        assert!(!check("https://evil.example.com"));
        assert!(!check("http://app.example.com"));
        assert!(!check("null"));
        assert!(is_allowed(Some(&allowed), None));
        assert!(is_allowed(
            None,
            Some(&HeaderValue::from_static("https://x"))
        ));
    }
}
