//! The tidings browser client: a WebSocket client for the tidings protocol, compiled to
//! WebAssembly, with reconnects, keepalive and TanStack Query invalidation.
//!
//! The JavaScript API (`TidingsClient`, `Subscription`) is the `#[wasm_bindgen]` facade in
//! [`client`] (wasm32 only; options, inbound frames, effects, state and the socket lifecycle
//! are its private parts). Everything it decides is pure logic in plain modules, tested
//! natively with `cargo test`:
//!
//! - [`backoff`]: reconnect delays (exponential, full jitter);
//! - [`topics`]: listeners per topic, reference counted, and the server subscription state;
//! - [`presence`]: the present users of each watched topic, and the joins and leaves the app
//!   is told about;
//! - [`rules`]: topic → query keys invalidated by an event or a reconnect;
//! - [`status`]: the connection status machine and the reconnect decision;
//! - [`keepalive`]: ping / pong-timeout decisions by elapsed time;
//! - [`refresh`]: when to refresh the token of an open connection in band;
//! - [`wire`]: outgoing frames as text, and the names incoming frames are read by.

pub mod backoff;
pub mod keepalive;
pub mod presence;
pub mod refresh;
pub mod rules;
pub mod status;
pub mod topics;
pub mod wire;

#[cfg(target_arch = "wasm32")]
mod browser;
#[cfg(target_arch = "wasm32")]
pub mod client;
