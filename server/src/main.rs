//! The `tidings` gateway: the tidings server as a standalone process that any backend
//! publishes to over HTTP.
//!
//! Thin on purpose: it reads flags and environment, starts logging, raises the open-file
//! limit, binds, prints `tidings listening on http://ADDR` on stdout and calls the library.
//! Subcommands: `token` mints a JWT, `dev` serves with a throwaway secret and prints ready-made
//! tokens and a curl line.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tidings_server::{Config, MIN_SECRET_LEN, PUBLISH_SCOPE, Tidings, config};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::prelude::*;

/// The tidings realtime gateway.
#[derive(Debug, Parser)]
#[command(name = "tidings", version, about)]
struct Cli {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "BIND", default_value = "127.0.0.1:8000", global = true)]
    bind: String,
    /// HS256 secret for every token (required, except with `dev`), at least 32 bytes. Prefer
    /// the environment variable or `--jwt-secret-file`: a flag's value is visible to every
    /// local user in `ps`.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, global = true)]
    jwt_secret: Option<String>,
    /// A file holding the HS256 secret (one trailing newline is ignored); instead of
    /// `--jwt-secret`.
    #[arg(
        long,
        env = "JWT_SECRET_FILE",
        global = true,
        conflicts_with = "jwt_secret"
    )]
    jwt_secret_file: Option<std::path::PathBuf>,
    /// Accept a JWT secret shorter than 32 bytes (only for local experiments: a short secret
    /// can be brute-forced from any one token).
    #[arg(long, env = "ALLOW_WEAK_SECRET", global = true)]
    allow_weak_secret: bool,
    /// Serve `GET /metrics` on this address only (e.g. `127.0.0.1:9100`), and not on `--bind`.
    #[arg(long, env = "METRICS_BIND", global = true)]
    metrics_bind: Option<String>,
    /// Require `Authorization: Bearer <token>` on `GET /metrics`; see
    /// `Config::with_metrics_token`.
    #[arg(long, env = "METRICS_TOKEN", hide_env_values = true, global = true)]
    metrics_token: Option<String>,
    /// Log filter, e.g. `info` or `tidings_server=debug` (defaults to RUST_LOG, then `info`).
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// Log line format on stderr.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Least milliseconds between two writes to one busy connection (0: write at once); see
    /// `Config::with_write_delay`.
    #[arg(long, env = "WRITE_DELAY_MS", default_value_t = 0, global = true)]
    write_delay_ms: u64,
    /// Comma-separated browser origins allowed to open /ws (e.g. `https://app.example.com`);
    /// others get 403. Unset: every origin (see `Config::with_allowed_origins`).
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',', global = true)]
    allowed_origins: Option<Vec<String>>,
    /// Most WebSocket connections in total (default 100000); see `Config::with_max_connections`.
    #[arg(long, env = "MAX_CONNECTIONS", global = true)]
    max_connections: Option<usize>,
    /// Most WebSocket connections per user (default 100); see
    /// `Config::with_max_connections_per_user`.
    #[arg(long, env = "MAX_CONNECTIONS_PER_USER", global = true)]
    max_connections_per_user: Option<usize>,
    /// Redis URL (`redis://host:port`): use Redis as the broker (history and pub/sub shared by
    /// every node on it). Without it the broker is in memory (one node).
    #[arg(long, env = "REDIS_URL", hide_env_values = true, global = true)]
    redis_url: Option<String>,
    /// Events kept per topic for recovery; see `Config::with_history_size`.
    #[arg(long, env = "HISTORY_SIZE", default_value_t = config::DEFAULT_HISTORY_SIZE, global = true)]
    history_size: usize,
    /// Max age in seconds of a topic's history; see `Config::with_history_ttl`.
    #[arg(long, env = "HISTORY_TTL_SECS", default_value_t = config::DEFAULT_HISTORY_TTL.as_secs(), global = true)]
    history_ttl_secs: u64,
    /// Most bytes of event text one topic's history keeps; see
    /// `Config::with_history_max_topic_bytes`.
    #[arg(long, env = "HISTORY_MAX_TOPIC_BYTES", default_value_t = config::DEFAULT_HISTORY_MAX_TOPIC_BYTES, global = true)]
    history_max_topic_bytes: usize,
    /// Most bytes of event text all histories keep together; see
    /// `Config::with_history_max_total_bytes`.
    #[arg(long, env = "HISTORY_MAX_TOTAL_BYTES", default_value_t = config::DEFAULT_HISTORY_MAX_TOTAL_BYTES, global = true)]
    history_max_total_bytes: usize,
    /// Most topics holding history at once; see `Config::with_max_history_topics`.
    #[arg(long, env = "MAX_HISTORY_TOPICS", default_value_t = config::DEFAULT_MAX_HISTORY_TOPICS, global = true)]
    max_history_topics: usize,
    /// Events per second one publisher may send to POST /publish; see
    /// `Config::with_publish_rate`.
    #[arg(long, env = "PUBLISH_RATE", default_value_t = config::DEFAULT_PUBLISH_RATE, global = true)]
    publish_rate: u32,
    /// Burst of the per-publisher rate; see `Config::with_publish_rate`.
    #[arg(long, env = "PUBLISH_BURST", default_value_t = config::DEFAULT_PUBLISH_BURST, global = true)]
    publish_burst: u32,
    /// Live revocations a node keeps (`POST /admin/revoke`; 507 when full); see
    /// `Config::with_max_revocations`.
    #[arg(long, env = "MAX_REVOCATIONS", default_value_t = config::DEFAULT_MAX_REVOCATIONS, global = true)]
    max_revocations: usize,
    /// Most events in one `POST /publish/batch`; see `Config::with_max_publish_batch`.
    #[arg(long, env = "MAX_PUBLISH_BATCH", default_value_t = config::DEFAULT_MAX_PUBLISH_BATCH, global = true)]
    max_publish_batch: usize,
    /// Seconds an `Idempotency-Key`'s answer is kept; see `Config::with_idempotency_ttl`.
    #[arg(long, env = "IDEMPOTENCY_TTL_SECS", default_value_t = config::DEFAULT_IDEMPOTENCY_TTL.as_secs(), global = true)]
    idempotency_ttl_secs: u64,
    /// Most `Idempotency-Key`s one node keeps (memory broker); see
    /// `Config::with_max_idempotency_keys`.
    #[arg(long, env = "MAX_IDEMPOTENCY_KEYS", default_value_t = config::DEFAULT_MAX_IDEMPOTENCY_KEYS, global = true)]
    max_idempotency_keys: usize,
    /// Most bytes of kept `Idempotency-Key` answers (memory broker); see
    /// `Config::with_max_idempotency_bytes`.
    #[arg(long, env = "MAX_IDEMPOTENCY_BYTES", default_value_t = config::DEFAULT_MAX_IDEMPOTENCY_BYTES, global = true)]
    max_idempotency_bytes: usize,
    /// With Redis: history fetches one node runs at once (default 32); see
    /// `Config::with_max_history_fetches`.
    #[arg(long, env = "MAX_HISTORY_FETCHES", global = true)]
    max_history_fetches: Option<usize>,
    /// With Redis: history fetches one connection runs at once (default 4); see
    /// `Config::with_max_history_fetches_per_connection`.
    #[arg(long, env = "MAX_HISTORY_FETCHES_PER_CONNECTION", global = true)]
    max_history_fetches_per_connection: Option<usize>,
    /// Most users present at once on one topic; see `Config::with_max_presence_members`.
    #[arg(long, env = "MAX_PRESENCE_MEMBERS", default_value_t = config::DEFAULT_MAX_PRESENCE_MEMBERS, global = true)]
    max_presence_members: usize,
    /// Most bytes of one present user's info; see `Config::with_max_presence_info_bytes`.
    #[arg(long, env = "MAX_PRESENCE_INFO_BYTES", default_value_t = config::DEFAULT_MAX_PRESENCE_INFO_BYTES, global = true)]
    max_presence_info_bytes: usize,
    /// Token claims copied into a present user's info, comma-separated (empty: none); see
    /// `Config::with_presence_claims`.
    #[arg(long, env = "PRESENCE_CLAIMS", default_value_t = config::DEFAULT_PRESENCE_CLAIMS.join(","), global = true)]
    presence_claims: String,
    /// With Redis: seconds a node's presence entries outlive its last heartbeat (its users
    /// leave everywhere within 1.25 times this after it dies); see `Config::with_presence_ttl`.
    #[arg(long, env = "PRESENCE_TTL_SECS", default_value_t = config::DEFAULT_PRESENCE_TTL.as_secs(), global = true)]
    presence_ttl_secs: u64,
    /// Seconds of clock skew allowed when checking a token's `exp`/`nbf` (at most 60; a
    /// connection closes 4002 at `exp` plus this); see `Config::with_jwt_leeway`.
    #[arg(long, env = "JWT_LEEWAY_SECS", default_value_t = config::DEFAULT_JWT_LEEWAY.as_secs(), global = true)]
    jwt_leeway_secs: u64,
    /// A JWKS (an `https://` URL, or a file path) whose keys sign tokens from an identity
    /// provider (RS256, ES256, EdDSA, …); JWT_SECRET is then optional. See
    /// `Config::with_jwks`.
    #[arg(long, env = "JWT_JWKS", global = true)]
    jwt_jwks: Option<String>,
    /// Least seconds between two fetches of the JWKS (however many unknown `kid`s arrive).
    #[arg(
        long,
        env = "JWT_JWKS_REFETCH_SECS",
        default_value_t = config::DEFAULT_JWKS_REFETCH_INTERVAL.as_secs(),
        global = true
    )]
    jwt_jwks_refetch_secs: u64,
    /// Require tokens to name this audience (`aud`); see `Config::with_audience`.
    #[arg(long, env = "JWT_AUDIENCE", global = true)]
    jwt_audience: Option<String>,
    /// Require tokens to carry this issuer (`iss`); see `Config::with_issuer`.
    #[arg(long, env = "JWT_ISSUER", global = true)]
    jwt_issuer: Option<String>,
    /// Most WebSockets open at once per client address, authenticated or not (0: no limit);
    /// see `Config::with_max_connections_per_ip`.
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP", default_value_t = config::DEFAULT_MAX_CONNECTIONS_PER_IP, global = true)]
    max_connections_per_ip: usize,
    /// WebSocket handshakes per second per client address (0: no limit); see
    /// `Config::with_handshake_rate_per_ip`.
    #[arg(long, env = "HANDSHAKE_RATE_PER_IP", default_value_t = config::DEFAULT_HANDSHAKE_RATE_PER_IP, global = true)]
    handshake_rate_per_ip: u32,
    /// Burst of the per-address handshake rate.
    #[arg(long, env = "HANDSHAKE_BURST_PER_IP", default_value_t = config::DEFAULT_HANDSHAKE_BURST_PER_IP, global = true)]
    handshake_burst_per_ip: u32,
    /// Comma-separated addresses or networks (`10.0.0.0/8`, `127.0.0.1`) of reverse proxies
    /// whose `Forwarded` / `X-Forwarded-For` are believed; see `Config::with_trusted_proxies`.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net, global = true)]
    trusted_proxies: Option<Vec<Option<ipnet::IpNet>>>,
    /// Same as the `dev` subcommand.
    #[arg(long)]
    dev: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a JWT signed with JWT_SECRET.
    // Its own help: the server flags are global (every subcommand accepts them) and would
    // otherwise drown the three that matter here. `binary.rs` checks it lists them all.
    #[command(help_template = TOKEN_HELP)]
    Token {
        /// The user id (`sub` claim).
        #[arg(long)]
        sub: String,
        /// Scope claim, e.g. `publish` for POST /publish.
        #[arg(long)]
        scope: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Serve with a generated secret; print a subscriber token, a publisher token and a curl line.
    Dev,
}

/// `tidings token --help`.
const TOKEN_HELP: &str = "\
Print a JWT (HS256) signed with JWT_SECRET: a subscriber token for /ws or, with
`--scope publish`, a publisher token for POST /publish.

{usage-heading} {usage}

Options:
      --sub <SUB>                The user id (`sub` claim)
      --scope <SCOPE>            Scope claim, e.g. `publish` for POST /publish
      --ttl <TTL>                Lifetime in seconds [default: 3600]
      --jwt-secret <JWT_SECRET>  The HS256 secret [env: JWT_SECRET]
  -h, --help                     Print help

Examples:
  JWT_SECRET=... tidings token --sub user-42 --ttl 900
  JWT_SECRET=... tidings token --sub backend --scope publish
";

// The process-wide allocator, not application state: the gateway allocates a little per
// handshake and per batch, and mimalloc's per-thread free lists make that cheaper than glibc's
// malloc (measured: CPU per handshake about -20 %; RSS per idle connection unchanged within
// noise). Only the binary chooses it; the library leaves the choice to the embedding app.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MISSING_SECRET: &str = "JWT_SECRET is required: set the JWT_SECRET environment variable \
     (or pass --jwt-secret-file) to the HS256 secret your tokens are signed with, or run \
     `tidings dev` to try it out with a generated secret";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tidings: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let dev = cli.dev || matches!(cli.command, Some(Command::Dev));
    if let Some(Command::Token { sub, scope, ttl }) = &cli.command {
        let secret = secret(&cli)?;
        let token = Tidings::new(Config::new(secret)).issue_token(
            sub,
            Duration::from_secs(*ttl),
            scope.as_deref(),
        )?;
        println!("{token}");
        return Ok(());
    }
    init_tracing(cli.log_level.as_deref(), cli.log_format);
    let jwks = cli.jwt_jwks.as_deref().filter(|j| !j.is_empty());
    if let Some(source) = jwks.filter(|s| !tidings_server::jwks::is_url(s)) {
        let keys = tidings_server::jwks::check_file(std::path::Path::new(source))
            .map_err(|e| anyhow::anyhow!("JWT_JWKS: {e}"))?;
        tracing::info!(keys, "JWKS file read");
    }
    let jwks = jwks.is_some();
    let secret = if dev {
        dev_secret()
    } else if jwks && cli.jwt_secret.is_none() && cli.jwt_secret_file.is_none() {
        // Tokens come from the identity provider only; HS256 tokens are refused.
        String::new()
    } else {
        secret(&cli)?
    };
    raise_open_file_limit();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?
        .block_on(serve(
            cli.bind.clone(),
            cli.metrics_bind.clone().filter(|b| !b.is_empty()),
            config(&cli, secret),
            dev,
        ))
}

/// The library configuration from the flags and environment.
fn config(cli: &Cli, secret: String) -> Config {
    let mut config = Config::new(secret)
        .with_write_delay(Duration::from_millis(cli.write_delay_ms))
        .with_jwt_leeway(Duration::from_secs(cli.jwt_leeway_secs));
    if let Some(origins) = &cli.allowed_origins {
        config = config.with_allowed_origins(origins.iter().filter(|o| !o.trim().is_empty()));
    }
    if let Some(max) = cli.max_connections {
        config = config.with_max_connections(max);
    }
    if let Some(max) = cli.max_connections_per_user {
        config = config.with_max_connections_per_user(max);
    }
    if let Some(max) = cli.max_history_fetches {
        config = config.with_max_history_fetches(max);
    }
    if let Some(max) = cli.max_history_fetches_per_connection {
        config = config.with_max_history_fetches_per_connection(max);
    }
    let redis_url = cli.redis_url.clone().filter(|url| !url.is_empty());
    config
        .with_history_size(cli.history_size)
        .with_history_ttl(Duration::from_secs(cli.history_ttl_secs))
        .with_history_max_topic_bytes(cli.history_max_topic_bytes)
        .with_history_max_total_bytes(cli.history_max_total_bytes)
        .with_max_history_topics(cli.max_history_topics)
        .with_publish_rate(cli.publish_rate, cli.publish_burst)
        .with_max_revocations(cli.max_revocations)
        .with_max_publish_batch(cli.max_publish_batch)
        .with_idempotency_ttl(Duration::from_secs(cli.idempotency_ttl_secs))
        .with_max_idempotency_keys(cli.max_idempotency_keys)
        .with_max_idempotency_bytes(cli.max_idempotency_bytes)
        .with_max_presence_members(cli.max_presence_members)
        .with_max_presence_info_bytes(cli.max_presence_info_bytes)
        .with_presence_claims(
            cli.presence_claims
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty()),
        )
        .with_presence_ttl(Duration::from_secs(cli.presence_ttl_secs))
        .with_redis_url(redis_url)
        .with_metrics_token(cli.metrics_token.clone())
        // With a private metrics listener, the public router does not serve them.
        .with_metrics_route(cli.metrics_bind.as_deref().is_none_or(str::is_empty))
        .with_jwks(cli.jwt_jwks.clone().unwrap_or_default())
        .with_jwks_refetch_interval(Duration::from_secs(cli.jwt_jwks_refetch_secs))
        .with_audience(cli.jwt_audience.clone().unwrap_or_default())
        .with_issuer(cli.jwt_issuer.clone().unwrap_or_default())
        .with_max_connections_per_ip(cli.max_connections_per_ip)
        .with_handshake_rate_per_ip(cli.handshake_rate_per_ip, cli.handshake_burst_per_ip)
        .with_trusted_proxies(cli.trusted_proxies.iter().flatten().flatten().copied())
        // After `raise_open_file_limit`: never more WebSockets than file descriptors.
        .with_max_connections_from_open_file_limit()
}

/// A network (`10.0.0.0/8`) or a single address (`127.0.0.1`, `::1`); empty (an empty
/// `TRUSTED_PROXIES=`, a trailing comma) is nothing.
fn parse_net(s: &str) -> Result<Option<ipnet::IpNet>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(Some)
        .map_err(|_| format!("not an address or network: {s}"))
}

/// The secret from `--jwt-secret` / `JWT_SECRET` or `--jwt-secret-file`, refused when shorter
/// than [`MIN_SECRET_LEN`] unless `--allow-weak-secret`.
fn secret(cli: &Cli) -> anyhow::Result<String> {
    let secret = match (&cli.jwt_secret_file, cli.jwt_secret.as_deref()) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the JWT secret file {}", path.display()))?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            text.strip_suffix('\r').unwrap_or(text).to_owned()
        }
        (None, Some(s)) => s.to_owned(),
        (None, None) => String::new(),
    };
    if secret.is_empty() {
        anyhow::bail!(MISSING_SECRET);
    }
    if secret.len() < MIN_SECRET_LEN && !cli.allow_weak_secret {
        anyhow::bail!(
            "JWT_SECRET is {} bytes; at least {MIN_SECRET_LEN} are required, because a short \
             HS256 secret can be brute-forced offline from any one token. Generate one with \
             `openssl rand -hex 32`, or pass --allow-weak-secret for a local experiment",
            secret.len()
        );
    }
    Ok(secret)
}

async fn serve(
    bind: String,
    metrics_bind: Option<String>,
    config: Config,
    dev: bool,
) -> anyhow::Result<()> {
    // The broker named by the config (Redis with --redis-url, else in memory); an unusable
    // one is an error here rather than a log line. Redis being down is not: the node starts
    // degraded and its listener retries (see /healthz).
    let tidings = Tidings::builder(config)
        .build()
        .context("cannot use the broker")?;
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match &metrics_bind {
        Some(bind) => Some(
            tokio::net::TcpListener::bind(bind)
                .await
                .with_context(|| format!("cannot listen on {bind} for metrics"))?,
        ),
        None => None,
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "tidings listening on http://{addr}")?;
        if let Some(listener) = &metrics_listener {
            writeln!(
                out,
                "tidings metrics on http://{}/metrics",
                listener.local_addr()?
            )?;
        }
        if dev {
            print_dev_help(&mut out, &tidings, addr)?;
        }
        out.flush()?;
    }
    tracing::info!(%addr, "listening");
    // The metrics listener stops with the main one: `serve` returns once the handle's shutdown
    // has started, which the main listener's `serve` starts on SIGTERM.
    let metrics = metrics_listener.map(|listener| {
        tokio::spawn(tidings_server::serve(
            listener,
            tidings.metrics_router(),
            tidings.clone(),
            std::future::pending(),
        ))
    });
    let app = tidings.router();
    tidings_server::serve(listener, app, tidings, tidings_server::shutdown::signal()).await?;
    if let Some(metrics) = metrics {
        metrics.await.context("the metrics listener panicked")??;
    }
    tracing::info!("stopped");
    Ok(())
}

fn print_dev_help(
    out: &mut impl Write,
    tidings: &Tidings,
    addr: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let day = Duration::from_secs(24 * 3600);
    let subscriber = tidings.issue_token("dev-user", day, None)?;
    let publisher = tidings.issue_token("dev-publisher", day, Some(PUBLISH_SCOPE))?;
    writeln!(
        out,
        "dev mode: generated a throwaway JWT secret (tokens valid 24 h)"
    )?;
    writeln!(out, "subscriber token: {subscriber}")?;
    writeln!(out, "publisher token: {publisher}")?;
    writeln!(out, "websocket: ws://{addr}/ws?token={subscriber}")?;
    writeln!(
        out,
        "publish: curl -i -X POST http://{addr}/publish -H 'Authorization: Bearer {publisher}' \
         -H 'Content-Type: application/json' -d '{{\"topic\":\"list:123\",\"event\":\"ADDED\",\
         \"data\":{{\"entity_id\":\"456\",\"payload\":{{\"name\":\"Lego\"}},\"user_id\":\"789\",\
         \"timestamp\":\"2025-11-26T10:30:00Z\"}}}}'"
    )?;
    Ok(())
}

fn dev_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn init_tracing(level: Option<&str>, format: LogFormat) {
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // tungstenite's debug and trace lines dump every frame and message a client sends, in
    // full and as hex: a `refresh` message's token, the events' payloads. No filter, however
    // verbose (`RUST_LOG=trace`, `tungstenite::protocol=trace`), may turn them on: tokens
    // must never reach the logs. Their warnings and errors still pass.
    let no_frame_dumps = filter_fn(|meta| !tidings_server::logging::is_frame_dump(meta));
    // Logs go to stderr: stdout carries the listening line and tokens for harnesses.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .finish()
            .with(no_frame_dumps)
            .init(),
        LogFormat::Json => builder.json().finish().with(no_frame_dumps).init(),
    }
}

/// Many clients each hold a socket: lift the soft open-file limit to the hard one.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}
