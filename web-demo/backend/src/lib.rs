//! The family gifting dashboard's backend: a small axum app with a SQLite store that embeds
//! the tidings realtime server.
//!
//! The embedding is the whole of [`run`]: build a [`Tidings`] from a [`Config`], merge
//! `tidings.router()` (which serves `GET /ws`, `POST /publish`, `GET /healthz`) into the app,
//! publish a [`WSEvent`](tidings_protocol::WSEvent) on `tidings.hub()` after every committed
//! write, and hand the listener to [`tidings_server::serve`] so that shutdown closes every
//! WebSocket with 1012 (service restart) and the browsers reconnect.
//!
//! The same pattern in a dozen lines, for your own axum app:
//!
//! ```no_run
//! use axum::{Router, extract::State, routing::post};
//! use tidings_protocol::{EventData, EventType, Payload, Topic, WSEvent};
//! use tidings_server::{Config, Tidings};
//!
//! async fn add_item(State(tidings): State<Tidings>) -> &'static str {
//!     // ... commit the write first, then tell the subscribers of `list:1`:
//!     let payload = Payload::from_value(&serde_json::json!({"id": 42, "name": "Lego set"}))
//!         .expect("an object");
//!     let data = EventData {
//!         entity_id: "42".into(),
//!         payload,
//!         user_id: "7".into(),
//!         timestamp: "2026-11-26T10:30:00Z".into(),
//!     };
//!     let event = WSEvent::new(Topic::list(1), EventType::Added, data);
//!     // Through the broker (in memory or Redis); never waits for a slow socket.
//!     let _delivered = tidings.publish(event).await;
//!     "ok"
//! }
//!
//! # async fn main_() -> Result<(), Box<dyn std::error::Error>> {
//! let tidings = Tidings::new(Config::new(std::env::var("JWT_SECRET")?));
//! let app = Router::new()
//!     .route("/api/lists/1/items", post(add_item))
//!     .with_state(tidings.clone())
//!     .merge(tidings.router()); // GET /ws, POST /publish, GET /healthz
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! tidings_server::serve(listener, app, tidings, tidings_server::shutdown::signal()).await?;
//! # Ok(()) }
//! ```
//!
//! - [`model`]: the domain values the API returns.
//! - [`store`]: SQLite schema, seed data and queries.
//! - [`auth`]: demo login tokens and the bearer check.
//! - [`events`]: which events each change produces.
//! - [`surprise`]: whom each thing is for, and what they never receive.
//! - [`topics`]: which topics a member may subscribe to.
//! - [`api`]: the `/api` routes.
//! - [`error`]: API errors as JSON responses.

pub mod api;
pub mod auth;
pub mod error;
pub mod events;
pub mod model;
pub mod store;
pub mod surprise;
pub mod topics;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::response::{Html, IntoResponse};
use tidings_server::{Config, Tidings};
use tokio::net::TcpListener;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::trace::TraceLayer;

use crate::api::AppState;
use crate::auth::Auth;
use crate::store::{Store, StoreError};

/// How long a demo login stays valid. Defaults to 7 days (a demo should not log you out).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Everything [`run`] needs to know.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// SQLite file (created and seeded when new), or `":memory:"`.
    pub db_path: String,
    /// The built React app (`web-demo/frontend/dist`); `None` serves the API only.
    pub static_dir: Option<PathBuf>,
    /// JWT secret. `None`: a random one generated on first start and kept in the database,
    /// so logins survive restarts.
    pub jwt_secret: Option<String>,
    /// Lifetime of login tokens. Defaults to [`DEFAULT_TOKEN_TTL`].
    pub token_ttl: Duration,
}

impl DemoConfig {
    /// Defaults for a database at `db_path`: no UI, a generated secret, 7-day logins.
    pub fn new(db_path: impl Into<String>) -> Self {
        Self {
            db_path: db_path.into(),
            static_dir: None,
            jwt_secret: None,
            token_ttl: DEFAULT_TOKEN_TTL,
        }
    }
}

/// Why the demo could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The database could not be opened.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// Serving failed.
    #[error("server: {0}")]
    Serve(#[from] tidings_server::ServeError),
}

/// The whole HTTP app: `/api`, the embedded tidings routes and the UI.
pub fn app(state: AppState, static_dir: Option<PathBuf>) -> Router {
    let app = Router::new()
        .nest(
            "/api",
            api::router(state.clone()).layer(TraceLayer::new_for_http()),
        )
        .merge(state.tidings.router());
    match static_dir {
        Some(dir) if dir.join("index.html").is_file() => {
            // Unknown paths get index.html so that a reload on any URL opens the app.
            let index = ServeFile::new(dir.join("index.html"));
            app.fallback_service(ServeDir::new(dir).fallback(index))
        }
        Some(dir) => {
            tracing::warn!(dir = %dir.display(), "UI not built; serving the API only");
            app.fallback(|| async {
                Html("<h1>tidings demo</h1><p>The UI is not built: run <code>./scripts/demo</code>.</p>")
                    .into_response()
            })
        }
        None => app,
    }
}

/// Opens the database, embeds tidings and serves on `listener` until `shutdown` resolves.
///
/// # Errors
/// [`DemoError::Store`] when the database cannot be opened, [`DemoError::Serve`] when serving
/// fails.
pub async fn run(
    listener: TcpListener,
    config: DemoConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DemoError> {
    let store = Store::open(&config.db_path)?;
    let secret = match config.jwt_secret {
        Some(secret) => secret,
        None => {
            store
                .run(|conn| store::setting_or_insert(conn, "jwt_secret", random_secret))
                .await?
        }
    };
    // Presence `info` from the login tokens' `name` claim (the default, spelled out).
    let tidings = Tidings::new(
        Config::new(secret.clone())
            .with_presence_claims(["name"])
            .with_topic_policy(topics::DemoTopics),
    );
    let auth = Auth::new(tidings.clone(), &secret, config.token_ttl);
    let state = AppState {
        store,
        tidings: tidings.clone(),
        auth,
    };
    let app = app(state, config.static_dir);
    tidings_server::serve(listener, app, tidings, shutdown).await?;
    Ok(())
}

fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The repository README's Rust samples, compiled (not run) by `cargo test` so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
