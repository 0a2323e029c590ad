//! Errors at the crate's boundary that belong to no single module: serving.
//!
//! Token errors are [`AuthError`](crate::AuthError) (in `auth`), HTTP publish errors are
//! [`PublishError`](crate::PublishError) (in `publish`, answered as HTTP responses).

/// Why [`serve`](crate::serve) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The listener failed.
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
}
