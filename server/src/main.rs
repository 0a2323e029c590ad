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
use tidings_server::{Config, PUBLISH_SCOPE, Tidings};
use tracing_subscriber::EnvFilter;

/// The tidings realtime gateway.
#[derive(Debug, Parser)]
#[command(name = "tidings", version, about)]
struct Cli {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "BIND", default_value = "127.0.0.1:8000", global = true)]
    bind: String,
    /// HS256 secret for every token (required, except with `dev`).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, global = true)]
    jwt_secret: Option<String>,
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
    #[arg(long, env = "HISTORY_SIZE", default_value_t = 1000, global = true)]
    history_size: usize,
    /// Max age in seconds of a topic's history; see `Config::with_history_ttl`.
    #[arg(long, env = "HISTORY_TTL_SECS", default_value_t = 300, global = true)]
    history_ttl_secs: u64,
    /// Seconds of clock skew allowed when checking a token's `exp`/`nbf` (at most 60; a
    /// connection closes 4002 at `exp` plus this); see `Config::with_jwt_leeway`.
    #[arg(long, env = "JWT_LEEWAY_SECS", default_value_t = 30, global = true)]
    jwt_leeway_secs: u64,
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
     (or pass --jwt-secret) to the HS256 secret your tokens are signed with, or run `tidings dev` \
     to try it out with a generated secret";

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
    let secret = if dev { dev_secret() } else { secret(&cli)? };
    if let Some(url) = cli.redis_url.as_deref().filter(|url| !url.is_empty()) {
        tidings_server::broker::check_redis_url(url)?;
    }
    raise_open_file_limit();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?
        .block_on(serve(cli.bind.clone(), config(&cli, secret), dev))
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
    let redis_url = cli.redis_url.clone().filter(|url| !url.is_empty());
    config
        .with_history_size(cli.history_size)
        .with_history_ttl(Duration::from_secs(cli.history_ttl_secs))
        .with_redis_url(redis_url)
}

fn secret(cli: &Cli) -> anyhow::Result<String> {
    match cli.jwt_secret.as_deref() {
        Some(s) if !s.is_empty() => Ok(s.to_owned()),
        _ => anyhow::bail!(MISSING_SECRET),
    }
}

async fn serve(bind: String, config: Config, dev: bool) -> anyhow::Result<()> {
    let tidings = Tidings::new(config);
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "tidings listening on http://{addr}")?;
        if dev {
            print_dev_help(&mut out, &tidings, addr)?;
        }
        out.flush()?;
    }
    tracing::info!(%addr, "listening");
    let app = tidings.router();
    tidings_server::serve(listener, app, tidings, tidings_server::shutdown::signal()).await?;
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
    // Logs go to stderr: stdout carries the listening line and tokens for harnesses.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Many clients each hold a socket: lift the soft open-file limit to the hard one.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}
