//! Wire types of the tidings realtime protocol, defined once and shared by the server, the
//! WebAssembly client and (through ts-rs) TypeScript.
//!
//! The protocol is the one of the family-gifting dashboard's seed `/ws` endpoint: a JWT in
//! `?token=`, close code 4001 on bad auth, `subscribe` / `unsubscribe` / `ping` actions,
//! `subscribed` / `unsubscribed` / `pong` replies, two error texts and events
//! `{topic, event, data: {entity_id, payload, user_id, timestamp}}`. Everything tidings adds
//! is an optional extra field or a new action that a seed client never sends, so a frontend
//! written against the seed works unchanged.
//!
//! This crate depends on serde only (no tokio, no axum) and builds for
//! `wasm32-unknown-unknown`.
//!
//! - [`topic`]: the validated [`Topic`] name.
//! - [`audience`]: who an event is for ([`PublishAudience`]) and the client's connection id.
//! - [`action`]: the names of the actions that take a topic (shared by requests and errors).
//! - [`position`]: a [`StreamPosition`] in a topic's stream (`seq` + `epoch`), and the
//!   [`ReadStamp`] a REST response carries in the [`POSITIONS_HEADER`].
//! - [`presence`]: who is on a topic ([`PresenceMode`], [`PresenceMember`]).
//! - [`client`]: client → server messages and the seed's exact parsing rules.
//! - [`server`]: server → client events, replies and error replies.
//! - [`close`]: WebSocket close codes and whether a client should reconnect after them.
//! - [`handshake`]: where `GET /ws` takes the token (the `tidings.token.` subprotocol or
//!   `?token=`).

pub mod action;
pub mod audience;
pub mod client;
pub mod close;
pub mod handshake;
pub mod position;
pub mod presence;
pub mod server;
pub mod topic;

pub use audience::{
    CONNECTION_ID_HEADER, CONNECTION_ID_PARAM, MAX_CONNECTION_ID_LEN, PublishAudience,
    is_valid_connection_id,
};
pub use client::{Action, ClientMessage, ParseError, WSClientMessage};
pub use close::CloseCode;
pub use position::{POSITIONS_HEADER, ReadStamp, TopicPosition};
pub use presence::{PresenceInfo, PresenceMember, PresenceMode};
pub use server::{
    EventData, EventType, MAX_PAYLOAD_DEPTH, Payload, ServerMessage, StreamPosition, WSError,
    WSEvent, WSReply,
};
pub use topic::{MAX_TOPIC_LEN, Topic, TopicError};
