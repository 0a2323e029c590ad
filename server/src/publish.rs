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
//!
//! `POST /publish/batch` takes a JSON array of such events (each with its own audience fields,
//! if any) and answers
//! `200 {"results": [...]}`, one result per event in order: `{"delivered": N}` or that event's
//! error body with its `status` (403 topic, 422 invalid, 503 broker). Errors of the whole
//! request (401, 403 scope, 400 not an array, 408, 413, 422 more than
//! [`Config::with_max_publish_batch`](crate::Config::with_max_publish_batch) events, 429) are
//! answered as for `/publish`, and then nothing is published.
//!
//! Both take an `Idempotency-Key` header (see [`crate::idempotency`]): a retry with the same
//! key from the same publisher within the TTL gets the first answer again (with
//! `Idempotent-Replayed: true`) and publishes nothing; 409 while the first is still running;
//! 400 for a malformed key. A failed request (any error status) keeps no answer, so its
//! retry runs; a batch's answer is kept as it is, per-event errors included (resend the
//! events that failed with 503 under a new key).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tidings_protocol::{PublishAudience, WSError, WSEvent};

use crate::Tidings;
use crate::audience::Audience;
use crate::auth::{AuthError, Claims, PUBLISH_SCOPE};
use crate::broker::BrokerError;
use crate::idempotency::{self, Begin, Stored};
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
    /// 422: a batch with more events than
    /// [`Config::with_max_publish_batch`](crate::Config::with_max_publish_batch).
    #[error("a batch holds at most {max} events")]
    TooManyEvents {
        /// The configured maximum.
        max: usize,
    },
    /// 400: an `Idempotency-Key` that is empty, longer than 255 bytes or not visible ASCII.
    #[error("Idempotency-Key must be 1 to 255 visible ASCII characters")]
    BadIdempotencyKey,
    /// 409: a request with the same `Idempotency-Key` is still being processed; retry later.
    #[error("a request with this Idempotency-Key is in progress")]
    KeyInFlight,
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
            PublishError::InvalidEvent(_) | PublishError::TooManyEvents { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            PublishError::BadIdempotencyKey => StatusCode::BAD_REQUEST,
            PublishError::KeyInFlight => StatusCode::CONFLICT,
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
            PublishError::TooManyEvents { .. } => ("Too many events", self.to_string()),
            PublishError::BadIdempotencyKey => ("Invalid Idempotency-Key", self.to_string()),
            PublishError::KeyInFlight => ("Conflict", self.to_string()),
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

/// One event's outcome in a `POST /publish/batch` answer: `{"delivered": N}`, or the error
/// body `POST /publish` would have answered for it, with its `status`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum BatchResult {
    Delivered(Delivered),
    Failed {
        status: u16,
        #[serde(flatten)]
        error: WSError,
    },
}

/// The `POST /publish/batch` answer: one result per event, in order.
#[derive(Debug, Serialize)]
struct BatchAnswer {
    results: Vec<BatchResult>,
}

/// The header a publisher sets to make a retry safe.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set (`true`) on an answer replayed from an earlier request with the same key.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Handles `POST /publish`. The body is taken as a raw [`Body`] so that nothing is read until
/// the token has been checked.
pub(crate) async fn publish(
    State(tidings): State<Tidings>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(tidings, headers, body, false).await
}

/// Handles `POST /publish/batch`: a JSON array of events, at most
/// [`Config::with_max_publish_batch`](crate::Config::with_max_publish_batch), each checked
/// and published on its own (in order); `200 {"results": [...]}` with one result per event.
/// The publisher's rate is charged one token per event, before any is published.
pub(crate) async fn publish_batch(
    State(tidings): State<Tidings>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(tidings, headers, body, true).await
}

async fn handle(tidings: Tidings, headers: HeaderMap, body: Body, batch: bool) -> Response {
    let claims = match authorize(&tidings, &headers).await {
        Ok(claims) => claims,
        Err(e) => return e.into_response(),
    };
    let key = match headers.get(IDEMPOTENCY_KEY).map(|v| v.to_str()) {
        None => None,
        Some(Ok(key)) if idempotency::valid_key(key) => Some(key.to_owned()),
        Some(_) => return PublishError::BadIdempotencyKey.into_response(),
    };
    if let Some(key) = &key {
        // The key is scoped by endpoint too: a batch and a single publish never share answers.
        let scoped = if batch {
            format!("b:{key}")
        } else {
            format!("s:{key}")
        };
        match tidings.claim_idempotency_key(&claims.sub, &scoped).await {
            Err(e) => return PublishError::Unavailable(e).into_response(),
            Ok(Begin::New) => {}
            Ok(Begin::InFlight) => return PublishError::KeyInFlight.into_response(),
            Ok(Begin::Done(stored)) => {
                let mut response = json_text(
                    StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK),
                    stored.body,
                );
                response
                    .headers_mut()
                    .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
                return response;
            }
        }
        let result = if batch {
            publish_many(&tidings, &claims, body).await
        } else {
            publish_one(&tidings, &claims, body).await
        };
        return match result {
            Ok((status, text)) => {
                let stored = Stored {
                    status: status.as_u16(),
                    body: text.clone(),
                };
                tidings
                    .settle_idempotency_key(&claims.sub, &scoped, Some(stored))
                    .await;
                json_text(status, text)
            }
            Err(e) => {
                tidings
                    .settle_idempotency_key(&claims.sub, &scoped, None)
                    .await;
                e.into_response()
            }
        };
    }
    let result = if batch {
        publish_many(&tidings, &claims, body).await
    } else {
        publish_one(&tidings, &claims, body).await
    };
    match result {
        Ok((status, text)) => json_text(status, text),
        Err(e) => e.into_response(),
    }
}

fn json_text(status: StatusCode, text: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        text,
    )
        .into_response()
}

/// Checks the publisher's token (before a byte of the body is read).
async fn authorize(tidings: &Tidings, headers: &HeaderMap) -> Result<Claims, PublishError> {
    let token = bearer_token(headers).ok_or(PublishError::Unauthorized(AuthError::Missing))?;
    let claims = tidings
        .authenticate(token)
        .await
        .map_err(PublishError::Unauthorized)?;
    if !claims.has_scope(PUBLISH_SCOPE) {
        return Err(PublishError::Forbidden);
    }
    // A revoked publisher token (`POST /admin/revoke`) publishes nothing more.
    if tidings.is_revoked(&claims) {
        return Err(PublishError::Unauthorized(AuthError::Revoked));
    }
    Ok(claims)
}

/// Reads the body, bounded in size and time. The header read timeout ends with the headers,
/// and a body trickled a byte at a time would otherwise hold the connection for as long as
/// the client likes.
async fn read_body(tidings: &Tidings, body: Body) -> Result<axum::body::Bytes, PublishError> {
    let limit = tidings.config().max_publish_body;
    let timeout = tidings.config().publish_body_timeout;
    tokio::time::timeout(timeout, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| PublishError::BodyTimeout { timeout })?
        .map_err(|_| PublishError::TooLarge { limit })
}

/// One event of a publish body and its audience (the fields beside the event's own; see the
/// module docs), both read from the same bytes and checked.
fn parse_event(tidings: &Tidings, bytes: &[u8]) -> Result<(WSEvent, Audience), PublishError> {
    let event = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => PublishError::InvalidEvent(e.to_string()),
        _ => PublishError::NotJson(e.to_string()),
    })?;
    let audience = read_audience(bytes, tidings.config().max_audience_users)?;
    Ok((event, audience))
}

/// Checks the topic policy and publishes one parsed event for `audience`; returns
/// `delivered` (the local connections in the audience).
async fn publish_checked(
    tidings: &Tidings,
    claims: &Claims,
    event: WSEvent,
    audience: Audience,
) -> Result<usize, PublishError> {
    if !tidings
        .config()
        .topic_policy
        .allow_publish(claims, &event.topic)
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
        })?
        .delivered;
    tracing::debug!(%topic, delivered, publisher = %Escaped(&claims.sub), "published");
    Ok(delivered)
}

async fn publish_one(
    tidings: &Tidings,
    claims: &Claims,
    body: Body,
) -> Result<(StatusCode, String), PublishError> {
    // Before reading the body: a publisher over its rate costs no buffering or parsing.
    tidings
        .publishers()
        .check(&claims.sub, 1, std::time::Instant::now())
        .map_err(|retry_after| PublishError::RateLimited { retry_after })?;
    let bytes = read_body(tidings, body).await?;
    let (event, audience) = parse_event(tidings, &bytes)?;
    let delivered = publish_checked(tidings, claims, event, audience).await?;
    Ok((
        StatusCode::ACCEPTED,
        serde_json::to_string(&Delivered { delivered }).unwrap_or_default(),
    ))
}

async fn publish_many(
    tidings: &Tidings,
    claims: &Claims,
    body: Body,
) -> Result<(StatusCode, String), PublishError> {
    let bytes = read_body(tidings, body).await?;
    // Each event's text apart first: one bad event is that event's error, not the batch's.
    let events: Vec<&serde_json::value::RawValue> = serde_json::from_slice(&bytes)
        .map_err(|e| PublishError::NotJson(format!("expected a JSON array of events: {e}")))?;
    let max = tidings.config().max_publish_batch;
    if events.len() > max {
        return Err(PublishError::TooManyEvents { max });
    }
    let count = u32::try_from(events.len()).unwrap_or(u32::MAX);
    if count > 0 {
        tidings
            .publishers()
            .check(&claims.sub, count, std::time::Instant::now())
            .map_err(|retry_after| PublishError::RateLimited { retry_after })?;
    }
    let mut results = Vec::with_capacity(events.len());
    for raw in events {
        let outcome = match parse_event(tidings, raw.get().as_bytes()) {
            Ok((event, audience)) => publish_checked(tidings, claims, event, audience).await,
            Err(e) => Err(e),
        };
        results.push(match outcome {
            Ok(delivered) => BatchResult::Delivered(Delivered { delivered }),
            Err(e) => BatchResult::Failed {
                status: e.status().as_u16(),
                error: e.body(),
            },
        });
    }
    Ok((
        StatusCode::OK,
        serde_json::to_string(&BatchAnswer { results }).unwrap_or_default(),
    ))
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
