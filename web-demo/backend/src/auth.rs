//! Demo login and the bearer-token check of the mutating endpoints.
//!
//! Logging in means picking a family member: the token is an HS256 JWT signed with the embedded
//! tidings server's secret, with the member id as `sub` and the member's `name` (which the
//! server copies into the member's presence `info`: the avatars of who is looking at a list),
//! so the very same JWT opens the WebSocket (`/ws?token=`) and authorizes REST calls. REST calls check it with the same
//! rules as `/ws` ([`Tidings::verify_token`]) and resolve `sub` to a [`Member`], the [`Actor`]
//! of the change.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use tidings_server::Tidings;

use crate::error::ApiError;
use crate::model::Member;
use crate::store::{self, Store};

/// Mints and checks the demo's session tokens.
#[derive(Clone)]
pub struct Auth {
    tidings: Tidings,
    key: EncodingKey,
    ttl: Duration,
}

/// The claims of a session token: tidings' own (`sub`, `exp`) plus the member's name.
#[derive(Serialize)]
struct SessionClaims<'a> {
    sub: String,
    exp: u64,
    /// Copied by the embedded server into the member's presence `info`
    /// (`Config::with_presence_claims`).
    name: &'a str,
}

impl Auth {
    /// Tokens signed with `secret` (the one `tidings` checks them with), valid for `ttl`.
    pub fn new(tidings: Tidings, secret: &str, ttl: Duration) -> Self {
        Self {
            tidings,
            key: EncodingKey::from_secret(secret.as_bytes()),
            ttl,
        }
    }

    /// A session token for `member`. Signed here rather than with `Tidings::issue_token`,
    /// which mints `sub` and `exp` only: presence shows the member's `name`.
    ///
    /// # Errors
    /// [`ApiError::Internal`] when signing fails.
    pub fn issue(&self, member: &Member) -> Result<String, ApiError> {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|now| now.checked_add(self.ttl))
            .ok_or_else(|| ApiError::Internal("issuing a token: the clock is off".into()))?
            .as_secs();
        let claims = SessionClaims {
            sub: member.id.to_string(),
            exp,
            name: &member.name,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(|e| ApiError::Internal(format!("issuing a token: {e}")))
    }

    /// The member id in a valid token.
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] for a bad signature, an expired token or a `sub` that is not
    /// a member id.
    pub fn verify(&self, token: &str) -> Result<i64, ApiError> {
        let claims = self
            .tidings
            .verify_token(token)
            .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
        claims
            .sub
            .parse()
            .map_err(|_| ApiError::Unauthorized("invalid token: sub is not a member id".into()))
    }
}

/// The member making a request, from its `Authorization: Bearer` token.
#[derive(Debug, Clone)]
pub struct Actor(pub Member);

impl<S> FromRequestParts<S> for Actor
where
    S: Send + Sync,
    Auth: FromRef<S>,
    Store: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer token".into()))?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| ApiError::Unauthorized("Authorization must be Bearer".into()))?;
        let id = Auth::from_ref(state).verify(token.trim())?;
        let member = Store::from_ref(state)
            .run(move |conn| store::member(conn, id))
            .await?
            // A valid signature for a member that no longer exists (another database).
            .ok_or_else(|| ApiError::Unauthorized(format!("member {id} does not exist")))?;
        Ok(Actor(member))
    }
}
