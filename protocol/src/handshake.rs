//! How a client hands its token to `GET /ws`: in the URL (`?token=`, the seed's way) or, kept
//! out of URLs (and so out of proxy access logs and the browser console), as a WebSocket
//! subprotocol.
//!
//! A browser's `new WebSocket(url, protocols)` cannot set headers, but it can offer
//! subprotocols, which travel in the `Sec-WebSocket-Protocol` request header. A tidings client
//! offers two: the marker [`SUBPROTOCOL`] (`tidings`) and the token itself as
//! [`TOKEN_SUBPROTOCOL_PREFIX`] followed by the JWT (`tidings.token.eyJ…`). A JWT is three
//! base64url segments joined by `.`, all characters a subprotocol name may hold (an HTTP
//! `token`, RFC 6455 §4.1), so it is sent as it is (Kubernetes base64url-encodes its bearer
//! tokens in `base64url.bearer.authorization.k8s.io.<token>` because its tokens need not be
//! JWTs). The server reads the token from there and answers with the marker only, never the
//! token: a browser fails a handshake whose answer names a subprotocol it did not offer, or
//! none when it offered some, so the marker must be offered alongside.

/// The subprotocol a tidings client offers and the server echoes: it names the protocol and
/// carries no secret.
pub const SUBPROTOCOL: &str = "tidings";

/// The prefix of the subprotocol that carries the token: `tidings.token.<JWT>`.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "tidings.token.";

/// The query parameter of `GET /ws` that carries the token (the seed's way, still accepted).
pub const TOKEN_QUERY_PARAM: &str = "token";

/// The subprotocol that carries `token`, or `None` when the token holds a character a
/// subprotocol name cannot (any JWT fits).
pub fn token_subprotocol(token: &str) -> Option<String> {
    (!token.is_empty() && token.bytes().all(is_token_char))
        .then(|| format!("{TOKEN_SUBPROTOCOL_PREFIX}{token}"))
}

/// The token among the offered subprotocols (the first `tidings.token.` entry), if any.
pub fn token_from_subprotocols<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    offered
        .into_iter()
        .find_map(|p| p.trim().strip_prefix(TOKEN_SUBPROTOCOL_PREFIX))
}

/// An HTTP `tchar` (RFC 9110 §5.6.2): what a subprotocol name is made of.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwt_round_trips_through_a_subprotocol() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln-_";
        let offered = token_subprotocol(jwt).unwrap();
        assert_eq!(offered, format!("tidings.token.{jwt}"));
        assert_eq!(
            token_from_subprotocols([SUBPROTOCOL, offered.as_str()]),
            Some(jwt)
        );
        assert_eq!(token_from_subprotocols([SUBPROTOCOL]), None);
        assert_eq!(token_from_subprotocols(["tidings.tokens"]), None);
    }

    #[test]
    fn tokens_a_subprotocol_cannot_carry_are_refused() {
        for t in ["", "a b", "a,b", "a/b", "a=b", "é", "a\"b"] {
            assert_eq!(token_subprotocol(t), None, "{t:?}");
        }
    }
}
