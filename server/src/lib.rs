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
//! The broker is in memory by default (one node) or Redis ([`Config::with_redis_url`], or
//! [`Tidings::builder`] with [`RedisBroker::connect`]) for several nodes; any [`Broker`]
//! implementation can be plugged in the same way.
//!
//! An app embeds it with `app.merge(tidings.router())` and publishes from its own handlers
//! with [`Tidings::publish`] (every broker; returns the event's position or the broker's
//! error). [`Hub::publish`] is a sync shortcut for the in-memory broker only. [`serve`] runs a router until a shutdown future completes, closes
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

pub mod admin;
pub mod audience;
pub mod auth;
pub mod authz;
pub mod broker;
pub mod config;
mod connection;
mod control;
pub mod error;
mod heartbeat;
pub mod hub;
mod idempotency;
mod inbound;
pub mod ip;
pub mod jwks;
mod limits;
pub mod logging;
mod metrics;
mod origin;
mod outbox;
pub mod presence;
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
#[cfg(feature = "redis")]
pub use broker::RedisBroker;
pub use broker::{Broker, BrokerError, MemoryBroker, Published};
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
    /// Open sessions by user and revoked tokens (`POST /admin/…`).
    control: Arc<control::Control>,
    /// The `Idempotency-Key`s of `POST /publish{,/batch}`.
    idempotency: idempotency::Store,
    /// Who is on each topic (issue 15): this node's watchers and the store that shares them.
    presence: presence::Node,
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
    /// A server with `config` and an empty hub: the in-memory broker, or the Redis one when
    /// [`Config::with_redis_url`] is set (nothing connects until it is used; an invalid URL
    /// is logged and every publish then fails with [`BrokerError::Unavailable`]). Use
    /// [`Tidings::builder`] to get errors back instead, or to bring another [`Broker`].
    ///
    /// Logs a warning when the JWT secret is shorter than [`MIN_SECRET_LEN`] bytes (tests may
    /// use short ones; a deployment should not).
    ///
    /// Call it inside a tokio runtime: the broker's background work (the in-memory history
    /// sweep, the Redis pub/sub listener, which retries until Redis answers) is spawned on the
    /// current one.
    pub fn new(config: Config) -> Self {
        let broker: Arc<dyn Broker> = match &config.redis_url {
            None => return Self::with_memory(config),
            Some(url) => match redis_broker(url.expose(), &config) {
                Ok(redis) => redis,
                Err(e) => {
                    tracing::error!(error = %e, "cannot use the Redis broker");
                    Arc::new(broker::UnusableBroker(e.to_string()))
                }
            },
        };
        Self::assemble(config, broker, None)
    }

    /// Starts building a server with `config`: choose a broker with
    /// [`TidingsBuilder::broker`] (the in-memory one by default), then
    /// [`TidingsBuilder::build`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use tidings_server::{Config, RedisBroker, Tidings};
    /// let config = Config::new("a long random secret, at least 32 bytes");
    /// let redis = RedisBroker::connect("redis://127.0.0.1:6379", &config).await?;
    /// let tidings = Tidings::builder(config).broker(redis).build()?;
    /// # Ok(()) }
    /// ```
    pub fn builder(config: Config) -> TidingsBuilder {
        TidingsBuilder {
            config,
            broker: None,
        }
    }

    fn with_memory(config: Config) -> Self {
        let memory = Arc::new(MemoryBroker::new(broker::HistoryLimits::from_config(
            &config,
        )));
        Self::assemble(config, memory.clone(), Some(memory))
    }

    fn assemble(
        config: Config,
        broker: Arc<dyn Broker>,
        memory: Option<Arc<MemoryBroker>>,
    ) -> Self {
        if !config.auth.jwt_secret.expose().is_empty()
            && config.auth.jwt_secret.expose().len() < MIN_SECRET_LEN
        {
            tracing::warn!(
                bytes = config.auth.jwt_secret.expose().len(),
                "the JWT secret is shorter than {MIN_SECRET_LEN} bytes: tokens signed with it \
                 can be brute-forced offline; use a long random secret"
            );
        }
        let shutdown = CancellationToken::new();
        let broker_stop = shutdown.child_token();
        let control = Arc::new(control::Control::new(config.max_revocations));
        let hub = Hub::new(broker.clone(), memory);
        // Control commands other nodes send (disconnect, revoke) reach this node's sessions
        // through the hub's `Deliver` side, as events reach its subscribers.
        hub.set_on_control({
            let control = control.clone();
            Arc::new(move |text: &[u8]| match serde_json::from_slice(text) {
                Ok(command) => {
                    if let Err(full) = control.apply(&command) {
                        tracing::warn!(
                            max = full.0,
                            "a revocation from another node did not fit the store"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "ignoring a malformed control message"),
            })
        });
        let presence = presence::Node::new(
            Self::presence_store(&config),
            config.presence.max_members,
            config.presence.max_info_bytes,
            broker_stop.clone(),
        );
        #[cfg(feature = "redis")]
        if config.redis_url.is_some() {
            hub.set_on_presence(Arc::new(presence::redis::Relay(presence.clone())));
        }
        // The broker's background work reaches this node's subscribers through the hub's
        // `Deliver` side only.
        broker
            .clone()
            .start(Arc::new(hub.clone()), broker_stop.clone());
        Self {
            inner: Arc::new(Inner {
                publishers: publishers::PublishLimiter::new(&config),
                hub,
                broker,
                broker_stop,
                keys: auth::Keys::new(&config),
                limits: Arc::new(limits::ConnectionLimits::new(
                    config.limits.max_connections,
                    config.limits.max_connections_per_user,
                )),
                ip_limits: Arc::new(ip::IpLimits::new(&config)),
                control,
                idempotency: idempotency::Store::new(
                    config.idempotency_ttl,
                    config.max_idempotency_keys,
                    config.max_idempotency_bytes,
                ),
                presence,
                config,
                shutdown,
                connections: TaskTracker::new(),
            }),
        }
    }

    /// Where presence entries live: in Redis when the broker is (`Config::with_redis_url`;
    /// a Redis URL always selects the Redis broker, `TidingsBuilder::build` refuses another),
    /// else on this node.
    #[cfg(feature = "redis")]
    fn presence_store(config: &Config) -> Arc<dyn presence::Presence> {
        match &config.redis_url {
            Some(url) => match presence::RedisPresence::new(url.expose(), config.presence.ttl) {
                Ok(redis) => Arc::new(redis),
                Err(e) => {
                    tracing::error!(error = %e, "cannot use Redis for presence; one node only");
                    Arc::new(presence::MemoryPresence::new())
                }
            },
            None => Arc::new(presence::MemoryPresence::new()),
        }
    }

    /// Where presence entries live: on this node (built without the `redis` feature).
    #[cfg(not(feature = "redis"))]
    fn presence_store(_config: &Config) -> Arc<dyn presence::Presence> {
        Arc::new(presence::MemoryPresence::new())
    }

    /// Publishes `event` through the broker: it gets the topic's next `seq` and its `epoch`
    /// (whatever the caller set is replaced), enters the history and reaches every subscriber
    /// (on every node, with Redis). The one publish API for every broker.
    ///
    /// Returns the event's topic, `seq` and `epoch`, and how many local connections it was
    /// queued for: with the in-memory broker, the connections it was queued on; with Redis,
    /// the local connections subscribed when Redis took it (they receive it through this
    /// node's pub/sub subscription, like every other node's subscribers).
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the broker (Redis) cannot take the event (nothing was
    /// delivered); [`BrokerError::Serialize`] for an event that cannot be serialized (cannot
    /// happen for protocol-built events).
    pub async fn publish(&self, event: WSEvent) -> Result<Published, BrokerError> {
        self.publish_to(event, Audience::everyone()).await
    }

    /// As [`Tidings::publish`], for `audience` only: the subscribers it leaves out (the
    /// connection that caused the event, users not in `only_users`, users in `exclude_users`)
    /// never receive the event, live or replayed; those that track positions get a `skipped`
    /// frame with its `seq` instead (see [`audience`]). [`Published::delivered`] counts the
    /// local connections in the audience only.
    ///
    /// # Errors
    /// [`BrokerError::Audience`] when `audience` breaks a bound (an invalid connection id, more
    /// user ids than [`Config::with_max_audience_users`]); else as [`Tidings::publish`].
    pub async fn publish_to(
        &self,
        event: WSEvent,
        audience: Audience,
    ) -> Result<Published, BrokerError> {
        audience.check(self.inner.config.max_audience_users)?;
        let base = broker::base_text(&event)?;
        self.inner
            .broker
            .publish(&self.inner.hub, event.topic, base, audience)
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

    /// Applies a control command on this node and sends it to the others (with Redis).
    /// Returns how many local connections it closed.
    async fn control(&self, command: control::Command) -> Result<usize, admin::ControlError> {
        // Refused here (the store is full): refused everywhere, and nothing is kept in Redis,
        // so one admin token cannot grow the shared set past what every node would hold.
        let closed = self
            .inner
            .control
            .apply(&command)
            .map_err(|full| admin::ControlError::StoreFull(full.0))?;
        let text = serde_json::to_string(&command)
            .map_err(|e| admin::ControlError::Unavailable(e.to_string()))?;
        self.inner
            .broker
            .control(text, command.keep_until())
            .await
            .map_err(|e| admin::ControlError::Unavailable(e.to_string()))?;
        Ok(closed)
    }

    /// Whether a token with `claims` was revoked (`POST /admin/revoke`).
    fn is_revoked(&self, claims: &auth::Claims) -> bool {
        self.inner.control.revocations.is_revoked(claims)
    }

    /// Claims `key` of `publisher`: in the broker's shared store when it has one (Redis:
    /// every node sees the same keys), else in this node's.
    async fn claim_idempotency_key(
        &self,
        publisher: &str,
        key: &str,
    ) -> Result<idempotency::Begin, broker::BrokerError> {
        let ttl = self.inner.config.idempotency_ttl;
        let shared = format!("{}:{publisher}:{key}", publisher.len());
        Ok(match self.inner.broker.claim_key(shared, ttl).await? {
            None => self
                .inner
                .idempotency
                .begin(publisher, key, std::time::Instant::now()),
            Some(broker::SharedClaim::New) => idempotency::Begin::New,
            Some(broker::SharedClaim::InFlight) => idempotency::Begin::InFlight,
            Some(broker::SharedClaim::Done(text)) => match idempotency::Stored::decode(&text) {
                Some(stored) => idempotency::Begin::Done(stored),
                None => idempotency::Begin::InFlight,
            },
        })
    }

    /// Settles a key claimed with [`Tidings::claim_idempotency_key`]: keeps `answer`, or
    /// releases the key (`None`). A failure to reach the shared store is logged: the answer
    /// was already sent, and the key expires with its TTL.
    async fn settle_idempotency_key(
        &self,
        publisher: &str,
        key: &str,
        answer: Option<idempotency::Stored>,
    ) {
        let ttl = self.inner.config.idempotency_ttl;
        let shared = format!("{}:{publisher}:{key}", publisher.len());
        let text = answer.as_ref().map(idempotency::Stored::encode);
        match self.inner.broker.settle_key(shared, text, ttl).await {
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "could not settle an Idempotency-Key"),
        }
        // The node's own store (used when the broker keeps none; harmless otherwise).
        match answer {
            Some(stored) => self.inner.idempotency.finish(publisher, key, stored),
            None => self.inner.idempotency.release(publisher, key),
        }
    }

    /// This node's presence (issue 15): its watchers and present entries.
    pub fn presence(&self) -> &presence::Node {
        &self.inner.presence
    }

    fn sessions(&self) -> &Arc<control::Sessions> {
        &self.inner.control.sessions
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
            .route("/publish/batch", post(publish::publish_batch))
            .route("/admin/disconnect", post(admin::disconnect))
            .route("/admin/revoke", post(admin::revoke))
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
        // Every authenticated connection is registered there; one that registers after this
        // sweep sees the cancelled token and closes itself the same way.
        self.sessions()
            .close(None, None, tidings_protocol::CloseCode::ServiceRestart);
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

/// Builds a [`Tidings`] handle (see [`Tidings::builder`]).
#[must_use = "a builder does nothing until `build` is called"]
pub struct TidingsBuilder {
    config: Config,
    broker: Option<Arc<dyn Broker>>,
}

impl std::fmt::Debug for TidingsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TidingsBuilder")
            .field("config", &self.config)
            .field("broker", &self.broker.is_some())
            .finish()
    }
}

/// Why [`TidingsBuilder::build`] could not make a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration names a broker that cannot be used (an invalid Redis URL).
    #[error("broker: {0}")]
    Broker(#[from] BrokerError),
    /// [`Config::with_redis_url`] and [`TidingsBuilder::broker`] both name a broker.
    #[error("both Config::with_redis_url and TidingsBuilder::broker name a broker; keep one")]
    TwoBrokers,
}

impl TidingsBuilder {
    /// Uses `broker` (e.g. [`RedisBroker::connect`], or an implementation of your own)
    /// instead of the in-memory one.
    pub fn broker(mut self, broker: impl Broker) -> Self {
        self.broker = Some(Arc::new(broker));
        self
    }

    /// The server. Call it inside a tokio runtime (the broker's background work is spawned
    /// on it).
    ///
    /// # Errors
    /// [`BuildError::Broker`] for a [`Config::with_redis_url`] that is not a valid Redis URL;
    /// [`BuildError::TwoBrokers`] when a broker was given and the config names Redis too.
    pub fn build(self) -> Result<Tidings, BuildError> {
        match (self.broker, &self.config.redis_url) {
            (Some(_), Some(_)) => Err(BuildError::TwoBrokers),
            (Some(broker), None) => Ok(Tidings::assemble(self.config, broker, None)),
            (None, Some(url)) => {
                let redis = redis_broker(url.expose(), &self.config)?;
                Ok(Tidings::assemble(self.config, redis, None))
            }
            (None, None) => Ok(Tidings::with_memory(self.config)),
        }
    }
}

/// The Redis broker for `url` (without the `redis` feature: the error that says so).
#[cfg(feature = "redis")]
fn redis_broker(url: &str, config: &Config) -> Result<Arc<dyn Broker>, BrokerError> {
    Ok(Arc::new(RedisBroker::from_config(url, config)?))
}

#[cfg(not(feature = "redis"))]
fn redis_broker(_url: &str, _config: &Config) -> Result<Arc<dyn Broker>, BrokerError> {
    Err(BrokerError::Unavailable(
        "this build of tidings-server has no Redis broker (the `redis` feature is off)".into(),
    ))
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
