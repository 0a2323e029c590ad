//! The API's error type and how each failure becomes an HTTP answer.
//!
//! Every error leaves as `{"error": "..."}` with a 4xx status for anything the client got
//! wrong (malformed JSON 400, bad token 401, unknown id 404, invalid field 422), so a bad
//! request never shows up as a 500. Only a database failure is a 500, and its details are
//! logged rather than sent.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

/// A failed API request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON or the path is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// No or an invalid bearer token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// An id in the path does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The body is well-formed JSON but its content breaks a rule (422).
    #[error("{0}")]
    Unprocessable(String),
    /// One field of the body is not acceptable (422, with `"field"` in the answer).
    #[error("{field}: {why}")]
    InvalidField {
        /// The body field.
        field: String,
        /// Why.
        why: String,
    },
    /// The member may not do this (403), e.g. look at the surprises of their own list.
    #[error("{0}")]
    Forbidden(String),
    /// The path exists, the method does not (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request has the wrong content type (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Storage failed (500; details are logged, not sent).
    #[error("internal error")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unprocessable(_) | ApiError::InvalidField { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Internal(details) => {
                tracing::error!(%details, "request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let body = match &self {
            ApiError::InvalidField { field, .. } => {
                json!({ "error": self.to_string(), "field": field })
            }
            _ => json!({ "error": self.to_string() }),
        };
        (status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            StoreError::Invalid(why) => ApiError::Unprocessable(why),
            StoreError::Field { field, why } => ApiError::InvalidField { field, why },
            StoreError::Sqlite(_) | StoreError::Task(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            // Valid JSON of the wrong shape (missing field, unknown status): the client's
            // content is wrong, not its syntax.
            JsonRejection::JsonDataError(e) => ApiError::Unprocessable(e.body_text()),
            JsonRejection::MissingJsonContentType(e) => {
                ApiError::UnsupportedMediaType(e.body_text())
            }
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        // `/api/items/abc`: a malformed id, not an unknown one.
        ApiError::BadRequest(r.body_text())
    }
}
