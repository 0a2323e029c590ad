//! JWT authentication: checking the tokens of `/ws` and `POST /publish`, and minting them.
//!
//! Tokens are HS256 only, signed with the configured secret. A token must carry `sub` (the
//! user id, a string) and `exp`; `exp` (and `nbf`, when present) is checked with a leeway of
//! at most 60 seconds. Any other algorithm, including `none`, is refused before the signature
//! is looked at. A connection is closed with 4002 once its token expires, unless the client
//! refreshed it in-band (`{"action":"refresh","token":T}`): the new token is checked by the
//! same `Keys::verify` and must carry the connection's `sub`. Publishing over HTTP also needs
//! the claim `"scope"`, a space-separated list that contains `publish`.
//!
//! Tokens are secrets: nothing here logs one, and errors describe what was wrong without
//! repeating the token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// The scope a token needs to publish over HTTP.
pub const PUBLISH_SCOPE: &str = "publish";

/// The shortest HS256 secret considered strong, in bytes: the hash's output size (RFC 7518
/// §3.2 asks for at least this much key). A shorter secret can be brute-forced offline from
/// any one token. [`Tidings::new`](crate::Tidings::new) warns below it; the `tidings` binary
/// refuses to start below it unless told `--allow-weak-secret`.
pub const MIN_SECRET_LEN: usize = 32;

/// Why a token was refused, or could not be minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token was given (or it was empty).
    #[error("missing token")]
    Missing,
    /// The token is malformed, wrongly signed, expired, uses another algorithm than HS256 or
    /// lacks `sub` / `exp`.
    #[error("invalid token: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    /// The token is valid but lacks the scope the operation needs.
    #[error("token lacks the `{0}` scope")]
    MissingScope(&'static str),
    /// A token could not be signed (e.g. the expiry overflows).
    #[error("could not mint a token: {0}")]
    Mint(String),
}

/// The claims tidings reads from a token. Other claims are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Space-separated scopes, e.g. `"publish"`. A JSON array of strings is read as the same
    /// list; any other type counts as no scope (the token stays valid for `/ws`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_scope"
    )]
    pub scope: Option<String>,
    /// The topic patterns this token may subscribe to (see [`ClaimTopics`](crate::ClaimTopics));
    /// `None` (no claim) allows every topic. A single string is read as one pattern; any
    /// other type as an empty list, so a malformed restriction denies rather than allows.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_topics"
    )]
    pub topics: Option<Vec<String>>,
}

/// Reads `topics` as a list of strings or one string; other types become an empty list
/// (everything denied) rather than making the token invalid or unrestricted.
fn lenient_topics<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Topics {
        Many(Vec<String>),
        One(String),
        Other(serde::de::IgnoredAny),
    }
    Ok(Some(match Topics::deserialize(d)? {
        Topics::Many(v) => v,
        Topics::One(s) => vec![s],
        Topics::Other(_) => Vec::new(),
    }))
}

/// Reads `scope` as a string, or an array of strings joined with spaces; other types are
/// ignored rather than making the whole token invalid.
fn lenient_scope<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scope {
        One(String),
        Many(Vec<String>),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Scope::deserialize(d)? {
        Scope::One(s) => Some(s),
        Scope::Many(v) => Some(v.join(" ")),
        Scope::Other(_) => None,
    })
}

impl Claims {
    /// Whether the `scope` claim lists `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|s| s.split_ascii_whitespace().any(|s| s == scope))
    }
}

/// The signing and verification keys with the validation rules; built once per
/// [`Tidings`](crate::Tidings).
pub(crate) struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Keys {
    pub(crate) fn new(config: &Config) -> Self {
        let secret = config.jwt_secret.as_bytes();
        // `Validation::new` allows exactly the one algorithm given, so `none`, HS384, RS256 and
        // the rest fail with `InvalidAlgorithm` before any key is used.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = config.jwt_leeway.as_secs();
        validation.validate_exp = true;
        // `nbf` is optional, but a token that carries one is refused before that time.
        validation.validate_nbf = true;
        // The seed checks no audience; a token carrying one is still accepted.
        validation.validate_aud = false;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Checks `token` and returns its claims.
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(AuthError::Invalid)
    }

    /// Signs a token for `sub` valid for `ttl`, with an optional `scope` claim.
    pub(crate) fn issue(
        &self,
        sub: &str,
        ttl: Duration,
        scope: Option<&str>,
    ) -> Result<String, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| AuthError::Mint(e.to_string()))?;
        let exp = now
            .checked_add(ttl)
            .ok_or_else(|| AuthError::Mint("expiry overflows".into()))?
            .as_secs();
        let claims = Claims {
            sub: sub.to_owned(),
            exp,
            scope: scope.map(str::to_owned),
            topics: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Mint(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(&Config::new("test-secret"))
    }

    #[test]
    fn round_trip() {
        let k = keys();
        let t = k
            .issue("42", Duration::from_secs(60), Some("read publish"))
            .unwrap();
        let c = k.verify(&t).unwrap();
        assert_eq!(c.sub, "42");
        assert!(c.has_scope(PUBLISH_SCOPE));
        assert!(!c.has_scope("pub"));
    }

    #[test]
    fn scope_claim_shapes() {
        let parse = |json: &str| serde_json::from_str::<Claims>(json).unwrap();
        assert!(parse(r#"{"sub":"1","exp":1,"scope":"read publish"}"#).has_scope("publish"));
        assert!(parse(r#"{"sub":"1","exp":1,"scope":["read","publish"]}"#).has_scope("publish"));
        assert!(!parse(r#"{"sub":"1","exp":1,"scope":7}"#).has_scope("publish"));
        assert!(!parse(r#"{"sub":"1","exp":1}"#).has_scope("publish"));
        let topics = |json: &str| parse(json).topics;
        assert_eq!(topics(r#"{"sub":"1","exp":1}"#), None);
        assert_eq!(topics(r#"{"sub":"1","exp":1,"topics":null}"#), Some(vec![]));
        assert_eq!(
            topics(r#"{"sub":"1","exp":1,"topics":"list:*"}"#),
            Some(vec!["list:*".into()])
        );
        assert_eq!(topics(r#"{"sub":"1","exp":1,"topics":7}"#), Some(vec![]));
    }

    #[test]
    fn other_secret_is_refused() {
        let t = Keys::new(&Config::new("other"))
            .issue("42", Duration::from_secs(60), None)
            .unwrap();
        assert!(matches!(keys().verify(&t), Err(AuthError::Invalid(_))));
        assert!(matches!(keys().verify(""), Err(AuthError::Missing)));
    }
}
