//! Demo login and the bearer-token check of the mutating endpoints.
//!
//! Logging in means picking a family member: the token is minted by the embedded tidings
//! server ([`Tidings::issue_token`]) with the member id as `sub`, so the very same JWT opens
//! the WebSocket (`/ws?token=`) and authorizes REST calls. REST calls check it with the same
//! rules as `/ws` ([`Tidings::verify_token`]) and resolve `sub` to a [`Member`], the [`Actor`]
//! of the change.

use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use tidings_server::Tidings;

use crate::error::ApiError;
use crate::model::Member;
use crate::store::{self, Store};

/// Mints and checks the demo's session tokens.
#[derive(Clone)]
pub struct Auth {
    tidings: Tidings,
    ttl: Duration,
}

impl Auth {
    /// Tokens signed and checked by `tidings`, valid for `ttl`.
    pub fn new(tidings: Tidings, ttl: Duration) -> Self {
        Self { tidings, ttl }
    }

    /// A session token for `member`.
    ///
    /// # Errors
    /// [`ApiError::Internal`] when signing fails.
    pub fn issue(&self, member: &Member) -> Result<String, ApiError> {
        self.tidings
            .issue_token(&member.id.to_string(), self.ttl, None)
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
