//! `tidings-demo`: the family gifting dashboard on one port (API, UI and `/ws`).
//!
//! Thin on purpose: read the options, start logging, bind, print the URL, call
//! [`tidings_demo::run`] with Ctrl-C / SIGTERM as the shutdown signal.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tidings_demo::{DEFAULT_TOKEN_TTL, DemoConfig};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::prelude::*;

/// The family gifting dashboard: REST API + live updates over tidings + the React UI.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "DEMO_BIND", default_value = "127.0.0.1:8080")]
    bind: String,
    /// SQLite database file (created and seeded when new), or `:memory:`.
    #[arg(long, env = "DEMO_DB", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/demo.sqlite"))]
    db: String,
    /// Directory of the built React app.
    #[arg(long, env = "DEMO_STATIC_DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../frontend/dist"))]
    static_dir: PathBuf,
    /// JWT secret; by default one is generated on first start and kept in the database.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Log filter (e.g. `info`, `tidings_server=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log_level: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // tungstenite's debug/trace events dump client messages (refresh tokens): never logged,
    // whatever the filter says (see tidings_server::logging).
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&args.log_level).context("bad --log-level")?)
        .with_writer(std::io::stderr)
        .finish()
        .with(filter_fn(|meta| {
            !tidings_server::logging::is_frame_dump(meta)
        }))
        .init();

    if args.db != ":memory:" {
        if let Some(dir) = PathBuf::from(&args.db).parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    let addr = listener.local_addr()?;
    // Harnesses (scripts/demo, the e2e tests) read the port from this exact line.
    println!("demo listening on http://{addr}");
    std::io::stdout().flush()?;

    let config = DemoConfig {
        db_path: args.db,
        static_dir: Some(args.static_dir),
        jwt_secret: args.jwt_secret.filter(|s| !s.is_empty()),
        token_ttl: DEFAULT_TOKEN_TTL,
    };
    // Ctrl-C / SIGTERM: WebSockets get 1012 and the browsers reconnect to the next start.
    tidings_demo::run(listener, config, tidings_server::shutdown::signal()).await?;
    tracing::info!("demo stopped");
    Ok(())
}
