//! The four measurements of issue 3, each a function from a running server to a [`Run`].
//!
//! - [`idle`]: server memory per idle subscribed connection.
//! - [`pubsub`]: `fanout` (publish as fast as the server takes it) and `latency` (fixed event
//!   rate), both counting the server's CPU per delivered message.
//! - [`handshake`]: connect + auth + subscribe + ack + close, as fast as possible.
//! - [`presence`]: memory per present connection and CPU per presence join/leave (issue 15).
//! - [`chaos`]: clients with the real reconnect rules against a cluster while faults happen,
//!   checked for lost, duplicated and reordered events (issue 17).
//!
//! [`Run`]: crate::report::Run

pub mod chaos;
pub mod handshake;
pub mod idle;
pub mod presence;
pub mod pubsub;

use std::time::Duration;

use crate::conn::SourceAddrs;
use crate::token::Minter;

/// What every scenario needs besides its own options.
#[derive(Clone)]
pub struct Common {
    /// Signs tokens with the server's secret.
    pub minter: Minter,
    /// Source address spreading for many connections.
    pub sources: SourceAddrs,
    /// Connections opened at the same time while building a swarm.
    pub connect_concurrency: usize,
}

/// Seconds as a `Duration`, accepting fractions (`0.5`).
pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}
