//! HS256 tokens for the benchmark's subscribers and publishers, signed with the server's secret.
//!
//! Minting in-process (instead of calling `tidings token`) keeps the tool independent of the
//! server binary, so it can drive the Node peer with the same secret. Each subscriber gets its
//! own `sub` so that a per-user connection limit on the server does not skew the run.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

/// How long minted tokens stay valid: longer than any bounded run.
const TOKEN_TTL_SECS: u64 = 6 * 3600;

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

/// Signs tokens with one secret.
#[derive(Clone)]
pub struct Minter {
    key: EncodingKey,
}

impl Minter {
    /// A minter for `secret` (the server's `JWT_SECRET`).
    pub fn new(secret: &str) -> Self {
        Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
        }
    }

    fn mint(&self, sub: &str, scope: Option<&str>) -> Result<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("clock before 1970")?
            .as_secs();
        let claims = Claims {
            sub,
            exp: now + TOKEN_TTL_SECS,
            scope,
        };
        jsonwebtoken::encode(&Header::default(), &claims, &self.key).context("signing a token")
    }

    /// A subscriber token for user `bench-<n>`.
    ///
    /// # Errors
    /// Only if signing fails.
    pub fn subscriber(&self, n: usize) -> Result<String> {
        self.mint(&format!("bench-{n}"), None)
    }

    /// A token with the `publish` scope.
    ///
    /// # Errors
    /// Only if signing fails.
    pub fn publisher(&self) -> Result<String> {
        self.mint("bench-publisher", Some("publish"))
    }
}
