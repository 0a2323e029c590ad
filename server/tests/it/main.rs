//! The server's integration tests, in one binary: every test runs against a real server bound to
//! a loopback port (through the library's `serve`, or the `tidings` binary as a process) with
//! real WebSocket and HTTP clients. One binary instead of one per file: the test dependencies
//! (axum, tokio, reqwest, tungstenite, redis) are linked once, and `common` is compiled once.
//!
//! Run one area with a filter: `cargo test -p tidings-server --test it recovery::`. The Redis
//! tests (`redis::`) and the fan-out measurement (`fanout_cost::`) are `#[ignore]`d in a plain
//! `cargo test`: `./scripts/test-redis` runs the former against a real redis-server.

mod common;

mod admin;
mod audience;
mod auth;
mod authz;
mod binary;
mod bounds;
mod builder;
mod embed;
mod fanout;
mod fanout_cost;
mod frames_proptest;
mod heartbeat;
mod jwks;
mod limits;
mod metrics;
mod origin;
mod per_ip;
mod positions;
mod presence;
mod protocol;
mod publish;
mod publish_batch;
mod recovery;
mod redis;
mod refresh;
mod shutdown;
mod subprotocol;
mod token_help;
