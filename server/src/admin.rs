//! `POST /admin/disconnect` and `POST /admin/revoke`: the operator's (or the app backend's)
//! control over sessions.
//!
//! Both need `Authorization: Bearer <JWT>` whose `scope` lists **`admin`**: a separate scope,
//! so a publisher token cannot end sessions and an admin token cannot publish (a token may
//! carry both). The command is applied on this node at once and, with the Redis broker, sent
//! to every other node on the `tidings:control` channel (see [`crate::control`]).
//!
//! - `POST /admin/disconnect` `{"sub": "u1"}` closes every connection of user `u1` with
//!   **4006 "disconnected"**, which the browser client does not reconnect after.
//! - `POST /admin/revoke` `{"jti": "…", "until": 1767225600}` refuses the token with that id,
//!   or `{"sub": "u1", "until": …}` every token of the user, until `until` (Unix seconds;
//!   typically the token's `exp`, or now plus the longest token lifetime for a user); a
//!   revoked token is refused at the handshake (4001) and on refresh (4001), and connections
//!   that use it are closed with 4006.
//!
//! Answers `200 {"disconnected": N}` (connections closed on this node), 401 / 403 for the
//! token, 400 for a body that is not JSON, 422 for a body missing what it needs or naming an
//! id over 1,024 bytes, 413 over 64 KiB, 507 when the revocation store is full, 503 when the
//! command could not reach the other nodes (it was applied here).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::Tidings;
use crate::auth::AuthError;
use crate::control::{Command, MAX_ID_LEN};
use crate::logging::Escaped;
use crate::publish::bearer_token;

/// The scope an admin token must list.
pub const ADMIN_SCOPE: &str = "admin";

/// Largest request body.
const MAX_BODY: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectRequest {
    sub: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    until: u64,
}

#[derive(Serialize)]
struct Done {
    disconnected: usize,
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

/// A refused request: its status and the `error` text of its JSON body.
pub(crate) struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

fn refuse(status: StatusCode, text: impl Into<String>) -> Refusal {
    Refusal(status, text.into())
}

/// Checks the admin token and reads the body as `T`.
async fn admitted<T: serde::de::DeserializeOwned>(
    tidings: &Tidings,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, Refusal> {
    let Some(token) = bearer_token(headers) else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            AuthError::Missing.to_string(),
        ));
    };
    let claims = match tidings.authenticate(token).await {
        Ok(claims) => claims,
        // The error names what was wrong, never the token.
        Err(e) => return Err(refuse(StatusCode::UNAUTHORIZED, e.to_string())),
    };
    if !claims.has_scope(ADMIN_SCOPE) || tidings.is_revoked(&claims) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "token lacks the `admin` scope",
        ));
    }
    tracing::info!(admin = %Escaped(&claims.sub), "admin request");
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| refuse(StatusCode::PAYLOAD_TOO_LARGE, "body over 64 KiB"))?;
    serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            refuse(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        _ => refuse(StatusCode::BAD_REQUEST, e.to_string()),
    })
}

fn check_id(what: &str, id: Option<&str>) -> Result<(), Refusal> {
    match id {
        Some(id) if id.is_empty() || id.len() > MAX_ID_LEN => Err(refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("`{what}` must be 1 to {MAX_ID_LEN} bytes"),
        )),
        _ => Ok(()),
    }
}

async fn run(tidings: &Tidings, command: Command) -> Response {
    match tidings.control(command).await {
        Ok(disconnected) => (StatusCode::OK, Json(Done { disconnected })).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Handles `POST /admin/disconnect`.
pub(crate) async fn disconnect(
    State(tidings): State<Tidings>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let request: DisconnectRequest = admitted(&tidings, &headers, body).await?;
    check_id("sub", Some(&request.sub))?;
    Ok(run(&tidings, Command::Disconnect { sub: request.sub }).await)
}

/// Handles `POST /admin/revoke`.
pub(crate) async fn revoke(
    State(tidings): State<Tidings>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let request: RevokeRequest = admitted(&tidings, &headers, body).await?;
    if request.jti.is_none() && request.sub.is_none() {
        return Err(refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "name a `jti` or a `sub` to revoke",
        ));
    }
    check_id("jti", request.jti.as_deref())?;
    check_id("sub", request.sub.as_deref())?;
    let command = Command::Revoke {
        jti: request.jti,
        sub: request.sub,
        until: request.until,
    };
    Ok(run(&tidings, command).await)
}

/// Why a control command failed.
#[derive(Debug)]
pub(crate) enum ControlError {
    /// The revocation store holds its maximum of live entries.
    StoreFull(usize),
    /// Applied here, but the broker could not send it to the other nodes.
    Unavailable(String),
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        match self {
            ControlError::StoreFull(max) => refuse(
                StatusCode::INSUFFICIENT_STORAGE,
                format!("the revocation store is full ({max} live entries)"),
            )
            .into_response(),
            ControlError::Unavailable(e) => refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("applied on this node only: {e}"),
            )
            .into_response(),
        }
    }
}
