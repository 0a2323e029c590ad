//! Server configuration: the JWT secret and every limit the server enforces.
//!
//! [`Config::new`] takes the one required setting (the HS256 secret); every other field has a
//! documented default chosen so that normal use never hits it, and a `with_*` builder to change
//! it. The library never reads the environment: the `tidings` binary maps flags and environment
//! variables onto this struct.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::authz::{ClaimTopics, TopicPolicy};

/// The largest JWT clock leeway accepted; longer values are clamped to it.
pub const MAX_JWT_LEEWAY: Duration = Duration::from_secs(60);

/// The shortest heartbeat interval or timeout accepted.
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);
/// The longest heartbeat interval or timeout accepted (keeps deadline arithmetic in range).
const MAX_HEARTBEAT: Duration = Duration::from_secs(24 * 3600);

/// Default of [`Config::with_history_size`]: 1,000 events per topic.
pub const DEFAULT_HISTORY_SIZE: usize = 1000;
/// Default of [`Config::with_history_ttl`]: 5 minutes.
pub const DEFAULT_HISTORY_TTL: Duration = Duration::from_secs(300);
/// Default of [`Config::with_jwt_leeway`]: 30 seconds.
pub const DEFAULT_JWT_LEEWAY: Duration = Duration::from_secs(30);
/// Default of [`Config::with_max_history_fetches`]: 32 fetches at once per node.
pub const DEFAULT_MAX_HISTORY_FETCHES: usize = 32;
/// Default of [`Config::with_max_history_fetches_per_connection`]: 4 at once per connection.
pub const DEFAULT_MAX_HISTORY_FETCHES_PER_CONNECTION: usize = 4;
/// Default of [`Config::with_history_max_topic_bytes`]: 1 MiB per topic.
pub const DEFAULT_HISTORY_MAX_TOPIC_BYTES: usize = 1024 * 1024;
/// Default of [`Config::with_history_max_total_bytes`]: 256 MiB in all histories.
pub const DEFAULT_HISTORY_MAX_TOTAL_BYTES: usize = 256 * 1024 * 1024;
/// Default of [`Config::with_max_history_topics`]: 100,000 topics holding history.
pub const DEFAULT_MAX_HISTORY_TOPICS: usize = 100_000;
/// Default of [`Config::with_publish_rate`]: 1,000 events per second per publisher.
pub const DEFAULT_PUBLISH_RATE: u32 = 1000;
/// Default burst of [`Config::with_publish_rate`]: 5,000 events.
pub const DEFAULT_PUBLISH_BURST: u32 = 5000;
/// Default of [`Config::with_max_publishers`]: 10,000 publishers tracked by the rate limit.
pub const DEFAULT_MAX_PUBLISHERS: usize = 10_000;
/// Default of [`Config::with_max_revocations`]: 100,000 live revocations.
pub const DEFAULT_MAX_REVOCATIONS: usize = 100_000;
/// Default of [`Config::with_max_publish_batch`]: 1,000 events per `POST /publish/batch`.
pub const DEFAULT_MAX_PUBLISH_BATCH: usize = 1000;
/// Default of [`Config::with_idempotency_ttl`]: 10 minutes.
pub const DEFAULT_IDEMPOTENCY_TTL: Duration = Duration::from_secs(600);
/// Default of [`Config::with_max_idempotency_keys`]: 100,000 keys.
pub const DEFAULT_MAX_IDEMPOTENCY_KEYS: usize = 100_000;
/// Default of [`Config::with_max_idempotency_bytes`]: 64 MiB of kept answers.
pub const DEFAULT_MAX_IDEMPOTENCY_BYTES: usize = 64 * 1024 * 1024;
/// Default of [`Config::with_max_presence_members`]: 1,000 present users per topic.
pub const DEFAULT_MAX_PRESENCE_MEMBERS: usize = 1000;
/// Default of [`Config::with_max_presence_info_bytes`]: 256 bytes of info per present user.
pub const DEFAULT_MAX_PRESENCE_INFO_BYTES: usize = 256;
/// Default of [`Config::with_presence_claims`]: the `name` claim.
pub const DEFAULT_PRESENCE_CLAIMS: &[&str] = &["name"];
/// Default of [`Config::with_presence_ttl`]: 20 seconds (a dead node's users leave within
/// 25 seconds).
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(20);

/// Default of [`Config::with_jwks_refetch_interval`]: 30 seconds.
pub const DEFAULT_JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Default of [`Config::with_max_connections_per_ip`]: 2,048 WebSockets per client address.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 2048;
/// Default rate of [`Config::with_handshake_rate_per_ip`]: 100 handshakes per second.
pub const DEFAULT_HANDSHAKE_RATE_PER_IP: u32 = 100;
/// Default burst of [`Config::with_handshake_rate_per_ip`]: 1,000 handshakes.
pub const DEFAULT_HANDSHAKE_BURST_PER_IP: u32 = 1000;

/// Configuration of a [`Tidings`](crate::Tidings) instance.
///
/// Settings the hot paths read together are stored in groups (auth, heartbeat, rate, limits,
/// history, buffers), built once by the `with_*` methods; `Debug` prints every setting except
/// secrets ([`Secret`]: the JWT secret, the metrics token, the Redis URL).
#[derive(Clone, Debug)]
pub struct Config {
    // The groups the connection loop and the brokers read as they are (built once here, not
    // per message).
    pub(crate) auth: Auth,
    pub(crate) heartbeat: Heartbeat,
    pub(crate) rate: Rate,
    pub(crate) limits: Limits,
    pub(crate) history: HistoryLimits,
    pub(crate) buffers: Buffers,
    // Other settings.
    pub(crate) max_publish_body: usize,
    pub(crate) max_audience_users: usize,
    pub(crate) close_timeout: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) header_read_timeout: Duration,
    pub(crate) write_delay: Duration,
    pub(crate) tcp_keepalive: Option<Duration>,
    /// See [`Config::with_max_revocations`].
    pub(crate) max_revocations: usize,
    /// See [`Config::with_max_publish_batch`].
    pub(crate) max_publish_batch: usize,
    /// See [`Config::with_idempotency_ttl`].
    pub(crate) idempotency_ttl: Duration,
    /// See [`Config::with_max_idempotency_keys`].
    pub(crate) max_idempotency_keys: usize,
    /// See [`Config::with_max_idempotency_bytes`].
    pub(crate) max_idempotency_bytes: usize,
    pub(crate) topic_policy: Policy,
    pub(crate) allowed_origins: Option<Vec<String>>,
    pub(crate) redis_url: Option<Secret>,
    pub(crate) publish_rate: u32,
    pub(crate) publish_burst: u32,
    pub(crate) max_publishers: usize,
    pub(crate) max_history_fetches: usize,
    pub(crate) max_history_fetches_per_connection: usize,
    // issue 10: hardening
    pub(crate) inbound_byte_rate: u64,
    pub(crate) inbound_byte_burst: u64,
    pub(crate) publish_body_timeout: Duration,
    pub(crate) metrics_token: Option<Secret>,
    pub(crate) metrics_route: bool,
    // issue 14: identity-provider keys and per-IP limits
    pub(crate) jwks: Option<String>,
    pub(crate) jwks_refetch_interval: Duration,
    pub(crate) jwt_audience: Option<String>,
    pub(crate) jwt_issuer: Option<String>,
    pub(crate) max_connections_per_ip: usize,
    pub(crate) handshake_rate_per_ip: u32,
    pub(crate) handshake_burst_per_ip: u32,
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,
    // issue 15: presence
    pub(crate) presence: PresenceSettings,
}

impl Config {
    /// A configuration with the HS256 secret `jwt_secret` and every other setting at its
    /// default.
    pub fn new(jwt_secret: impl Into<String>) -> Self {
        Self {
            auth: Auth {
                jwt_secret: Secret(jwt_secret.into()),
                jwt_leeway: DEFAULT_JWT_LEEWAY,
            },
            heartbeat: Heartbeat {
                ping_interval: Duration::from_secs(25),
                pong_timeout: Duration::from_secs(60),
            },
            rate: Rate {
                per_second: f64::from(100),
                burst: f64::from(1000),
                max_violations: 100,
                window: Duration::from_secs(10),
            },
            limits: Limits {
                max_connections: 100_000,
                max_connections_per_user: 100,
                max_subscriptions_per_connection: 1024,
            },
            history: HistoryLimits {
                size: DEFAULT_HISTORY_SIZE,
                ttl: DEFAULT_HISTORY_TTL,
                max_topic_bytes: DEFAULT_HISTORY_MAX_TOPIC_BYTES,
                max_total_bytes: DEFAULT_HISTORY_MAX_TOTAL_BYTES,
                max_topics: DEFAULT_MAX_HISTORY_TOPICS,
            },
            buffers: Buffers {
                outbound_queue_capacity: 1024,
                max_outbound_bytes: 1024 * 1024,
                read_buffer_size: 128,
                write_buffer_size: 4 * 1024,
                max_write_buffer_size: 4 * 1024 * 1024,
                max_message_size: 64 * 1024,
            },
            max_publish_body: 256 * 1024,
            max_audience_users: 1000,
            close_timeout: Duration::from_secs(3),
            drain_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(15),
            write_delay: Duration::ZERO,
            tcp_keepalive: Some(Duration::from_secs(60)),
            max_revocations: DEFAULT_MAX_REVOCATIONS,
            max_publish_batch: DEFAULT_MAX_PUBLISH_BATCH,
            idempotency_ttl: DEFAULT_IDEMPOTENCY_TTL,
            max_idempotency_keys: DEFAULT_MAX_IDEMPOTENCY_KEYS,
            max_idempotency_bytes: DEFAULT_MAX_IDEMPOTENCY_BYTES,
            topic_policy: Policy(Arc::new(ClaimTopics)),
            allowed_origins: None,
            redis_url: None,
            publish_rate: DEFAULT_PUBLISH_RATE,
            publish_burst: DEFAULT_PUBLISH_BURST,
            max_publishers: DEFAULT_MAX_PUBLISHERS,
            max_history_fetches: DEFAULT_MAX_HISTORY_FETCHES,
            max_history_fetches_per_connection: DEFAULT_MAX_HISTORY_FETCHES_PER_CONNECTION,
            // issue 10: hardening
            inbound_byte_rate: 8 * 1024 * 1024,
            inbound_byte_burst: 8 * 1024 * 1024,
            publish_body_timeout: Duration::from_secs(10),
            metrics_token: None,
            metrics_route: true,
            // issue 14: identity-provider keys and per-IP limits
            jwks: None,
            jwks_refetch_interval: DEFAULT_JWKS_REFETCH_INTERVAL,
            jwt_audience: None,
            jwt_issuer: None,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            handshake_rate_per_ip: DEFAULT_HANDSHAKE_RATE_PER_IP,
            handshake_burst_per_ip: DEFAULT_HANDSHAKE_BURST_PER_IP,
            trusted_proxies: Vec::new(),
            // issue 15: presence
            presence: PresenceSettings {
                max_members: DEFAULT_MAX_PRESENCE_MEMBERS,
                max_info_bytes: DEFAULT_MAX_PRESENCE_INFO_BYTES,
                claims: DEFAULT_PRESENCE_CLAIMS
                    .iter()
                    .map(|c| (*c).to_owned())
                    .collect(),
                ttl: DEFAULT_PRESENCE_TTL,
            },
        }
    }

    /// Clock skew tolerated when checking a token's `exp`. Defaults to 30 seconds; values above
    /// [`MAX_JWT_LEEWAY`] (60 s) are clamped to it.
    pub fn with_jwt_leeway(mut self, leeway: Duration) -> Self {
        self.auth.jwt_leeway = leeway.min(MAX_JWT_LEEWAY);
        self
    }

    /// How many outbound messages (events and replies) may wait for one connection's writer.
    /// A connection whose queue is full when an event or reply arrives is closed with 4003
    /// (slow consumer). Defaults to 1024 messages; values below 1 are raised to 1.
    pub fn with_outbound_queue_capacity(mut self, capacity: usize) -> Self {
        self.buffers.outbound_queue_capacity = capacity.max(1);
        self
    }

    /// The largest WebSocket message (and frame) a client may send; a bigger one closes the
    /// connection with 1009. Defaults to 64 KiB.
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.buffers.max_message_size = bytes.max(1);
        self
    }

    /// Initial size of each connection's read buffer. tungstenite allocates (and zero-fills) it
    /// for every connection and keeps it as long as the connection, so it is one of the largest
    /// parts of an idle connection's memory; client messages are small (a `subscribe` or a
    /// `ping` fits in 128 bytes) and a bigger one grows the buffer as needed (it then stays at
    /// that size). Raise it for clients that pipeline many or long messages (fewer reads per
    /// burst). Defaults to 128 bytes.
    pub fn with_read_buffer_size(mut self, bytes: usize) -> Self {
        self.buffers.read_buffer_size = bytes.max(64);
        self
    }

    /// How many bytes of queued frames the connection gathers before it writes to the socket; a
    /// batch is always written when the queue runs empty. Defaults to 4 KiB.
    pub fn with_write_buffer_size(mut self, bytes: usize) -> Self {
        self.buffers.write_buffer_size = bytes;
        self
    }

    /// The most bytes a connection's write buffer may hold; a single outbound message bigger
    /// than this closes the connection. Defaults to 4 MiB (always kept above
    /// the write buffer size).
    pub fn with_max_write_buffer_size(mut self, bytes: usize) -> Self {
        self.buffers.max_write_buffer_size = bytes;
        self
    }

    /// How many topics one connection may be subscribed to at once; a subscribe beyond it gets
    /// an error reply (the connection stays open). Defaults to 1024.
    pub fn with_max_subscriptions_per_connection(mut self, max: usize) -> Self {
        self.limits.max_subscriptions_per_connection = max;
        self
    }

    /// The most user ids one publish may list in `only_users`, and in `exclude_users`
    /// ([`Audience`](crate::Audience)): `POST /publish` answers 422 above it,
    /// [`Tidings::publish_to`](crate::Tidings::publish_to) an error. Each listed id is checked
    /// per subscriber (a hash lookup) and kept with the event in the history. Defaults to 1000.
    pub fn with_max_audience_users(mut self, max: usize) -> Self {
        self.max_audience_users = max;
        self
    }

    /// The largest `POST /publish` body accepted (413 above it). Defaults to 256 KiB.
    pub fn with_max_publish_body(mut self, bytes: usize) -> Self {
        self.max_publish_body = bytes;
        self
    }

    /// How long the server waits for a client to answer its close frame before it drops the
    /// TCP connection. Defaults to 3 seconds.
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// How long [`serve`](crate::serve) waits, after shutdown starts, for HTTP requests and
    /// WebSocket connections to finish before it returns anyway. Defaults to 10 seconds.
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How long [`serve`](crate::serve) waits for a client's request headers (the first
    /// request and each keep-alive one) before it drops the connection. Defaults to 15 seconds.
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Least time between two socket writes to one busy connection. A connection that was
    /// written to less than this long ago waits out the rest before its next write, so the
    /// events arriving meanwhile share one system call; a connection that was quiet for longer
    /// is written to at once. Trades up to this much latency, only on connections receiving
    /// more than one event per `delay`, for less CPU per delivered message. Defaults to zero
    /// (every batch is written as soon as the connection takes it).
    pub fn with_write_delay(mut self, delay: Duration) -> Self {
        self.write_delay = delay;
        self
    }

    /// Idle time after which the kernel starts TCP keepalive probes on a connection accepted
    /// by [`serve`](crate::serve) (then every 10 s, dropping it after 3 unanswered probes), so
    /// that peers gone without a FIN or RST are eventually removed; `None` disables it.
    /// Defaults to 60 seconds.
    pub fn with_tcp_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.tcp_keepalive = idle;
        self
    }

    /// Sustained inbound messages per second one connection may send (the token bucket's
    /// refill rate). Every frame counts (text, binary, and Ping/Pong control frames); a message
    /// over the limit is dropped and answered with `{"error":"Rate limit exceeded"}`. Defaults to 100 per second; values
    /// below 1 are raised to 1.
    pub fn with_message_rate(mut self, per_second: u32) -> Self {
        self.rate.per_second = f64::from(per_second.max(1));
        self
    }

    /// How many inbound messages one connection may send at once before the rate limit
    /// applies (the token bucket's size; a fresh connection starts with a full bucket), so a
    /// client resubscribing hundreds of topics after a reconnect passes. Defaults to 1000;
    /// values below 1 are raised to 1.
    pub fn with_message_burst(mut self, burst: u32) -> Self {
        self.rate.burst = f64::from(burst.max(1));
        self
    }

    /// How many rate-limited (dropped) messages within the
    /// [violation window](Config::with_rate_violation_window) close the connection with 1008
    /// (policy violation). Defaults to 100; values below 1 are raised to 1.
    pub fn with_max_rate_violations(mut self, violations: u32) -> Self {
        self.rate.max_violations = violations.max(1);
        self
    }

    /// The window in which [rate-limit violations](Config::with_max_rate_violations) are
    /// counted. Defaults to 10 seconds.
    pub fn with_rate_violation_window(mut self, window: Duration) -> Self {
        self.rate.window = window;
        self
    }

    /// How many WebSocket connections the server holds at once. A connection beyond it
    /// completes the handshake and is then closed with 4005 "too many connections"; a slot is
    /// released as soon as a connection ends. Defaults to 100,000 (set it below the process's
    /// open-file limit); values below 1 are raised to 1.
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.limits.max_connections = max.max(1);
        self
    }

    /// How many WebSocket connections one user (the token's `sub`) may hold at once, e.g. one
    /// per browser tab. A connection beyond it completes the handshake and is then closed with
    /// 4005 "too many connections". Defaults to 100; values below 1 are raised to 1.
    pub fn with_max_connections_per_user(mut self, max: usize) -> Self {
        self.limits.max_connections_per_user = max.max(1);
        self
    }

    /// How many revocations (`POST /admin/revoke`: a token id or a user, each until a time)
    /// the server keeps at once; an entry is dropped once its time has passed. A revocation
    /// beyond it is refused with 507 while the others are still live (none lapses silently).
    /// Defaults to 100,000 (about 10 MB with 64-byte ids); values below 1 are raised to 1.
    pub fn with_max_revocations(mut self, max: usize) -> Self {
        self.max_revocations = max.max(1);
        self
    }

    /// Most events in one `POST /publish/batch` request (the body is still bounded by
    /// [`Config::with_max_publish_body`]); more is refused with 422 and nothing is published.
    /// Defaults to 1,000; values below 1 are raised to 1.
    pub fn with_max_publish_batch(mut self, max: usize) -> Self {
        self.max_publish_batch = max.max(1);
        self
    }

    /// How long the answer to a publish with an `Idempotency-Key` is kept: a retry with the
    /// same key within it is answered the same and publishes nothing. Defaults to 10 minutes.
    pub fn with_idempotency_ttl(mut self, ttl: Duration) -> Self {
        self.idempotency_ttl = ttl;
        self
    }

    /// Most `Idempotency-Key`s held at once (all publishers together); beyond it the oldest
    /// is forgotten early. Defaults to 100,000; values below 1 are raised to 1.
    pub fn with_max_idempotency_keys(mut self, max: usize) -> Self {
        self.max_idempotency_keys = max.max(1);
        self
    }

    /// Most bytes of `Idempotency-Key`s and kept answers held at once (a batch's answer holds
    /// one result per event); beyond it the oldest key is forgotten early. Defaults to 64 MiB.
    pub fn with_max_idempotency_bytes(mut self, bytes: usize) -> Self {
        self.max_idempotency_bytes = bytes;
        self
    }

    /// How many bytes of outbound messages (events and replies) may wait for one
    /// connection's writer, on top of the [message count](Config::with_outbound_queue_capacity).
    /// A connection whose waiting messages would exceed it is closed with 4003 (slow
    /// consumer, reconnectable) and leaves every topic; the broadcast never waits for it. A
    /// single message arriving at an empty queue is always taken. Defaults to 1 MiB.
    pub fn with_max_outbound_bytes(mut self, bytes: usize) -> Self {
        self.buffers.max_outbound_bytes = bytes;
        self
    }

    /// How often the server sends a WebSocket Ping frame on every connection (browsers
    /// answer with a Pong on their own). Defaults to 25 seconds; clamped to between 10 ms and
    /// one day.
    pub fn with_ping_interval(mut self, interval: Duration) -> Self {
        self.heartbeat.ping_interval = interval.clamp(MIN_HEARTBEAT, MAX_HEARTBEAT);
        self
    }

    /// How long a connection may stay silent (no message, Pong or Ping from the client)
    /// before the server closes it with 4004 (no pong) and drops it. Keep it well above the
    /// [ping interval](Config::with_ping_interval). Defaults to 60 seconds; clamped to between
    /// 10 ms and one day.
    pub fn with_pong_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat.pong_timeout = timeout.clamp(MIN_HEARTBEAT, MAX_HEARTBEAT);
        self
    }

    /// The policy that decides every subscribe; a denied one is answered
    /// `{"error":"Forbidden","topic":T}`. Defaults to [`ClaimTopics`]: the token's optional
    /// `topics` claim lists the allowed patterns, and a token without it may subscribe to
    /// anything.
    pub fn with_topic_policy(mut self, policy: impl TopicPolicy) -> Self {
        self.topic_policy = Policy(Arc::new(policy));
        self
    }

    /// The browser origins (`"https://app.example.com"`: scheme, host and port if not the
    /// default) allowed to open `/ws`. An upgrade request with an `Origin` header not on the
    /// list gets 403 Forbidden before the handshake; a request without `Origin` (not a
    /// browser) is allowed and still needs a valid token. Compared case-insensitively,
    /// ignoring a trailing `/`. Defaults to no list (every origin accepted, as in the seed).
    pub fn with_allowed_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.allowed_origins = Some(
            origins
                .into_iter()
                .map(|o| crate::origin::normalize(o.as_ref()))
                .collect(),
        );
        self
    }

    /// How many recent events each topic keeps for recovery (a subscribe with `since` replays
    /// from them); 0 disables history, so every recovery fails. The history holds the same
    /// shared bytes as the broadcast, not a copy. Defaults to 1000 events.
    pub fn with_history_size(mut self, events: usize) -> Self {
        self.history.size = events;
        self
    }

    /// The oldest event a topic's history keeps; older ones are dropped, and a topic without
    /// subscribers and with no event younger than this is forgotten (its next event starts
    /// a new epoch). With Redis it is also the TTL of the topic's keys. Defaults to 5 minutes.
    pub fn with_history_ttl(mut self, ttl: Duration) -> Self {
        self.history.ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// Use the Redis at `url` (`redis://host:port[/db]`) as the broker: seq, epoch and history
    /// live in Redis and events reach every node connected to it (see
    /// [`broker`](crate::broker)). Defaults to `None`: the in-memory broker (one node). An
    /// invalid URL makes every publish fail (check it with
    /// [`broker::check_redis_url`](crate::broker::check_redis_url)), and so does any URL in a
    /// build without the crate's `redis` feature (on by default).
    pub fn with_redis_url(mut self, url: Option<String>) -> Self {
        self.redis_url = url.map(Secret);
        self
    }

    /// The most bytes one topic's history keeps (in-memory broker; each event counts its JSON
    /// text plus 96 bytes of bookkeeping, so tiny events are bounded too): the oldest events
    /// are dropped first, so a few huge events cannot pin megabytes per topic. A replay
    /// larger than half a connection's outbound budget
    /// ([`Config::with_max_outbound_bytes`]) is answered `recovered: false` anyway. Defaults to
    /// 1 MiB ([`DEFAULT_HISTORY_MAX_TOPIC_BYTES`]).
    pub fn with_history_max_topic_bytes(mut self, bytes: usize) -> Self {
        self.history.max_topic_bytes = bytes;
        self
    }

    /// The most bytes all topics' histories keep together (in-memory broker; counted as in
    /// [`Config::with_history_max_topic_bytes`]).
    /// When an event would take the total over it, the publishing topic's own oldest events
    /// are dropped to make room; a topic with nothing to drop does not record the event (it is
    /// still delivered live; a later recovery across it answers `recovered: false`). Defaults
    /// to 256 MiB ([`DEFAULT_HISTORY_MAX_TOTAL_BYTES`]).
    pub fn with_history_max_total_bytes(mut self, bytes: usize) -> Self {
        self.history.max_total_bytes = bytes;
        self
    }

    /// The most topics that hold history at once (in-memory broker). Beyond it, an event on a
    /// topic without history is delivered to its live subscribers but not recorded, and an
    /// event on a topic nobody follows is dropped without creating the topic, so publishing
    /// to millions of distinct topics cannot grow memory. Defaults to 100,000
    /// ([`DEFAULT_MAX_HISTORY_TOPICS`]).
    pub fn with_max_history_topics(mut self, topics: usize) -> Self {
        self.history.max_topics = topics;
        self
    }

    /// Events per second one publisher (the `sub` of a publish token) may send through
    /// `POST /publish`, with a burst of `burst`; beyond it the request is answered 429 with
    /// `Retry-After`, and nothing is published. In-process
    /// [`Tidings::publish`](crate::Tidings::publish) is not limited (the embedding app is
    /// trusted). Defaults to 1,000 per second, burst 5,000 ([`DEFAULT_PUBLISH_RATE`],
    /// [`DEFAULT_PUBLISH_BURST`]).
    pub fn with_publish_rate(mut self, per_second: u32, burst: u32) -> Self {
        self.publish_rate = per_second.max(1);
        self.publish_burst = burst.max(1);
        self
    }

    /// How many distinct publishers the publish rate limit tracks at once. Publishers idle for
    /// longer than a full bucket's refill are forgotten first; when all are recent, a new
    /// publisher is refused with 429 rather than letting the table grow. Defaults to 10,000
    /// ([`DEFAULT_MAX_PUBLISHERS`]).
    pub fn with_max_publishers(mut self, publishers: usize) -> Self {
        self.max_publishers = publishers.max(1);
        self
    }

    /// With Redis: how many history fetches (subscribes with `since`) one node runs against
    /// Redis at once. A fetch that waits longer than 2 s for a slot answers `recovered: false`
    /// (the client refetches). Bounds the load one node's clients put on Redis. At least 1.
    /// Defaults to 32.
    pub fn with_max_history_fetches(mut self, max: usize) -> Self {
        self.max_history_fetches = max.max(1);
        self
    }

    /// With Redis: how many history fetches one connection runs at once; its further
    /// subscribes with `since` wait their turn (in order, every one answered), at most one
    /// per topic it may subscribe to (a subscribe beyond that, from a client looping
    /// subscribe/unsubscribe, answers `recovered: false` at once). At least 1. Defaults to 4.
    pub fn with_max_history_fetches_per_connection(mut self, max: usize) -> Self {
        self.max_history_fetches_per_connection = max.max(1);
        self
    }

    /// The per-topic history size in effect.
    pub fn history_size(&self) -> usize {
        self.history.size
    }

    /// The history max age in effect.
    pub fn history_ttl(&self) -> Duration {
        self.history.ttl
    }

    /// The JWT clock leeway in effect.
    pub fn jwt_leeway(&self) -> Duration {
        self.auth.jwt_leeway
    }

    /// The per-connection outbound queue capacity in effect.
    pub fn outbound_queue_capacity(&self) -> usize {
        self.buffers.outbound_queue_capacity
    }

    /// The maximum inbound WebSocket message size in effect.
    pub fn max_message_size(&self) -> usize {
        self.buffers.max_message_size
    }

    /// The maximum number of subscriptions per connection in effect.
    pub fn max_subscriptions_per_connection(&self) -> usize {
        self.limits.max_subscriptions_per_connection
    }

    /// The maximum `POST /publish` body size in effect.
    pub fn max_publish_body(&self) -> usize {
        self.max_publish_body
    }

    /// See [`Config::with_max_audience_users`].
    pub fn max_audience_users(&self) -> usize {
        self.max_audience_users
    }

    /// The shutdown drain timeout in effect.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }

    // issue 10: hardening

    /// Sustained bytes per second one WebSocket connection may send (the refill rate of its
    /// inbound byte budget). Every byte counts, frame headers included, so this also bounds
    /// frames per second (a masked client frame is at least 6 bytes) and the CPU one
    /// connection can cost, which the message rate alone does not: a run of continuation
    /// frames is no message until its last frame. Over the budget the
    /// connection is simply not read (TCP slows the client down); a connection held back for
    /// more than half of the [violation window](Config::with_rate_violation_window) within it
    /// is closed with 1008. Enforced by [`serve`](crate::serve). Defaults to 8 MiB/s: above
    /// 100 messages/s of 64 KiB (the default message rate and size); values below 1 are
    /// raised to 1.
    pub fn with_inbound_byte_rate(mut self, bytes_per_second: u64) -> Self {
        self.inbound_byte_rate = bytes_per_second.max(1);
        self
    }

    /// How many bytes one WebSocket connection may send at once before its
    /// [inbound byte rate](Config::with_inbound_byte_rate) applies (the bucket's size; a new
    /// connection starts with a full bucket). Defaults to 8 MiB: 128 messages of 64 KiB, or a
    /// thousand topics resubscribed twenty times over; values below 1 are raised to 1.
    pub fn with_inbound_byte_burst(mut self, bytes: u64) -> Self {
        self.inbound_byte_burst = bytes.max(1);
        self
    }

    /// How long `POST /publish` waits for the whole request body once the handler starts
    /// reading it; a slower body is answered 408 and the connection is closed, so a client
    /// trickling a body cannot hold a connection. Defaults to 10 seconds.
    pub fn with_publish_body_timeout(mut self, timeout: Duration) -> Self {
        self.publish_body_timeout = timeout;
        self
    }

    /// A bearer token that `GET /metrics` requires (`Authorization: Bearer <token>`; 401
    /// otherwise). Defaults to `None`: the metrics are served to anyone who can reach them.
    pub fn with_metrics_token(mut self, token: Option<String>) -> Self {
        self.metrics_token = token.filter(|t| !t.is_empty()).map(Secret);
        self
    }

    /// Whether [`Tidings::router`](crate::Tidings::router) serves `GET /metrics`. Turn it off
    /// to serve the metrics elsewhere, e.g.
    /// [`Tidings::metrics_router`](crate::Tidings::metrics_router) on a private listener.
    /// Defaults to `true`.
    pub fn with_metrics_route(mut self, enabled: bool) -> Self {
        self.metrics_route = enabled;
        self
    }

    // issue 14: identity-provider keys and per-IP limits

    /// Accept tokens signed by an identity provider with a key from this JWKS (JSON Web Key
    /// Set): an `https://` URL (`http://` only for local tests), or a file path. RS256/384/512,
    /// PS256/384/512, ES256, ES384 and EdDSA keys are used; symmetric keys are ignored.
    /// HS256 tokens keep being checked with the secret given to [`Config::new`] (an empty
    /// secret refuses them). The keys are cached and refetched when a token names an
    /// unknown `kid` (at most once per [`Config::with_jwks_refetch_interval`]) or when the
    /// cache is older than [`JWKS_MAX_AGE`](crate::jwks::JWKS_MAX_AGE). Defaults to `None`
    /// (HS256 only).
    pub fn with_jwks(mut self, source: impl Into<String>) -> Self {
        self.jwks = Some(source.into()).filter(|s| !s.is_empty());
        self
    }

    /// The least time between two fetches of the JWKS, however many tokens name unknown keys:
    /// a client sending random `kid`s cannot make the server hammer the identity provider.
    /// A failed fetch counts. Defaults to 30 seconds.
    pub fn with_jwks_refetch_interval(mut self, interval: Duration) -> Self {
        self.jwks_refetch_interval = interval;
        self
    }

    /// Require tokens to name this audience (`aud`, a string or a list containing it).
    /// Defaults to none (the `aud` claim is not checked).
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.jwt_audience = Some(audience.into()).filter(|s| !s.is_empty());
        self
    }

    /// Require tokens to carry this issuer (`iss`). Defaults to none (not checked).
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.jwt_issuer = Some(issuer.into()).filter(|s| !s.is_empty());
        self
    }

    /// Most WebSockets open at once from one client address (an IPv6 address counts by its
    /// /64), whether authenticated or not (a socket refused with 4001 or 4005 counts until
    /// it is closed). A handshake over it is answered HTTP 429 before the upgrade. Defaults
    /// to 2,048: an office of 200 people behind one NAT with ten tabs each; 0 means no limit.
    pub fn with_max_connections_per_ip(mut self, max: usize) -> Self {
        self.max_connections_per_ip = max;
        self
    }

    /// WebSocket handshakes per second one client address may start (a token bucket of
    /// `burst`, refilled at `per_second`); over it, HTTP 429 before the upgrade and before
    /// the token is looked at. Defaults to 100/s with a burst of 1,000 (a NAT-ed office
    /// reconnecting at once after a restart); a rate of 0 means no limit.
    pub fn with_handshake_rate_per_ip(mut self, per_second: u32, burst: u32) -> Self {
        self.handshake_rate_per_ip = per_second;
        self.handshake_burst_per_ip = burst.max(1);
        self
    }

    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` headers are believed: only when
    /// the TCP peer is in one of these networks is the client address taken from them (the
    /// right-most address that is not itself a trusted proxy). Anyone else's headers are
    /// ignored (they could name any address). Defaults to none: the TCP peer is the client.
    pub fn with_trusted_proxies<I, N>(mut self, proxies: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<ipnet::IpNet>,
    {
        self.trusted_proxies = proxies.into_iter().map(Into::into).collect();
        self
    }

    /// Lowers [`Config::with_max_connections`] to what the process's open-file limit
    /// (`RLIMIT_NOFILE`, soft) can hold, minus a reserve for listeners, publishers, Redis and
    /// log files (a tenth of the limit, between 32 and 1,024 descriptors), and logs the
    /// decision. Unchanged when the limit cannot be read or is high enough. The `tidings`
    /// binary calls it after raising the soft limit to the hard one.
    pub fn with_max_connections_from_open_file_limit(mut self) -> Self {
        match crate::ip::connection_cap_from_open_file_limit() {
            Some((limit, cap)) if cap < self.limits.max_connections => {
                tracing::warn!(
                    open_file_limit = limit,
                    configured = self.limits.max_connections,
                    max_connections = cap,
                    "max connections lowered to {cap}: the open-file limit is {limit} \
                     (raise it with `ulimit -n` or LimitNOFILE=)"
                );
                self.limits.max_connections = cap;
            }
            Some((limit, cap)) => tracing::info!(
                open_file_limit = limit,
                max_connections = self.limits.max_connections,
                fd_cap = cap,
                "max connections {} fit the open-file limit {limit}",
                self.limits.max_connections
            ),
            None => tracing::warn!("cannot read the open-file limit"),
        }
        self
    }

    // issue 15: presence

    /// Most users present at once on one topic (`"presence":"join"`), one entry per user
    /// however many connections it has; a join beyond it is answered
    /// `{"error":"Too many present members","topic":T}` and the connection watches the topic's
    /// presence without being present (its subscription stays). Also bounds the snapshot a
    /// watcher receives. Defaults to 1,000 ([`DEFAULT_MAX_PRESENCE_MEMBERS`]); values below 1
    /// are raised to 1.
    pub fn with_max_presence_members(mut self, max: usize) -> Self {
        self.presence.max_members = max.max(1);
        self
    }

    /// Most bytes of one present user's `info` (the JSON object built from the
    /// [presence claims](Config::with_presence_claims) of its token); a join whose info is
    /// larger is answered `{"error":"Presence info too large","topic":T}` (the subscription
    /// stays, watching only). Defaults to 256 ([`DEFAULT_MAX_PRESENCE_INFO_BYTES`]).
    pub fn with_max_presence_info_bytes(mut self, bytes: usize) -> Self {
        self.presence.max_info_bytes = bytes;
        self
    }

    /// The token claims copied into a present user's `info` (those the token carries, with
    /// their JSON values; `{}` when it carries none). Defaults to `["name"]`
    /// ([`DEFAULT_PRESENCE_CLAIMS`]); an empty list gives every user `{}`.
    pub fn with_presence_claims<I, S>(mut self, claims: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.presence.claims = claims.into_iter().map(Into::into).collect();
        self
    }

    /// With Redis: how long a node's presence entries outlive its last heartbeat. Each node
    /// renews its heartbeat every quarter of it and sweeps the entries of nodes whose heartbeat
    /// lapsed as often, so the users of a node that died (killed, cut off) leave on every other
    /// node within 1.25 × this. Defaults to 20 seconds ([`DEFAULT_PRESENCE_TTL`]); clamped to
    /// at least 1 second.
    pub fn with_presence_ttl(mut self, ttl: Duration) -> Self {
        self.presence.ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// The presence TTL in effect (see [`Config::with_presence_ttl`]).
    pub fn presence_ttl(&self) -> Duration {
        self.presence.ttl
    }

    /// The most WebSocket connections in total (after
    /// [`Config::with_max_connections_from_open_file_limit`]).
    pub fn max_connections(&self) -> usize {
        self.limits.max_connections
    }
}

impl Config {
    /// The per-connection message rate limit, as the connection loop reads it.
    pub(crate) fn rate_settings(&self) -> &Rate {
        &self.rate
    }

    pub(crate) fn inbound_byte_settings(&self) -> crate::inbound::ByteBudgetSettings {
        crate::inbound::ByteBudgetSettings {
            per_second: self.inbound_byte_rate as f64,
            burst: self.inbound_byte_burst as f64,
            window: self.rate.window,
            max_throttled: self.rate.window / 2,
        }
    }

    /// Ping interval and pong timeout, as the connection loop reads them.
    pub(crate) fn heartbeat_settings(&self) -> &Heartbeat {
        &self.heartbeat
    }
}

/// A secret setting (the JWT secret, the metrics token, a Redis URL that may carry a
/// password): usable by the server, printed as `<redacted>` by `Debug`, so a logged `Config`
/// never leaks it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Token checking: the HS256 secret and the clock leeway
/// ([`Config::new`], [`Config::with_jwt_leeway`]).
#[derive(Debug, Clone)]
pub(crate) struct Auth {
    pub(crate) jwt_secret: Secret,
    pub(crate) jwt_leeway: Duration,
}

/// Pings and deadlines ([`Config::with_ping_interval`], [`Config::with_pong_timeout`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heartbeat {
    pub(crate) ping_interval: Duration,
    pub(crate) pong_timeout: Duration,
}

/// The per-connection inbound message rate limit ([`Config::with_message_rate`],
/// [`Config::with_message_burst`], [`Config::with_max_rate_violations`],
/// [`Config::with_rate_violation_window`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rate {
    /// Tokens added per second.
    pub(crate) per_second: f64,
    /// Most tokens the bucket holds (and holds at the start).
    pub(crate) burst: f64,
    /// Violations within `window` that close the connection.
    pub(crate) max_violations: u32,
    /// The window violations are counted in.
    pub(crate) window: Duration,
}

/// Connection counts ([`Config::with_max_connections`],
/// [`Config::with_max_connections_per_user`],
/// [`Config::with_max_subscriptions_per_connection`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_user: usize,
    pub(crate) max_subscriptions_per_connection: usize,
}

/// Bounds of the in-memory history (the `Config::with_history_*` settings and
/// [`Config::with_max_history_topics`]); the Redis broker applies `size` and `ttl`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct HistoryLimits {
    /// Most events one topic keeps.
    pub size: usize,
    /// How long an event is kept.
    pub ttl: Duration,
    /// Most bytes of event text one topic keeps.
    pub max_topic_bytes: usize,
    /// Most bytes of event text all topics keep together.
    pub max_total_bytes: usize,
    /// Most topics holding history at once.
    pub max_topics: usize,
}

impl HistoryLimits {
    /// The limits configured in `config`.
    pub fn from_config(config: &Config) -> Self {
        config.history
    }
}

/// Per-connection buffers and queues ([`Config::with_outbound_queue_capacity`],
/// [`Config::with_max_outbound_bytes`], [`Config::with_read_buffer_size`],
/// [`Config::with_write_buffer_size`], [`Config::with_max_write_buffer_size`],
/// [`Config::with_max_message_size`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Buffers {
    pub(crate) outbound_queue_capacity: usize,
    pub(crate) max_outbound_bytes: usize,
    pub(crate) read_buffer_size: usize,
    pub(crate) write_buffer_size: usize,
    pub(crate) max_write_buffer_size: usize,
    pub(crate) max_message_size: usize,
}

/// Presence bounds and sources ([`Config::with_max_presence_members`],
/// [`Config::with_max_presence_info_bytes`], [`Config::with_presence_claims`],
/// [`Config::with_presence_ttl`]).
#[derive(Debug, Clone)]
pub(crate) struct PresenceSettings {
    pub(crate) max_members: usize,
    pub(crate) max_info_bytes: usize,
    pub(crate) claims: Vec<String>,
    pub(crate) ttl: Duration,
}

/// The topic policy, shown as `<policy>` by `Debug`.
#[derive(Clone)]
pub(crate) struct Policy(Arc<dyn TopicPolicy>);

impl std::ops::Deref for Policy {
    type Target = dyn TopicPolicy;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<policy>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leeway_is_clamped() {
        let c = Config::new("s").with_jwt_leeway(Duration::from_secs(600));
        assert_eq!(c.jwt_leeway(), MAX_JWT_LEEWAY);
    }

    #[test]
    fn debug_hides_the_secret() {
        let text = format!(
            "{:?}",
            Config::new("hunter2").with_metrics_token(Some("scrape-me".into()))
        );
        assert!(!text.contains("hunter2"));
        assert!(!text.contains("scrape-me"));
        let text = format!(
            "{:?}",
            Config::new("s").with_redis_url(Some("redis://:pw-in-url@10.0.0.1".into()))
        );
        assert!(!text.contains("pw-in-url"), "{text}");
        // Everything else is shown, in its group.
        assert!(
            text.contains("heartbeat: Heartbeat { ping_interval: 25s"),
            "{text}"
        );
    }

    #[test]
    fn builders_fill_the_groups_the_connection_loop_reads() {
        let c = Config::new("s")
            .with_message_rate(7)
            .with_message_burst(9)
            .with_ping_interval(Duration::from_secs(3))
            .with_history_size(5);
        assert_eq!(
            (c.rate_settings().per_second, c.rate_settings().burst),
            (7.0, 9.0)
        );
        assert_eq!(c.heartbeat_settings().ping_interval, Duration::from_secs(3));
        assert_eq!(HistoryLimits::from_config(&c).size, 5);
        assert_eq!(c.history_size(), 5);
    }
}
