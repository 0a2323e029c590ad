//! `POST /publish`: other backends publish one event over HTTP.
//!
//! The request must carry `Authorization: Bearer <JWT>` signed with the server's secret and
//! whose `scope` claim lists `publish`. The token is checked from the headers before a single
//! byte of the body is read, so an unauthenticated client cannot make the server buffer
//! anything. The body, at most [`Config::with_max_publish_body`](crate::Config::with_max_publish_body)
//! bytes, is one server → client event (`WSEvent`); its `Content-Type` is not checked (so a
//! plain `curl -d` works). Success is `202 {"delivered": N}`, N being the number of
//! connections of THIS node the event was queued for (with the Redis broker: the local
//! connections subscribed to the topic when Redis took the event; other nodes' subscribers
//! receive it too but are not counted). The event gets its topic's next `seq` and `epoch`;
//! values sent by the publisher are replaced.
//!
//! The body may also name the event's audience, next to the event's fields (they are not part
//! of the event subscribers receive): `exclude_connection` (a client's connection id, as its
//! app received it in the `tidings-connection-id` header), `only_users` and `exclude_users`
//! (lists of `user_id`s, at most
//! [`Config::with_max_audience_users`](crate::Config::with_max_audience_users) each); see
//! [`Audience`]. A bad one is a 422 and nothing is published.
//!
//! Errors are JSON `{"error", "details"}` bodies (the protocol's `WSError` shape):
//! 401 missing or invalid token, 403 no publish scope or a topic the token's topic policy
//! denies (the body then names the `topic`), 408 a body not received within
//! [`Config::with_publish_body_timeout`](crate::Config::with_publish_body_timeout) (the
//! connection is closed), 413 body too large, 400 body not JSON, 422 JSON that is not a valid
//! event (missing field, wrong type, payload not an object or nested deeper than
//! [`MAX_PAYLOAD_DEPTH`](tidings_protocol::server::MAX_PAYLOAD_DEPTH), unknown event name),
//! 429 the publisher went over its rate (with `Retry-After`; see
//! [`Config::with_publish_rate`](crate::Config::with_publish_rate)), 503 the broker (Redis) is
//! unavailable. Nothing is delivered when the request fails.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tidings_protocol::{PublishAudience, WSError, WSEvent};

use crate::Tidings;
use crate::audience::Audience;
use crate::auth::{AuthError, PUBLISH_SCOPE};
use crate::broker::BrokerError;
use crate::logging::Escaped;
use crate::rate::RATE_LIMIT_EXCEEDED;

/// Why a `POST /publish` request was refused; each variant is one HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// 401: no `Authorization: Bearer` header, or a token that fails verification.
    #[error("unauthorized: {0}")]
    Unauthorized(#[source] AuthError),
    /// 403: a valid token without the `publish` scope.
    #[error("token lacks the `publish` scope")]
    Forbidden,
    /// 403: the topic policy does not let this token publish to `topic`.
    #[error("token may not publish to this topic")]
    TopicForbidden {
        /// The topic of the refused event.
        topic: String,
    },
    /// 408: the body did not arrive within the configured timeout.
    #[error("body not received within {} ms", timeout.as_millis())]
    BodyTimeout {
        /// The configured timeout.
        timeout: std::time::Duration,
    },
    /// 413: the body is larger than the configured limit (or could not be read).
    #[error("body exceeds {limit} bytes or could not be read")]
    TooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// 400: the body is not JSON.
    #[error("body is not JSON: {0}")]
    NotJson(String),
    /// 422: JSON that is not a valid event.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// 503: the broker could not take the event.
    #[error("{0}")]
    Unavailable(#[source] BrokerError),
    /// 429: the publisher went over its rate
    /// ([`Config::with_publish_rate`](crate::Config::with_publish_rate)).
    #[error("publish rate exceeded; retry in {} ms", retry_after.as_millis())]
    RateLimited {
        /// When enough of the publisher's budget will be back (sent as `Retry-After`).
        retry_after: std::time::Duration,
    },
}

impl PublishError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            PublishError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            PublishError::Forbidden | PublishError::TopicForbidden { .. } => StatusCode::FORBIDDEN,
            PublishError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            PublishError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            PublishError::NotJson(_) => StatusCode::BAD_REQUEST,
            PublishError::InvalidEvent(_) => StatusCode::UNPROCESSABLE_ENTITY,
            PublishError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            PublishError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn body(&self) -> WSError {
        let (error, details) = match self {
            PublishError::Unauthorized(e) => ("Unauthorized", e.to_string()),
            PublishError::Forbidden => (WSError::FORBIDDEN, self.to_string()),
            PublishError::TopicForbidden { topic } => {
                return WSError {
                    details: Some(self.to_string()),
                    topic: Some(topic.clone()),
                    ..WSError::new(WSError::FORBIDDEN)
                };
            }
            PublishError::BodyTimeout { .. } => (WSError::REQUEST_TIMEOUT, self.to_string()),
            PublishError::TooLarge { .. } => ("Payload too large", self.to_string()),
            PublishError::NotJson(d) => ("Invalid JSON", d.clone()),
            PublishError::InvalidEvent(d) => ("Invalid event", d.clone()),
            PublishError::Unavailable(e) => ("Service unavailable", e.to_string()),
            PublishError::RateLimited { .. } => (RATE_LIMIT_EXCEEDED, self.to_string()),
        };
        WSError {
            details: Some(details),
            ..WSError::new(error)
        }
    }
}

impl IntoResponse for PublishError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if matches!(self, PublishError::Unauthorized(_)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let PublishError::RateLimited { retry_after } = self {
            // Whole seconds, rounded up (the header takes no fractions).
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if matches!(self, PublishError::BodyTimeout { .. }) {
            // The rest of the body may still arrive: the connection cannot carry another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// The success body: exactly `{"delivered": N}`.
#[derive(Debug, Serialize)]
struct Delivered {
    delivered: usize,
}

/// Handles `POST /publish`. The body is taken as a raw [`Body`] so that nothing is read until
/// the token has been checked.
pub(crate) async fn publish(
    State(tidings): State<Tidings>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, PublishError> {
    let token = bearer_token(&headers).ok_or(PublishError::Unauthorized(AuthError::Missing))?;
    let claims = tidings
        .authenticate(token)
        .await
        .map_err(PublishError::Unauthorized)?;
    if !claims.has_scope(PUBLISH_SCOPE) {
        return Err(PublishError::Forbidden);
    }
    // Before reading the body: a publisher over its rate costs no buffering or parsing.
    tidings
        .publishers()
        .check(&claims.sub, 1, std::time::Instant::now())
        .map_err(|retry_after| PublishError::RateLimited { retry_after })?;
    let limit = tidings.config().max_publish_body;
    let timeout = tidings.config().publish_body_timeout;
    // Bounded in time as well as size: the header read timeout ends with the headers, and a
    // body trickled a byte at a time would otherwise hold the connection for as long as the
    // client likes.
    let bytes = tokio::time::timeout(timeout, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| PublishError::BodyTimeout { timeout })?
        .map_err(|_| PublishError::TooLarge { limit })?;
    let event: WSEvent = serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => PublishError::InvalidEvent(e.to_string()),
        _ => PublishError::NotJson(e.to_string()),
    })?;
    let audience = read_audience(&bytes, tidings.config().max_audience_users)?;
    if !tidings
        .config()
        .topic_policy
        .allow_publish(&claims, &event.topic)
    {
        return Err(PublishError::TopicForbidden {
            topic: event.topic.as_str().to_owned(),
        });
    }
    let topic = event.topic.clone();
    let delivered = tidings
        .publish_to(event, audience)
        .await
        .map_err(|e| match e {
            BrokerError::Audience(e) => PublishError::InvalidEvent(e.to_string()),
            e => PublishError::Unavailable(e),
        })?;
    tracing::debug!(%topic, delivered, publisher = %Escaped(&claims.sub), "published");
    Ok((StatusCode::ACCEPTED, Json(Delivered { delivered })))
}

/// The audience fields of a publish body (the event's own fields are ignored here; the event
/// was parsed from the same bytes). The body was bounded before; the id lists are counted
/// against `max_users` before any set is built.
fn read_audience(body: &[u8], max_users: usize) -> Result<Audience, PublishError> {
    let request: PublishAudience =
        serde_json::from_slice(body).map_err(|e| PublishError::InvalidEvent(e.to_string()))?;
    Audience::from_request(request, max_users)
        .map_err(|e| PublishError::InvalidEvent(e.to_string()))
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
