//! Server → client messages: events, replies to actions, and error replies.
//!
//! Every server message is one JSON text frame of one of three shapes, told apart by their keys:
//!
//! - an event [`WSEvent`]: `{"topic", "event", "data": {"entity_id", "payload", "user_id", "timestamp"}}`;
//! - a reply [`WSReply`]: `{"action": "subscribed"|"unsubscribed", "topic"}` (a `subscribed`
//!   may add `recovered`, `seq` and `epoch` for a client that asked), `{"action": "pong"}`
//!   or `{"action": "refreshed"}`; presence frames `{"action": "presence"|"presence_join"|
//!   "presence_leave", "topic", ..}` (see [`crate::presence`]);
//! - an error [`WSError`]: `{"error", "details"?}`.
//!
//! An event's `payload` is kept as the exact JSON text it was published with ([`Payload`]), so
//! integers beyond 2^53 and key order survive the trip through the server untouched, and its
//! `timestamp` is a string forwarded as given.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::action::Action;
pub use crate::position::StreamPosition;
use crate::presence::PresenceMember;
use crate::topic::{Topic, TopicError};

/// What happened to the entity an event is about.
///
/// Open: the seed's six names are variants (exact, as the seed sends them), and any other
/// UPPER_SNAKE_CASE name ([`EventType::is_valid_name`]) is accepted as [`EventType::Other`]
/// and forwarded unchanged, so an application is not tied to the gift dashboard's
/// vocabulary. TypeScript sees the six names or any string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "ts",
    derive(ts_rs::TS),
    ts(
        export,
        type = r#""ADDED" | "UPDATED" | "DELETED" | "STATUS_CHANGED" | "ASSIGNED" | "COMMENT_ADDED" | (string & {})"#
    )
)]
pub enum EventType {
    /// A new entity was created.
    Added,
    /// An entity's fields changed.
    Updated,
    /// An entity was deleted.
    Deleted,
    /// An entity's status changed (e.g. IDEA → PURCHASED).
    StatusChanged,
    /// An entity was assigned to someone.
    Assigned,
    /// A comment was added to an entity.
    CommentAdded,
    /// Any other UPPER_SNAKE_CASE name (tidings addition), e.g. `"TODO_DONE"`.
    Other(String),
}

/// The longest event name accepted.
pub const MAX_EVENT_NAME_LEN: usize = 64;

impl EventType {
    /// Every event type, in declaration order.
    pub const ALL: [EventType; 6] = [
        EventType::Added,
        EventType::Updated,
        EventType::Deleted,
        EventType::StatusChanged,
        EventType::Assigned,
        EventType::CommentAdded,
    ];

    /// The event type for wire name `name`: one of the six seed names, or any other valid
    /// name as [`EventType::Other`]; `None` when `name` is not UPPER_SNAKE_CASE.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|e| e.as_str() == name)
            .or_else(|| Self::is_valid_name(name).then(|| EventType::Other(name.to_owned())))
    }

    /// Whether `name` is a valid event name: 1 to [`MAX_EVENT_NAME_LEN`] characters, an
    /// ASCII capital letter first, then capitals, digits and `_` (what the seed's six names
    /// look like).
    pub fn is_valid_name(name: &str) -> bool {
        let mut chars = name.chars();
        name.len() <= MAX_EVENT_NAME_LEN
            && chars.next().is_some_and(|c| c.is_ascii_uppercase())
            && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    }

    /// The wire name (`"ADDED"`, `"STATUS_CHANGED"`, …).
    pub fn as_str(&self) -> &str {
        match self {
            EventType::Added => "ADDED",
            EventType::Updated => "UPDATED",
            EventType::Deleted => "DELETED",
            EventType::StatusChanged => "STATUS_CHANGED",
            EventType::Assigned => "ASSIGNED",
            EventType::CommentAdded => "COMMENT_ADDED",
            EventType::Other(name) => name,
        }
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Self::from_name(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown event type `{name}`: expected an UPPER_SNAKE_CASE name of at most {MAX_EVENT_NAME_LEN} characters"
            ))
        })
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The deepest nesting of objects and arrays a [`Payload`] may have, the payload object itself
/// being level 1.
///
/// serde_json keeps raw text without looking inside, so without this bound a payload nested
/// tens of thousands of levels deep would be relayed to every subscriber, and the recursive
/// JSON parsers of typical clients overflow their stack on it. 64 levels is far more than any
/// entity needs, and keeps a whole event (two levels around the payload) under serde_json's own
/// recursion limit of 128.
pub const MAX_PAYLOAD_DEPTH: usize = 64;

/// An event's payload: a JSON object, kept as the exact text it arrived as.
///
/// Deserializing refuses anything but an object, and an object nested deeper than
/// [`MAX_PAYLOAD_DEPTH`]. Only deserializers that can hand out raw text
/// (`serde_json::from_str` / `from_slice`) can produce it.
#[derive(Clone, Serialize)]
#[serde(transparent)]
#[cfg_attr(
    feature = "ts",
    derive(ts_rs::TS),
    ts(export, type = "Record<string, unknown>")
)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// Builds a payload from any serializable value that serializes to a JSON object.
    ///
    /// # Errors
    /// A serde_json error when `value` fails to serialize or is not an object.
    pub fn from_value<T: Serialize>(value: &T) -> Result<Self, serde_json::Error> {
        Self::from_json(serde_json::to_string(value)?)
    }

    /// Wraps JSON text that must be an object.
    ///
    /// # Errors
    /// A serde_json error when `json` is not valid JSON or not an object.
    pub fn from_json(json: String) -> Result<Self, serde_json::Error> {
        let raw = RawValue::from_string(json)?;
        Self::object(raw)
    }

    fn object(raw: Box<RawValue>) -> Result<Self, serde_json::Error> {
        if !raw.get().trim_start().starts_with('{') {
            return Err(serde::de::Error::custom("payload must be a JSON object"));
        }
        if nesting_exceeds(raw.get(), MAX_PAYLOAD_DEPTH) {
            return Err(serde::de::Error::custom(format_args!(
                "payload is nested deeper than {MAX_PAYLOAD_DEPTH} levels"
            )));
        }
        Ok(Self(raw))
    }

    /// The payload's JSON text, exactly as received.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The payload parsed into a `serde_json::Value` (numbers beyond `u64`/`i64` become `f64`).
    ///
    /// # Errors
    /// Never for a payload built by this crate; the `Result` is serde_json's.
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(self.get())
    }
}

/// Whether the valid JSON text `json` nests objects and arrays more than `max` levels deep.
/// One pass over the bytes, stopping at the first level too deep.
fn nesting_exceeds(json: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Self::object(raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// The body of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct EventData {
    /// Id of the entity the event is about (a string, as in the seed).
    pub entity_id: String,
    /// The entity (or the change), as a JSON object.
    pub payload: Payload,
    /// Id of the user who made the change.
    pub user_id: String,
    /// When the change happened, ISO 8601; forwarded exactly as published.
    pub timestamp: String,
}

/// An event on a topic: the seed's `WSEvent`, plus its position in the topic's stream.
///
/// `seq` and `epoch` are tidings additions that a seed client ignores. The server assigns them
/// when it publishes (whatever a publisher sent is replaced): `seq` increases strictly within
/// one `epoch` of a topic; a new `epoch` means the topic's history was lost (e.g. the
/// in-memory broker restarted) and numbering started again. A client that remembers the last
/// `(seq, epoch)` of a topic can ask for what it missed with [`WSClientMessage::Subscribe`]'s
/// `since`.
///
/// [`WSClientMessage::Subscribe`]: crate::WSClientMessage::Subscribe
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct WSEvent {
    /// The topic the event is published on; it reaches the subscribers of exactly this topic.
    pub topic: Topic,
    /// What happened.
    pub event: EventType,
    /// The details.
    pub data: EventData,
    /// Position of the event in its topic's stream (set by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional, type = "number"))]
    pub seq: Option<u64>,
    /// The topic stream's epoch (set by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub epoch: Option<String>,
}

impl WSEvent {
    /// An event without a stream position (the server assigns one when it publishes).
    pub fn new(topic: Topic, event: EventType, data: EventData) -> Self {
        Self {
            topic,
            event,
            data,
            seq: None,
            epoch: None,
        }
    }

    /// The event's stream position, when it has one.
    pub fn position(&self) -> Option<StreamPosition> {
        Some(StreamPosition {
            seq: self.seq?,
            epoch: self.epoch.clone()?,
        })
    }
}

/// A reply to a client's action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub enum WSReply {
    /// The subscription is active: events of `topic` follow.
    Subscribed {
        /// The topic subscribed to.
        topic: Topic,
        /// Only when the subscribe asked for `since`: `true` when every missed event was
        /// replayed before this reply, `false` when history did not reach back that far (or
        /// the epoch changed) and the client must refetch (tidings addition).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        recovered: Option<bool>,
        /// Only when the subscribe asked for `position`: every event of the topic after this
        /// `seq` (of `epoch`) reaches the client after this reply, and everything up to it
        /// was published before (0: the topic has had no event in this epoch). A read the
        /// client made before the ack is current if its stamp is at this position (tidings
        /// addition).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional, type = "number"))]
        seq: Option<u64>,
        /// The epoch of `seq` (with `seq` only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        epoch: Option<String>,
    },
    /// The subscription is gone (also sent for a topic that was never subscribed).
    Unsubscribed {
        /// The topic unsubscribed from.
        topic: Topic,
        /// Absent when the client asked for it. [`WSReply::REASON_FORBIDDEN`] when the server
        /// ended the subscription by itself: a `refresh` token whose `topics` claim no longer
        /// allows the topic (tidings addition; a seed client never refreshes, and reads the
        /// reply as any `unsubscribed`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        reason: Option<String>,
    },
    /// Answer to `ping`.
    Pong,
    /// The connection now runs on the token sent with `refresh` (tidings addition).
    Refreshed,
    /// Event `seq` (of `epoch`) of `topic` happened but was not for this connection (its
    /// publisher limited the audience): sent instead of the event to a connection that tracks
    /// positions, so that its `seq` stays continuous and it does not take the missing number
    /// for a lost event. Carries nothing of the event (tidings addition).
    Skipped {
        /// The topic of the skipped event.
        topic: Topic,
        /// The skipped event's `seq`.
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        seq: u64,
        /// The skipped event's epoch.
        epoch: String,
    },
    /// Who is present on `topic` now: sent once after the `subscribed` ack (and after any
    /// replay) of a subscribe that asked for `presence`, and again whenever the server had to
    /// resynchronize (a client replaces what it knew by it). Includes the subscriber itself
    /// when it joined (tidings addition).
    Presence {
        /// The topic.
        topic: Topic,
        /// Every present user, once each.
        members: Vec<PresenceMember>,
    },
    /// `member` appeared on `topic`, or its connection count changed: replace any entry with
    /// the same `user_id` (tidings addition).
    #[serde(rename = "presence_join")]
    PresenceJoin {
        /// The topic.
        topic: Topic,
        /// The user as it is now.
        member: PresenceMember,
    },
    /// `user_id`'s last connection on `topic` left (closed, unsubscribed, died, or its node
    /// died) (tidings addition).
    #[serde(rename = "presence_leave")]
    PresenceLeave {
        /// The topic.
        topic: Topic,
        /// The user who left.
        user_id: String,
    },
}

impl WSReply {
    /// The seed's `{"action":"subscribed","topic":T}`.
    pub fn subscribed(topic: Topic) -> Self {
        WSReply::Subscribed {
            topic,
            recovered: None,
            seq: None,
            epoch: None,
        }
    }

    /// A `subscribed` reply with `recovered` and, when given, the topic's position.
    pub fn subscribed_at(
        topic: Topic,
        recovered: Option<bool>,
        position: Option<StreamPosition>,
    ) -> Self {
        let (seq, epoch) = position.map_or((None, None), |p| (Some(p.seq), Some(p.epoch)));
        WSReply::Subscribed {
            topic,
            recovered,
            seq,
            epoch,
        }
    }

    /// The position a `subscribed` or `skipped` reply carries, if any.
    pub fn position(&self) -> Option<StreamPosition> {
        match self {
            WSReply::Subscribed {
                seq: Some(seq),
                epoch: Some(epoch),
                ..
            } => Some(StreamPosition {
                seq: *seq,
                epoch: epoch.clone(),
            }),
            WSReply::Skipped { seq, epoch, .. } => Some(StreamPosition {
                seq: *seq,
                epoch: epoch.clone(),
            }),
            _ => None,
        }
    }

    /// [`WSReply::Pong`] as JSON text, so the server can answer a ping without serializing.
    pub const PONG_JSON: &'static str = r#"{"action":"pong"}"#;
    /// [`WSReply::Refreshed`] as JSON text.
    pub const REFRESHED_JSON: &'static str = r#"{"action":"refreshed"}"#;
    /// The `reason` of an `unsubscribed` the server sent by itself because the connection's
    /// refreshed token no longer allows the topic (the same text as a refused subscribe's
    /// [`WSError::FORBIDDEN`]).
    pub const REASON_FORBIDDEN: &'static str = "Forbidden";
}

/// An error reply. The connection stays open after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct WSError {
    /// A fixed text, one of the `WSError::*` constants.
    pub error: String,
    /// Why, in words; present for format errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub details: Option<String>,
    /// The topic the error is about, when there is one (tidings addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub topic: Option<String>,
}

impl WSError {
    /// The seed's text for a frame that is not a valid message.
    pub const INVALID_MESSAGE_FORMAT: &'static str = "Invalid message format";
    /// The seed's text for a subscribe without a topic.
    pub const TOPIC_REQUIRED_SUBSCRIBE: &'static str = "Topic is required for subscribe action";
    /// The seed's text for an unsubscribe without a topic.
    pub const TOPIC_REQUIRED_UNSUBSCRIBE: &'static str = "Topic is required for unsubscribe action";
    /// A topic that breaks the topic rules (tidings addition).
    pub const INVALID_TOPIC: &'static str = "Invalid topic";
    /// A `refresh` without a token (tidings addition).
    pub const TOKEN_REQUIRED_REFRESH: &'static str = "Token is required for refresh action";
    /// The token is not allowed to subscribe to the topic (tidings addition; `topic` is set).
    pub const FORBIDDEN: &'static str = "Forbidden";
    /// A subscribe beyond the per-connection subscription limit (tidings addition; `topic`
    /// and `details` are set; the connection stays open).
    pub const TOO_MANY_SUBSCRIPTIONS: &'static str = "Too many subscriptions";
    /// A message dropped by the per-connection rate limit, or a publish refused by the
    /// per-publisher one (tidings addition).
    pub const RATE_LIMIT_EXCEEDED: &'static str = "Rate limit exceeded";
    /// A `presence: "join"` refused because the topic already has the most present users the
    /// server allows (tidings addition; `topic` and `details` are set; the subscription
    /// stays, and the connection watches the topic's presence without being present).
    pub const TOO_MANY_PRESENT: &'static str = "Too many present members";
    /// A `presence: "join"` refused because the info the token's claims give is larger than
    /// the server allows (tidings addition; `topic` and `details` are set; the subscription
    /// stays, watching without being present).
    pub const PRESENCE_INFO_TOO_LARGE: &'static str = "Presence info too large";
    /// A `presence: "join"` that could not be recorded because the presence store (Redis) is
    /// unavailable (tidings addition; `topic` is set; the subscription stays).
    pub const PRESENCE_UNAVAILABLE: &'static str = "Presence unavailable";
    /// A reply the server could not produce (should not happen; tidings addition).
    pub const INTERNAL_ERROR: &'static str = "Internal error";
    /// [`WSError::INTERNAL_ERROR`] as a whole JSON reply, for the one place that cannot
    /// serialize.
    pub const INTERNAL_ERROR_JSON: &'static str = r#"{"error":"Internal error"}"#;
    /// `POST /publish` (HTTP 408): the request body did not arrive in time (tidings addition).
    pub const REQUEST_TIMEOUT: &'static str = "Request timeout";

    /// A bare error with a fixed text.
    pub fn new(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            details: None,
            topic: None,
        }
    }

    /// `{"error": "Invalid message format", "details": details}`.
    pub fn invalid_format(details: impl Into<String>) -> Self {
        Self {
            details: Some(details.into()),
            ..Self::new(Self::INVALID_MESSAGE_FORMAT)
        }
    }

    /// `{"error": "Topic is required for <action> action"}`.
    pub fn topic_required(action: Action) -> Self {
        Self::new(match action {
            Action::Subscribe => Self::TOPIC_REQUIRED_SUBSCRIBE,
            Action::Unsubscribe => Self::TOPIC_REQUIRED_UNSUBSCRIBE,
        })
    }

    /// `{"error": "Invalid topic", "details": why}`.
    pub fn invalid_topic(why: &TopicError) -> Self {
        Self {
            details: Some(why.to_string()),
            ..Self::new(Self::INVALID_TOPIC)
        }
    }
}

/// Any server → client message. [`ServerMessage::parse`] tells the shapes apart by their keys.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub enum ServerMessage {
    /// An event on a subscribed topic.
    Event(WSEvent),
    /// A reply to an action.
    Reply(WSReply),
    /// An error reply.
    Error(WSError),
}

/// Which keys a server message has; enough to pick its shape.
#[derive(Deserialize)]
struct Shape {
    #[serde(default)]
    event: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    action: Option<serde::de::IgnoredAny>,
}

impl ServerMessage {
    /// Parses one server text frame: an event when it has an `event` key, a reply when it has
    /// an `action` key, an error otherwise.
    ///
    /// (Not a serde `untagged` enum: that buffers the input and loses [`Payload`]'s raw text.)
    ///
    /// # Errors
    /// A serde_json error when the text matches none of the three shapes.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        let shape: Shape = serde_json::from_str(text)?;
        if shape.event.is_some() {
            serde_json::from_str(text).map(ServerMessage::Event)
        } else if shape.action.is_some() {
            serde_json::from_str(text).map(ServerMessage::Reply)
        } else {
            serde_json::from_str(text).map(ServerMessage::Error)
        }
    }
}

impl From<WSEvent> for ServerMessage {
    fn from(value: WSEvent) -> Self {
        ServerMessage::Event(value)
    }
}

impl From<WSReply> for ServerMessage {
    fn from(value: WSReply) -> Self {
        ServerMessage::Reply(value)
    }
}

impl From<WSError> for ServerMessage {
    fn from(value: WSError) -> Self {
        ServerMessage::Error(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_kept_verbatim() {
        let text = r#"{"topic":"list:1","event":"ADDED","data":{"entity_id":"1","payload":{"big":123456789012345678901234567890,"n":{"x":[1,2.50,"é"]}},"user_id":"7","timestamp":"2025-11-26T10:30:00.123456+00:00"}}"#;
        let event: WSEvent = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&event).unwrap(), text);
    }

    #[test]
    fn payload_must_be_an_object() {
        for bad in ["[1]", "1", "\"x\"", "null"] {
            let text = format!(
                r#"{{"topic":"list:1","event":"ADDED","data":{{"entity_id":"1","payload":{bad},"user_id":"7","timestamp":"t"}}}}"#
            );
            assert!(serde_json::from_str::<WSEvent>(&text).is_err(), "{bad}");
        }
        assert!(Payload::from_json("[]".into()).is_err());
        assert!(Payload::from_json(r#"{"a":{"b":[1,{"c":"]]]{{{"}]}}"#.into()).is_ok());
        assert!(Payload::from_value(&serde_json::json!({"a": 1})).is_ok());
    }

    /// `{"a":{"a":…{}…}}` with `depth` objects, or with arrays inside the first object.
    fn nested(depth: usize, arrays: bool) -> String {
        let (open, close) = if arrays {
            ("[", "]")
        } else {
            (r#"{"a":"#, "}")
        };
        format!(
            "{{\"s\":\"{{[\\\"\",\"x\":{}1{}}}",
            open.repeat(depth - 1),
            close.repeat(depth - 1)
        )
    }

    #[test]
    fn payload_nesting_is_bounded() {
        for arrays in [false, true] {
            let ok = nested(MAX_PAYLOAD_DEPTH, arrays);
            assert!(Payload::from_json(ok.clone()).is_ok(), "{ok}");
            let deep = nested(MAX_PAYLOAD_DEPTH + 1, arrays);
            let e = Payload::from_json(deep.clone()).unwrap_err();
            assert!(e.to_string().contains("nested deeper than 64"), "{e}");
            // Through an event, as POST /publish and clients parse it: a data error.
            let text = format!(
                r#"{{"topic":"list:1","event":"ADDED","data":{{"entity_id":"1","payload":{deep},"user_id":"7","timestamp":"t"}}}}"#
            );
            let e = serde_json::from_str::<WSEvent>(&text).unwrap_err();
            assert_eq!(e.classify(), serde_json::error::Category::Data);
        }
        // 40,000 levels: refused without recursion.
        let deep = format!("{}1{}", "{\"a\":".repeat(40_000), "}".repeat(40_000));
        let e = Payload::from_json(deep).unwrap_err();
        assert!(e.to_string().contains("nested deeper"), "{e}");
    }

    #[test]
    fn event_names_are_open_but_upper_snake_case() {
        let with = |name: &str| {
            format!(
                r#"{{"topic":"list:1","event":"{name}","data":{{"entity_id":"1","payload":{{}},"user_id":"7","timestamp":"t"}}}}"#
            )
        };
        let other: WSEvent = serde_json::from_str(&with("EXPLODED")).unwrap();
        assert_eq!(other.event, EventType::Other("EXPLODED".into()));
        assert_eq!(serde_json::to_string(&other).unwrap(), with("EXPLODED"));
        let seed: WSEvent = serde_json::from_str(&with("ADDED")).unwrap();
        assert_eq!(seed.event, EventType::Added);
        for bad in ["exploded", "", "1UP", "A-B", "ÉTÉ", &"A".repeat(65)] {
            assert!(
                serde_json::from_str::<WSEvent>(&with(bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn replies_have_exactly_the_seed_keys() {
        assert_eq!(
            serde_json::to_string(&WSReply::subscribed(Topic::list(1))).unwrap(),
            r#"{"action":"subscribed","topic":"list:1"}"#
        );
        let at = WSReply::subscribed_at(
            Topic::list(1),
            None,
            Some(StreamPosition {
                seq: 0,
                epoch: "e".into(),
            }),
        );
        assert_eq!(
            serde_json::to_string(&at).unwrap(),
            r#"{"action":"subscribed","topic":"list:1","seq":0,"epoch":"e"}"#
        );
        assert_eq!(at.position().map(|p| p.seq), Some(0));
        assert_eq!(
            serde_json::to_string(&WSReply::Pong).unwrap(),
            r#"{"action":"pong"}"#
        );
        assert_eq!(
            serde_json::to_string(&WSReply::Pong).unwrap(),
            WSReply::PONG_JSON
        );
        assert_eq!(
            serde_json::to_string(&WSReply::Refreshed).unwrap(),
            WSReply::REFRESHED_JSON
        );
        assert_eq!(
            serde_json::to_string(&WSError::new(WSError::INTERNAL_ERROR)).unwrap(),
            WSError::INTERNAL_ERROR_JSON
        );
        assert_eq!(
            serde_json::to_string(&WSReply::Refreshed).unwrap(),
            r#"{"action":"refreshed"}"#
        );
        assert_eq!(
            ServerMessage::parse(r#"{"action":"refreshed"}"#).unwrap(),
            ServerMessage::Reply(WSReply::Refreshed)
        );
        assert_eq!(
            serde_json::to_string(&WSError::invalid_format("x")).unwrap(),
            r#"{"error":"Invalid message format","details":"x"}"#
        );
    }

    #[test]
    fn event_type_names() {
        for e in EventType::ALL {
            assert_eq!(EventType::from_name(e.as_str()), Some(e.clone()));
            assert_eq!(
                serde_json::to_string(&e).unwrap(),
                format!("\"{}\"", e.as_str())
            );
        }
    }
}
