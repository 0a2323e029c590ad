//! The tidings load tool as a library: the pieces the `tidings-bench` binary composes.
//!
//! - [`server`]: spawn or attach the server under test; [`procfs`]: its RSS and CPU time.
//! - [`token`]: HS256 tokens signed with the server's secret.
//! - [`conn`]: one benchmark WebSocket (source address, handshake, subscribe + ack, close);
//!   [`swarm`]: thousands of them, idle or receiving.
//! - [`publish`]: HTTP publishers; [`recorder`]: delivery counts and latency histograms.
//! - [`scenario`]: the four measurements; [`report`]: their result tables.
//!
//! Errors are `anyhow` throughout (not a thiserror enum per module as in the server): this is
//! a tool whose errors end as a message on stderr and a failed run, and no caller matches on
//! them. All traffic goes to loopback addresses; the binary refuses anything else.

pub mod conn;
pub mod procfs;
pub mod publish;
pub mod recorder;
pub mod report;
pub mod scenario;
pub mod server;
pub mod swarm;
pub mod token;
