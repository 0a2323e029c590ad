//! tidings: the realtime hub of the family dashboard's seed `/ws` endpoint, as an axum library
//! and the `tidings` gateway binary.
//!
//! A [`Tidings`] handle (cheap to clone) holds the [`Hub`], the JWT keys and the [`Config`].
//! Its [`router`](Tidings::router) serves:
//!
//! - `GET /ws?token=<JWT>`: the seed WebSocket protocol (subscribe / unsubscribe / ping,
//!   events on subscribed topics; a bad token gets close 4001 after the handshake);
//! - `POST /publish`: publish one event over HTTP with a `publish`-scoped bearer token,
//!   answered `202 {"delivered": N}`;
//! - `GET /healthz`: 200 `ok` while serving, 200 `degraded: <why>` while the broker (Redis)
//!   is unavailable (kept 200: every node shares the broker, so taking nodes out of a load
//!   balancer would not help, and existing connections keep working), 503 once shutting down.
//! - `GET /metrics`: counters and gauges in the Prometheus text format, O(1) per scrape;
//!   optionally behind a bearer token ([`Config::with_metrics_token`]) or only on
//!   [`Tidings::metrics_router`] ([`Config::with_metrics_route`]).
//!
//! Every event gets a per-topic `seq` and `epoch`, and a bounded history per topic lets a
//! client that reconnects with `since` recover what it missed (see [`hub`] and [`broker`]).
//! The broker is in memory by default (one node) or Redis ([`Config::with_redis_url`]) for
//! several nodes.
//!
//! An app embeds it with `app.merge(tidings.router())` and publishes from its own handlers
//! with [`Hub::publish`] (sync) or [`Tidings::publish`] (async, reports broker errors). [`serve`] runs a router until a shutdown future completes, closes
//! every WebSocket with 1012 and drains for a bounded time.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tidings_server::{Config, Tidings};
//! let tidings = Tidings::new(Config::new("secret"));
//! let app = axum::Router::new().merge(tidings.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! tidings_server::serve(listener, app, tidings, tidings_server::shutdown::signal()).await?;
//! # Ok(()) }
//! ```

pub mod audience;
pub mod auth;
pub mod authz;
pub mod broker;
pub mod config;
mod connection;
pub mod error;
mod heartbeat;
pub mod hub;
mod inbound;
pub mod ip;
pub mod jwks;
mod limits;
pub mod logging;
mod metrics;
mod origin;
mod outbox;
pub mod publish;
mod publishers;
mod rate;
mod serve;
pub mod shutdown;
pub mod stamp;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use tidings_protocol::WSEvent;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::trace::TraceLayer;

pub use audience::{Audience, AudienceError};
pub use auth::{AuthError, Claims, MIN_SECRET_LEN, PUBLISH_SCOPE};
pub use authz::{ClaimTopics, FORBIDDEN, TopicPolicy};
pub use broker::BrokerError;
pub use config::Config;
pub use connection::TOO_MANY_SUBSCRIPTIONS;
pub use error::ServeError;
pub use hub::Hub;
pub use publish::PublishError;
pub use rate::RATE_LIMIT_EXCEEDED;
pub use serve::serve;
pub use stamp::Stamp;
pub use tidings_protocol as protocol;

/// The server handle: hub, JWT keys and configuration behind one `Arc`. Clone it freely.
#[derive(Clone)]
pub struct Tidings {
    inner: Arc<Inner>,
}

struct Inner {
    hub: Hub,
    /// The `POST /publish` rate limit per publisher.
    publishers: publishers::PublishLimiter,
    broker: Arc<dyn broker::Broker>,
    /// Stops the broker's background listener (on shutdown or when the handle is dropped).
    broker_stop: CancellationToken,
    keys: auth::Keys,
    config: Config,
    shutdown: CancellationToken,
    /// Every upgraded WebSocket task, so that shutdown can wait for them (an upgraded
    /// connection leaves the HTTP server's hands).
    connections: TaskTracker,
    /// The connection counts behind `Config::with_max_connections{,_per_user}`.
    limits: Arc<limits::ConnectionLimits>,
    /// The per-address counts behind `Config::with_max_connections_per_ip` and
    /// `Config::with_handshake_rate_per_ip`.
    ip_limits: Arc<ip::IpLimits>,
}

impl std::fmt::Debug for Tidings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tidings")
            .field("config", &self.inner.config)
            .field("hub", &self.inner.hub)
            .finish_non_exhaustive()
    }
}

impl Tidings {
    /// A server with `config` and an empty hub. Logs a warning when the JWT secret is shorter
    /// than [`MIN_SECRET_LEN`] bytes (tests may use short ones; a deployment should not).
    ///
    /// Call it inside a tokio runtime: the history sweep (and, with
    /// [`Config::with_redis_url`], the Redis broker's pub/sub listener, which retries until
    /// Redis answers) is spawned on the current one.
    pub fn new(config: Config) -> Self {
        if !config.jwt_secret.is_empty() && config.jwt_secret.len() < MIN_SECRET_LEN {
            tracing::warn!(
                bytes = config.jwt_secret.len(),
                "the JWT secret is shorter than {MIN_SECRET_LEN} bytes: tokens signed with it \
                 can be brute-forced offline; use a long random secret"
            );
        }
        let shutdown = CancellationToken::new();
        let broker_stop = shutdown.child_token();
        let history = broker::HistoryLimits::from_config(&config);
        let (hub, broker): (Hub, Arc<dyn broker::Broker>) = match &config.redis_url {
            None => (Hub::new(history, None), Arc::new(broker::MemoryBroker)),
            Some(url) => match broker::RedisBroker::new(
                url,
                history,
                config.max_history_fetches,
                broker::ReplayBound::for_outbox(
                    config.outbound_queue_capacity,
                    config.max_outbound_bytes,
                ),
            ) {
                Ok(redis) => {
                    let redis = Arc::new(redis);
                    let hub = Hub::new(history, Some(redis.clone()));
                    match tokio::runtime::Handle::try_current() {
                        Ok(rt) => {
                            rt.spawn(redis.clone().listen(hub.clone(), broker_stop.clone()));
                        }
                        Err(_) => tracing::error!(
                            "the Redis broker needs a tokio runtime: no events will be received"
                        ),
                    }
                    (hub, redis)
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot use the Redis broker");
                    let broken = Arc::new(broker::UnusableBroker(e.to_string()));
                    (Hub::new(history, Some(broken.clone())), broken)
                }
            },
        };
        // Expired history and abandoned topics are freed by one background sweep (no work on
        // the publish path, and no dependence on later traffic).
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(hub.clone().sweep_forever(broker_stop.clone()));
            }
            Err(_) => {
                tracing::warn!("Tidings::new outside a tokio runtime: expired history is not swept")
            }
        }
        Self {
            inner: Arc::new(Inner {
                publishers: publishers::PublishLimiter::new(&config),
                hub,
                broker,
                broker_stop,
                keys: auth::Keys::new(&config),
                limits: Arc::new(limits::ConnectionLimits::new(
                    config.max_connections,
                    config.max_connections_per_user,
                )),
                ip_limits: Arc::new(ip::IpLimits::new(&config)),
                config,
                shutdown,
                connections: TaskTracker::new(),
            }),
        }
    }

    /// Publishes `event` through the broker: it gets the topic's next `seq` and its `epoch`
    /// (whatever the caller set is replaced), enters the history and reaches every subscriber
    /// (on every node, with Redis). Returns how many local connections it was queued for: with
    /// the in-memory broker, the connections it was queued on; with Redis, the local
    /// connections subscribed when Redis took it (they receive it through this node's pub/sub
    /// subscription, like every other node's subscribers).
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when Redis cannot take the event (nothing was delivered).
    pub async fn publish(&self, event: WSEvent) -> Result<usize, BrokerError> {
        self.publish_to(event, Audience::everyone()).await
    }

    /// As [`Tidings::publish`], for `audience` only: the subscribers it leaves out (the
    /// connection that caused the event, users not in `only_users`, users in `exclude_users`)
    /// never receive the event, live or replayed; those that track positions get a `skipped`
    /// frame with its `seq` instead (see [`audience`]). The count returned is of the
    /// connections that got the event (with Redis: the local subscribers, as for `publish`).
    ///
    /// # Errors
    /// [`BrokerError::Audience`] when `audience` breaks a bound (an invalid connection id, more
    /// user ids than [`Config::with_max_audience_users`]); else as [`Tidings::publish`].
    pub async fn publish_to(
        &self,
        event: WSEvent,
        audience: Audience,
    ) -> Result<usize, BrokerError> {
        audience.check(self.inner.config.max_audience_users)?;
        let base = hub::base_text(&event).ok_or(BrokerError::Serialize)?;
        self.inner
            .broker
            .publish(&self.inner.hub, &event.topic, base, audience)
            .await
    }

    /// The current positions of `topics`, to stamp a read with (see [`stamp`]): take it
    /// BEFORE reading the data the response carries, then return it with the response
    /// (`(stamp, Json(data))`). A topic that has had no event gets `seq` 0 in the epoch its
    /// first event will have, so a client resumes it without a refetch.
    ///
    /// The app chooses `topics` (a handful per response, not client input); each costs a map
    /// lookup in memory, one Redis round trip with Redis.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when Redis cannot be asked: respond without a stamp (the
    /// client then closes the gap by refetching once after its subscription's ack).
    pub async fn read_stamp(&self, topics: &[protocol::Topic]) -> Result<Stamp, BrokerError> {
        let mut positions = Vec::with_capacity(topics.len());
        for topic in topics {
            let at = self.inner.broker.position(&self.inner.hub, topic).await?;
            positions.push(protocol::TopicPosition {
                topic: topic.clone(),
                seq: at.seq,
                epoch: at.epoch,
            });
        }
        Ok(Stamp(protocol::ReadStamp(positions)))
    }

    /// `None` while the broker is healthy; otherwise why it is degraded (Redis unreachable).
    pub fn broker_degraded(&self) -> Option<String> {
        self.inner.broker.degraded()
    }

    /// The routes `GET /ws`, `POST /publish`, `GET /healthz` and `GET /metrics` (Prometheus
    /// text format; left out when [`Config::with_metrics_route`] is off), with this handle as
    /// state.
    ///
    /// Request logs name the method and path only: the query string of `/ws` carries a token
    /// and is never logged.
    pub fn router(&self) -> Router {
        let mut router = Router::new()
            .route("/ws", get(ws::upgrade))
            .route("/publish", post(publish::publish))
            .route("/healthz", get(healthz));
        if self.inner.config.metrics_route {
            router = router.route("/metrics", get(metrics::serve));
        }
        self.traced(router)
    }

    /// `GET /metrics` alone, to serve on a private listener (e.g. the binary's
    /// `--metrics-bind`) while [`Config::with_metrics_route`] keeps it off the public router.
    /// [`Config::with_metrics_token`] applies here too.
    pub fn metrics_router(&self) -> Router {
        self.traced(Router::new().route("/metrics", get(metrics::serve)))
    }

    fn traced(&self, router: Router<Tidings>) -> Router {
        router
            .layer(
                // A debug span, like the layer's request/response events: at the default `info`
                // level it costs nothing per handshake.
                TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
                    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
                }),
            )
            .with_state(self.clone())
    }

    /// The hub, to publish events from the embedding app.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// The configuration in effect.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Mints an HS256 token for user `sub`, valid for `ttl`, with an optional `scope` claim
    /// (`Some("publish")` for `POST /publish`).
    ///
    /// # Errors
    /// [`AuthError::Mint`] when the token cannot be signed (e.g. `ttl` overflows the clock).
    pub fn issue_token(
        &self,
        sub: &str,
        ttl: Duration,
        scope: Option<&str>,
    ) -> Result<String, AuthError> {
        self.inner.keys.issue(sub, ttl, scope)
    }

    /// Checks a token as `/ws` and `/publish` do and returns its claims.
    ///
    /// # Errors
    /// [`AuthError::Missing`] for an empty token, [`AuthError::Invalid`] for a malformed,
    /// wrongly signed or expired one, another algorithm than HS256 (or the JWKS key's), or no
    /// `sub` / `exp`; [`AuthError::UnknownKey`] for a `kid` not in the JWKS cache (a refetch
    /// starts in the background; [`Tidings::authenticate`] waits for it).
    pub fn verify_token(&self, token: &str) -> Result<Claims, AuthError> {
        self.inner.keys.verify(token)
    }

    /// Checks a token as `/ws` and `/publish` do: like [`Tidings::verify_token`], but a token
    /// naming a key the JWKS cache does not hold waits for a refetch of the JWKS (within the
    /// refetch bound, `Config::with_jwks_refetch_interval`). [`Tidings::verify_token`] refuses
    /// such a token at once and refetches in the background.
    ///
    /// # Errors
    /// As [`Tidings::verify_token`], and [`AuthError::UnknownKey`].
    pub async fn authenticate(&self, token: &str) -> Result<Claims, AuthError> {
        self.inner.keys.verify_fetching(token).await
    }

    /// Starts the shutdown: every WebSocket gets close 1012 (service restart), `/ws` refuses
    /// new upgrades and [`serve`] stops accepting connections. Idempotent.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Whether [`Tidings::shutdown`] has been called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// How many WebSocket connections are open (including ones being closed).
    pub fn connection_count(&self) -> usize {
        self.inner.connections.len()
    }

    fn limits(&self) -> &Arc<limits::ConnectionLimits> {
        &self.inner.limits
    }

    fn ip_limits(&self) -> &Arc<ip::IpLimits> {
        &self.inner.ip_limits
    }

    fn publishers(&self) -> &publishers::PublishLimiter {
        &self.inner.publishers
    }

    fn tracker(&self) -> &TaskTracker {
        &self.inner.connections
    }

    fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.broker_stop.cancel();
    }
}

/// `GET /healthz`: see the crate docs for the statuses and bodies.
async fn healthz(State(tidings): State<Tidings>) -> (StatusCode, String) {
    if tidings.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_owned())
    } else if let Some(why) = tidings.broker_degraded() {
        (StatusCode::OK, format!("degraded: {why}"))
    } else {
        (StatusCode::OK, "ok".to_owned())
    }
}
