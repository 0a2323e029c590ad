//! Client → server messages, and the seed's exact parsing rules.
//!
//! On the wire a client message is `{"action": "subscribe"|"unsubscribe"|"ping", "topic": T}`.
//! [`ClientMessage::parse`] turns a text frame into one of exactly three outcomes, as the seed
//! endpoint does:
//!
//! 1. not JSON, not a JSON object, `action` missing or not a string, `topic` present but neither
//!    a string nor `null` → [`ParseError::InvalidFormat`], answered with
//!    `{"error": "Invalid message format", "details": "<why>"}`;
//! 2. `subscribe` / `unsubscribe` whose topic is absent, `null` or `""` →
//!    [`ParseError::TopicRequired`], answered with
//!    `{"error": "Topic is required for subscribe action"}` (or `unsubscribe`);
//! 3. any other action string (including other spellings such as `PING` or `Subscribe`) →
//!    `Ok(None)`: ignored, no reply (the seed keeps unknown actions for future extensions).
//!
//! Extra fields are ignored, and a `ping` carrying a topic is still a ping.
//!
//! tidings additions, which a seed client never sends:
//! - a topic that is present but breaks the [topic rules](crate::topic):
//!   [`ParseError::InvalidTopic`], answered with `{"error": "Invalid topic", "details": "<why>"}`;
//! - `subscribe` with `"since": {"seq": S, "epoch": E}` asks for the events missed after that
//!   position (a malformed `since` is an invalid format);
//! - `subscribe` with `"position": true` asks for the topic's current position in the ack
//!   (any other value of `position` is ignored, like any extra field);
//! - `subscribe` with `"presence": "join"` or `"presence": "watch"` asks for the topic's
//!   [presence](crate::presence) (any other value of `presence` is ignored, like any extra
//!   field);
//! - `{"action": "refresh", "token": T}` swaps the connection's token for a fresh one before
//!   the old one expires; without a token (absent, `null` or `""`):
//!   [`ParseError::TokenRequired`], answered with `{"error": "Token is required for refresh
//!   action"}`; a token that is not a string is an invalid format.

use serde::{Deserialize, Serialize};

pub use crate::action::Action;
use crate::position::StreamPosition;
use crate::presence::PresenceMode;
use crate::server::WSError;
use crate::topic::{Topic, TopicError};

/// A client → server message as a sender writes it (the TypeScript `WSClientMessage`).
///
/// Parsing received frames goes through [`ClientMessage::parse`], which applies the seed's
/// rules; this type is the shape a well-behaved client sends. Its `Debug` output never shows a
/// refresh token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub enum WSClientMessage {
    /// Start receiving events of `topic`; answered by `{"action":"subscribed","topic":T}`.
    Subscribe {
        /// The topic to subscribe to.
        topic: Topic,
        /// Replay the events after this position before going live (tidings addition); the
        /// reply then says whether that `recovered` everything.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        since: Option<StreamPosition>,
        /// `true`: the ack carries the topic's position (`seq`, `epoch`; `seq` 0 when the
        /// topic has had no event yet), so the client can tell whether a read it made
        /// before the ack may have missed events (tidings addition; absent means `false`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        #[cfg_attr(feature = "ts", ts(as = "Option<bool>", optional))]
        position: bool,
        /// Be present on the topic and watch its presence (`join`), or only watch it
        /// (`watch`): a snapshot of the present users follows the ack, then their joins and
        /// leaves (tidings addition; absent means neither).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        presence: Option<PresenceMode>,
    },
    /// Stop receiving events of `topic`; answered by `{"action":"unsubscribed","topic":T}`.
    Unsubscribe {
        /// The topic to unsubscribe from.
        topic: Topic,
    },
    /// Keepalive; answered by `{"action":"pong"}`.
    Ping,
    /// Continue the connection on a fresh token (tidings addition); answered by
    /// `{"action":"refreshed"}`, or closed with 4001 if the token is not valid.
    Refresh {
        /// The new JWT.
        token: String,
    },
}

impl std::fmt::Debug for WSClientMessage {
    // By hand so that a token never reaches a log line through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WSClientMessage::Subscribe {
                topic,
                since,
                position,
                presence,
            } => f
                .debug_struct("Subscribe")
                .field("topic", topic)
                .field("since", since)
                .field("position", position)
                .field("presence", presence)
                .finish(),
            WSClientMessage::Unsubscribe { topic } => {
                f.debug_struct("Unsubscribe").field("topic", topic).finish()
            }
            WSClientMessage::Ping => f.write_str("Ping"),
            WSClientMessage::Refresh { .. } => f
                .debug_struct("Refresh")
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

/// A parsed client message: what the server acts on.
pub type ClientMessage = WSClientMessage;

/// Why a client frame was not a usable message. Each variant maps to one error reply
/// ([`ParseError::to_reply`]); the connection stays open after any of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Not JSON, not an object, `action` missing or not a string, or `topic` not a string.
    #[error("Invalid message format: {details}")]
    InvalidFormat {
        /// What was wrong, for the `details` field.
        details: String,
    },
    /// `subscribe` / `unsubscribe` without a topic (absent, `null` or `""`).
    #[error("Topic is required for {} action", .0.as_str())]
    TopicRequired(Action),
    /// A topic that breaks the [topic rules](crate::topic) (tidings addition).
    #[error("Invalid topic: {0}")]
    InvalidTopic(TopicError),
    /// `refresh` without a token (absent, `null` or `""`; tidings addition).
    #[error("Token is required for refresh action")]
    TokenRequired,
}

impl ParseError {
    /// The error reply the server sends for this error.
    pub fn to_reply(&self) -> WSError {
        match self {
            ParseError::InvalidFormat { details } => WSError::invalid_format(details.clone()),
            ParseError::TopicRequired(action) => WSError::topic_required(*action),
            ParseError::InvalidTopic(e) => WSError::invalid_topic(e),
            ParseError::TokenRequired => WSError::new(WSError::TOKEN_REQUIRED_REFRESH),
        }
    }
}

/// The loose shape the seed's pydantic model accepts: `action` a string, `topic` an optional
/// string, anything else ignored; plus the optional fields of tidings' additions.
#[derive(Deserialize)]
struct RawClientMessage {
    action: String,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    since: Option<StreamPosition>,
    #[serde(default)]
    token: Option<String>,
    /// Any JSON value: only `true` asks for the position (a seed client's stray extra field
    /// is ignored, as the seed ignores it).
    #[serde(default)]
    position: TrueOnly,
    /// Any JSON value: only `"join"` and `"watch"` ask for presence.
    #[serde(default)]
    presence: KnownMode,
}

/// A `presence` field that counts only when it is one of the [`PresenceMode`] names; any
/// other value is skipped the way the seed skips an unknown field.
#[derive(Default)]
struct KnownMode(Option<PresenceMode>);

impl<'de> Deserialize<'de> for KnownMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KnownMode;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<KnownMode, E> {
                Ok(KnownMode(PresenceMode::from_name(v)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<KnownMode, E> {
                Ok(KnownMode(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<KnownMode, E> {
                Ok(KnownMode(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<KnownMode, E> {
                Ok(KnownMode(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<KnownMode, E> {
                Ok(KnownMode(None))
            }
            fn visit_unit<E>(self) -> Result<KnownMode, E> {
                Ok(KnownMode(None))
            }
            fn visit_none<E>(self) -> Result<KnownMode, E> {
                Ok(KnownMode(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KnownMode, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(KnownMode(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KnownMode, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(KnownMode(None))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A field that counts only when it is JSON `true`; any other value is skipped the way the
/// seed skips an unknown field (no error, no recursion into nested arrays or objects).
#[derive(Default)]
struct TrueOnly(bool);

impl<'de> Deserialize<'de> for TrueOnly {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TrueOnly;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<TrueOnly, E> {
                Ok(TrueOnly(v))
            }
            fn visit_i64<E>(self, _: i64) -> Result<TrueOnly, E> {
                Ok(TrueOnly(false))
            }
            fn visit_u64<E>(self, _: u64) -> Result<TrueOnly, E> {
                Ok(TrueOnly(false))
            }
            fn visit_f64<E>(self, _: f64) -> Result<TrueOnly, E> {
                Ok(TrueOnly(false))
            }
            fn visit_str<E>(self, _: &str) -> Result<TrueOnly, E> {
                Ok(TrueOnly(false))
            }
            fn visit_unit<E>(self) -> Result<TrueOnly, E> {
                Ok(TrueOnly(false))
            }
            fn visit_none<E>(self) -> Result<TrueOnly, E> {
                Ok(TrueOnly(false))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TrueOnly, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TrueOnly(false))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TrueOnly, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(TrueOnly(false))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl WSClientMessage {
    /// Parses one text frame with the seed's rules (see the [module docs](self)).
    ///
    /// Returns `Ok(None)` for an action the server does not know: the seed ignores it.
    ///
    /// # Errors
    /// [`ParseError`] for a frame that must be answered with an error reply.
    pub fn parse(text: &str) -> Result<Option<Self>, ParseError> {
        let raw: RawClientMessage =
            serde_json::from_str(text).map_err(|e| ParseError::InvalidFormat {
                details: e.to_string(),
            })?;
        let action = match raw.action.as_str() {
            "ping" => return Ok(Some(WSClientMessage::Ping)),
            "refresh" => {
                return match raw.token {
                    Some(token) if !token.is_empty() => {
                        Ok(Some(WSClientMessage::Refresh { token }))
                    }
                    _ => Err(ParseError::TokenRequired),
                };
            }
            "subscribe" => Action::Subscribe,
            "unsubscribe" => Action::Unsubscribe,
            _ => return Ok(None),
        };
        let topic = match raw.topic {
            None => return Err(ParseError::TopicRequired(action)),
            Some(t) if t.is_empty() => return Err(ParseError::TopicRequired(action)),
            Some(t) => Topic::new(t).map_err(ParseError::InvalidTopic)?,
        };
        Ok(Some(match action {
            Action::Subscribe => WSClientMessage::Subscribe {
                topic,
                since: raw.since,
                position: raw.position.0,
                presence: raw.presence.0,
            },
            Action::Unsubscribe => WSClientMessage::Unsubscribe { topic },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<ClientMessage>, ParseError> {
        ClientMessage::parse(s)
    }

    fn invalid_format(s: &str) -> bool {
        matches!(parse(s), Err(ParseError::InvalidFormat { .. }))
    }

    #[test]
    fn the_three_actions() {
        assert_eq!(
            parse(r#"{"action":"subscribe","topic":"list:123"}"#),
            Ok(Some(ClientMessage::Subscribe {
                topic: Topic::list(123),
                since: None,
                position: false,
                presence: None,
            }))
        );
        assert_eq!(
            parse(r#"{"action":"unsubscribe","topic":"list:123"}"#),
            Ok(Some(ClientMessage::Unsubscribe {
                topic: Topic::list(123)
            }))
        );
        assert_eq!(parse(r#"{"action":"ping"}"#), Ok(Some(ClientMessage::Ping)));
    }

    #[test]
    fn invalid_format_cases() {
        for s in [
            "",
            "not json",
            "{",
            "[]",
            "42",
            "\"ping\"",
            "null",
            "{}",
            r#"{"topic":"list:1"}"#,
            r#"{"action":1}"#,
            r#"{"action":null}"#,
            r#"{"action":["ping"]}"#,
            r#"{"action":"subscribe","topic":5}"#,
            r#"{"action":"subscribe","topic":{"a":1}}"#,
            r#"{"action":"ping","topic":true}"#,
        ] {
            assert!(invalid_format(s), "{s:?} should be an invalid format");
        }
    }

    #[test]
    fn topic_required() {
        for (s, a) in [
            (r#"{"action":"subscribe"}"#, Action::Subscribe),
            (r#"{"action":"subscribe","topic":null}"#, Action::Subscribe),
            (r#"{"action":"subscribe","topic":""}"#, Action::Subscribe),
            (r#"{"action":"unsubscribe"}"#, Action::Unsubscribe),
            (
                r#"{"action":"unsubscribe","topic":""}"#,
                Action::Unsubscribe,
            ),
        ] {
            assert_eq!(parse(s), Err(ParseError::TopicRequired(a)), "{s}");
        }
        assert_eq!(
            serde_json::to_string(&ParseError::TopicRequired(Action::Unsubscribe).to_reply())
                .unwrap(),
            r#"{"error":"Topic is required for unsubscribe action"}"#
        );
    }

    #[test]
    fn unknown_actions_are_ignored() {
        for s in [
            r#"{"action":"PING"}"#,
            r#"{"action":"Subscribe","topic":"list:1"}"#,
            r#"{"action":"publish","topic":"list:1"}"#,
            r#"{"action":""}"#,
        ] {
            assert_eq!(parse(s), Ok(None), "{s}");
        }
    }

    #[test]
    fn extra_fields_and_ping_with_topic() {
        assert_eq!(
            parse(r#"{"action":"ping","topic":"list:1","extra":[1,2]}"#),
            Ok(Some(ClientMessage::Ping))
        );
        assert_eq!(
            parse(r#"{"action":"ping","topic":null}"#),
            Ok(Some(ClientMessage::Ping))
        );
    }

    #[test]
    fn since() {
        assert_eq!(
            parse(r#"{"action":"subscribe","topic":"list:1","since":{"seq":41,"epoch":"e1"}}"#),
            Ok(Some(ClientMessage::Subscribe {
                topic: Topic::list(1),
                since: Some(StreamPosition {
                    seq: 41,
                    epoch: "e1".into()
                }),
                position: false,
                presence: None,
            }))
        );
        assert!(invalid_format(
            r#"{"action":"subscribe","topic":"list:1","since":{"seq":"x"}}"#
        ));
    }

    #[test]
    fn refresh() {
        assert_eq!(
            parse(r#"{"action":"refresh","token":"abc"}"#),
            Ok(Some(ClientMessage::Refresh {
                token: "abc".into()
            }))
        );
        for s in [
            r#"{"action":"refresh"}"#,
            r#"{"action":"refresh","token":null}"#,
            r#"{"action":"refresh","token":""}"#,
        ] {
            assert_eq!(parse(s), Err(ParseError::TokenRequired), "{s}");
        }
        assert_eq!(
            serde_json::to_string(&ParseError::TokenRequired.to_reply()).unwrap(),
            r#"{"error":"Token is required for refresh action"}"#
        );
        assert!(invalid_format(r#"{"action":"refresh","token":5}"#));
        assert!(invalid_format(r#"{"action":"refresh","token":{"t":"x"}}"#));
        // Other actions ignore a token field; `REFRESH` is an unknown action.
        assert_eq!(
            parse(r#"{"action":"ping","token":"abc"}"#),
            Ok(Some(ClientMessage::Ping))
        );
        assert_eq!(parse(r#"{"action":"REFRESH","token":"abc"}"#), Ok(None));
        assert_eq!(
            serde_json::to_string(&WSClientMessage::Refresh {
                token: "a.b.c".into()
            })
            .unwrap(),
            r#"{"action":"refresh","token":"a.b.c"}"#
        );
    }

    #[test]
    fn debug_never_shows_a_token() {
        let msg = ClientMessage::Refresh {
            token: "secret.jwt.value".into(),
        };
        assert!(!format!("{msg:?}").contains("secret"));
    }

    #[test]
    fn invalid_topic() {
        assert!(matches!(
            parse(r#"{"action":"subscribe","topic":"a b"}"#),
            Err(ParseError::InvalidTopic(TopicError::InvalidChar(' ')))
        ));
    }

    #[test]
    fn position_is_asked_only_by_true() {
        let asks = |extra: &str| match parse(&format!(
            r#"{{"action":"subscribe","topic":"list:1","position":{extra}}}"#
        )) {
            Ok(Some(ClientMessage::Subscribe { position, .. })) => position,
            other => panic!("{extra}: {other:?}"),
        };
        assert!(asks("true"));
        for other in ["false", "null", "1", r#""true""#, "[true]", r#"{"a":[1]}"#] {
            assert!(!asks(other), "{other}");
        }
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(!asks(&deep));
        let sent = WSClientMessage::Subscribe {
            topic: Topic::list(1),
            since: None,
            position: true,
            presence: None,
        };
        assert_eq!(
            serde_json::to_string(&sent).unwrap(),
            r#"{"action":"subscribe","topic":"list:1","position":true}"#
        );
    }

    #[test]
    fn presence_is_asked_only_by_its_two_names() {
        let asks = |extra: &str| match parse(&format!(
            r#"{{"action":"subscribe","topic":"list:1","presence":{extra}}}"#
        )) {
            Ok(Some(ClientMessage::Subscribe { presence, .. })) => presence,
            other => panic!("{extra}: {other:?}"),
        };
        assert_eq!(asks(r#""join""#), Some(PresenceMode::Join));
        assert_eq!(asks(r#""watch""#), Some(PresenceMode::Watch));
        for other in [
            "false",
            "true",
            "null",
            "1",
            r#""JOIN""#,
            r#""""#,
            r#"["join"]"#,
            r#"{"a":1}"#,
        ] {
            assert_eq!(asks(other), None, "{other}");
        }
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(asks(&deep), None);
        // Ping ignores it.
        assert_eq!(
            parse(r#"{"action":"ping","presence":"join"}"#),
            Ok(Some(ClientMessage::Ping))
        );
        let sent = WSClientMessage::Subscribe {
            topic: Topic::list(1),
            since: None,
            position: false,
            presence: Some(PresenceMode::Join),
        };
        assert_eq!(
            serde_json::to_string(&sent).unwrap(),
            r#"{"action":"subscribe","topic":"list:1","presence":"join"}"#
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!(
            r#"{{"action":"ping","x":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        // Ignored fields are skipped without recursion: no stack overflow, still a ping.
        assert_eq!(parse(&deep), Ok(Some(ClientMessage::Ping)));
        let deep_topic = format!(
            r#"{{"action":"subscribe","topic":{}}}"#,
            "[".repeat(100_000)
        );
        assert!(invalid_format(&deep_topic));
    }

    #[test]
    fn serializes_as_sent_by_clients() {
        assert_eq!(
            serde_json::to_string(&WSClientMessage::Subscribe {
                topic: Topic::gifts_all(),
                since: None,
                position: false,
                presence: None,
            })
            .unwrap(),
            r#"{"action":"subscribe","topic":"gifts:all"}"#
        );
        assert_eq!(
            serde_json::to_string(&WSClientMessage::Ping).unwrap(),
            r#"{"action":"ping"}"#
        );
    }
}
