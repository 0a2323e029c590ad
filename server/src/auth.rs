//! JWT authentication: checking the tokens of `/ws` and `POST /publish`, and minting them.
//!
//! Tokens are HS256, signed with the configured secret, or, with a JWKS configured
//! (`Config::with_jwks`), signed by an identity provider with one of its published keys
//! (RS256, ES256, EdDSA, …; see [`jwks`](crate::jwks)). A token must carry `sub` (the
//! user id, a string) and `exp`; `exp` (and `nbf`, when present) is checked with a leeway of
//! at most 60 seconds; `aud` and `iss` when configured. An HS256 token is only ever checked
//! with the secret and any other token only with the JWKS key its `kid` names, with that
//! key's one algorithm: `none` and algorithm confusion are refused before a signature is
//! looked at. A connection is closed with 4002 once its token expires, unless the client
//! refreshed it in-band (`{"action":"refresh","token":T}`): the new token is checked by the
//! same `Keys::verify` and must carry the connection's `sub`. Publishing over HTTP also needs
//! the claim `"scope"`, a space-separated list that contains `publish`.
//!
//! Tokens are secrets: nothing here logs one, and errors describe what was wrong without
//! repeating the token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::jwks::{Jwks, Lookup};

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
    /// The token is malformed, wrongly signed, expired, uses another algorithm than its key's
    /// (HS256 for the secret), lacks `sub` / `exp`, or fails a configured `aud` / `iss`.
    #[error("invalid token: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    /// The token names a key (`kid`) that the JWKS does not hold, even after a refetch (or
    /// the refetch bound allowed none yet).
    #[error("unknown signing key")]
    UnknownKey,
    /// The token (its `jti`, or its user) was revoked with `POST /admin/revoke`.
    #[error("token revoked")]
    Revoked,
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
    /// The token's id, when it has one: what `POST /admin/revoke` can refuse by. A number is
    /// read as its decimal text; any other type as no id (the token stays valid).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_jti"
    )]
    pub jti: Option<String>,
    /// The presence `info` of this token's user: the configured claims
    /// ([`Config::with_presence_claims`](crate::Config::with_presence_claims)) the token
    /// carries, as a JSON object; `None` when it carries none of them (`{}` on the wire). Set
    /// by the server when it checks the token, never read from a claim of that name.
    #[serde(skip)]
    pub presence_info: Option<tidings_protocol::PresenceInfo>,
}

/// Reads `jti` as a string (a number as its text); other types become `None`, so an odd
/// `jti` never makes an otherwise valid token invalid.
fn lenient_jti<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
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
    /// `None` when the secret is empty (JWKS only): HS256 tokens are then refused.
    secret: Option<(EncodingKey, DecodingKey)>,
    /// The rules shared by every algorithm (claims, leeway, audience, issuer); the algorithm
    /// list is set per token to the one algorithm of the key used.
    validation: Validation,
    jwks: Option<Arc<Jwks>>,
    /// The claims copied into a user's presence `info`.
    presence_claims: Box<[String]>,
}

impl Keys {
    pub(crate) fn new(config: &Config) -> Self {
        let secret = config.auth.jwt_secret.expose().as_bytes();
        // `Validation::new` allows exactly the one algorithm given; `verify` replaces it by
        // the algorithm of the key it uses, so `none`, HS384 and the rest fail with
        // `InvalidAlgorithm`, and an HS256 token is never checked with a public key.
        let mut validation = Validation::new(Algorithm::HS256);
        let mut required = vec!["exp", "sub"];
        validation.leeway = config.auth.jwt_leeway.as_secs();
        validation.validate_exp = true;
        // `nbf` is optional, but a token that carries one is refused before that time.
        validation.validate_nbf = true;
        // The seed checks no audience; a token carrying one is accepted unless an audience
        // is configured, which the token must then name.
        validation.validate_aud = false;
        if let Some(aud) = &config.jwt_audience {
            validation.validate_aud = true;
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        if let Some(iss) = &config.jwt_issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let jwks = config
            .jwks
            .as_deref()
            .map(|source| Arc::new(Jwks::new(source, config.jwks_refetch_interval)));
        // Load the keys at start rather than on the first token.
        if let Some(jwks) = &jwks {
            jwks.refresh_in_background();
        }
        Self {
            secret: (!secret.is_empty()).then(|| {
                (
                    EncodingKey::from_secret(secret),
                    DecodingKey::from_secret(secret),
                )
            }),
            validation,
            jwks,
            presence_claims: config.presence.claims.clone().into_boxed_slice(),
        }
    }

    /// Checks `token` with the cached keys and returns its claims. A token naming a key the
    /// JWKS cache does not hold is refused, and a refetch starts in the background (within
    /// the refetch bound); [`Keys::verify_fetching`] waits for it instead.
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        match self.check(token)? {
            Checked::Done(result) => result,
            Checked::UnknownKey => {
                if let Some(jwks) = &self.jwks {
                    jwks.refresh_in_background();
                }
                Err(AuthError::UnknownKey)
            }
        }
    }

    /// Like [`Keys::verify`], but a token naming a key the cache does not hold waits for a
    /// refetch of the JWKS (at most one per refetch interval; otherwise refused at once).
    pub(crate) async fn verify_fetching(&self, token: &str) -> Result<Claims, AuthError> {
        match self.check(token)? {
            Checked::Done(result) => result,
            Checked::UnknownKey => {
                let Some(jwks) = &self.jwks else {
                    return Err(AuthError::UnknownKey);
                };
                // Whether this task fetched, waited for another task's fetch or was held
                // back by the bound, the cache is looked at again: a fetch may have
                // completed since the first look.
                jwks.refetch().await;
                match self.check(token)? {
                    Checked::Done(result) => result,
                    Checked::UnknownKey => Err(AuthError::UnknownKey),
                }
            }
        }
    }

    fn check(&self, token: &str) -> Result<Checked, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        // Fails for `alg: none` and any name jsonwebtoken does not know.
        let header = jsonwebtoken::decode_header(token).map_err(AuthError::Invalid)?;
        if header.alg == Algorithm::HS256 {
            let Some((_, decoding)) = &self.secret else {
                return Err(invalid_algorithm());
            };
            return Ok(Checked::Done(self.decode(
                token,
                decoding,
                Algorithm::HS256,
            )));
        }
        let Some(jwks) = &self.jwks else {
            return Err(invalid_algorithm());
        };
        jwks.refresh_in_background_if_stale();
        let candidates = match jwks.lookup(header.kid.as_deref()) {
            Lookup::Found(candidates) => candidates,
            Lookup::Unknown => return Ok(Checked::UnknownKey),
        };
        let mut result = Err(invalid_algorithm());
        for entry in candidates.iter().filter(|e| e.alg == header.alg) {
            result = self.decode(token, &entry.key, entry.alg);
            if result.is_ok() {
                break;
            }
        }
        Ok(Checked::Done(result))
    }

    fn decode(&self, token: &str, key: &DecodingKey, alg: Algorithm) -> Result<Claims, AuthError> {
        let mut validation = self.validation.clone();
        validation.algorithms = vec![alg];
        // Read as a map first (one signature check), so that the presence claims can be
        // picked from it; the typed claims are then read from the same map.
        let map = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            key,
            &validation,
        )
        .map_err(AuthError::Invalid)?
        .claims;
        let value = serde_json::Value::Object(map);
        let mut claims = Claims::deserialize(&value).map_err(|e| {
            AuthError::Invalid(jsonwebtoken::errors::ErrorKind::Json(Arc::new(e)).into())
        })?;
        if let serde_json::Value::Object(map) = &value {
            claims.presence_info = presence_info(map, &self.presence_claims);
        }
        Ok(claims)
    }

    /// Signs a token for `sub` valid for `ttl`, with an optional `scope` claim.
    pub(crate) fn issue(
        &self,
        sub: &str,
        ttl: Duration,
        scope: Option<&str>,
    ) -> Result<String, AuthError> {
        let Some((encoding, _)) = &self.secret else {
            return Err(AuthError::Mint(
                "no JWT secret is configured (tokens from a JWKS are minted by the identity \
                 provider)"
                    .into(),
            ));
        };
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
            jti: None,
            presence_info: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, encoding)
            .map_err(|e| AuthError::Mint(e.to_string()))
    }
}

/// The presence `info` of a token: its `claims` that are in `map`, in the configured order, as
/// one JSON object; `None` when it has none of them.
fn presence_info(
    map: &serde_json::Map<String, serde_json::Value>,
    claims: &[String],
) -> Option<tidings_protocol::PresenceInfo> {
    let mut text = String::new();
    for name in claims {
        let Some(value) = map.get(name) else { continue };
        text.push(if text.is_empty() { '{' } else { ',' });
        // Serializing a string key and a parsed value cannot fail.
        text.push_str(&serde_json::to_string(name).ok()?);
        text.push(':');
        text.push_str(&serde_json::to_string(value).ok()?);
    }
    if text.is_empty() {
        return None;
    }
    text.push('}');
    tidings_protocol::PresenceInfo::from_json(text).ok()
}

/// The outcome of checking a token against the cached keys.
enum Checked {
    Done(Result<Claims, AuthError>),
    /// The token names a key the JWKS cache does not hold.
    UnknownKey,
}

fn invalid_algorithm() -> AuthError {
    AuthError::Invalid(jsonwebtoken::errors::ErrorKind::InvalidAlgorithm.into())
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
