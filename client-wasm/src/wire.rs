//! Wire text: outgoing frames, the protocol crate's [`WSClientMessage`] written as JSON text
//! without serde_json, and the [`names`] of the keys and values the client reads in the
//! server's frames.
//!
//! The browser client avoids serde_json to stay small (incoming frames go through the
//! browser's own `JSON.parse`). Outgoing messages are so simple that writing them by hand is
//! exact: a [`Topic`](tidings_protocol::Topic) only holds ASCII letters, digits and
//! `: - _ . @ / + = ~`, none of which needs escaping in a JSON string. A native test checks
//! the output against serde_json for every variant.

use tidings_protocol::WSClientMessage;

/// The JSON text of `message`, byte for byte what serde_json would write.
pub fn encode(message: &WSClientMessage) -> String {
    match message {
        WSClientMessage::Subscribe {
            topic,
            since,
            position,
            presence,
        } => {
            let mut out = format!(r#"{{"action":"subscribe","topic":"{topic}""#);
            if let Some(since) = since {
                out.push_str(&format!(
                    r#","since":{{"seq":{},"epoch":"{}"}}"#,
                    since.seq,
                    escape(&since.epoch)
                ));
            }
            if *position {
                out.push_str(r#","position":true"#);
            }
            if let Some(mode) = presence {
                out.push_str(&format!(r#","presence":"{}""#, mode.as_str()));
            }
            out.push('}');
            out
        }
        WSClientMessage::Unsubscribe { topic } => {
            format!(r#"{{"action":"unsubscribe","topic":"{topic}"}}"#)
        }
        WSClientMessage::Ping => r#"{"action":"ping"}"#.to_owned(),
        WSClientMessage::Refresh { token } => {
            format!(r#"{{"action":"refresh","token":"{}"}}"#, escape(token))
        }
    }
}

/// The keys and values of the protocol's [`ServerMessage`](tidings_protocol::ServerMessage)
/// that the browser client reads (the client's `inbound` module decodes frames with them). A
/// native test checks each against what the protocol's own types serialize to.
pub mod names {
    /// Every event and subscription reply, and topic-related errors: the topic.
    pub const TOPIC: &str = "topic";
    /// An event's type; its presence makes a frame an event.
    pub const EVENT: &str = "event";
    /// An event's position in its topic's stream (tidings addition).
    pub const SEQ: &str = "seq";
    /// An event's stream epoch (tidings addition).
    pub const EPOCH: &str = "epoch";
    /// A reply's action; its presence (without `event`) makes a frame a reply.
    pub const ACTION: &str = "action";
    /// The action of a `subscribed` reply.
    pub const SUBSCRIBED: &str = "subscribed";
    /// A `subscribed` reply's outcome of a recovery (tidings addition).
    pub const RECOVERED: &str = "recovered";
    /// The action of an `unsubscribed` reply.
    pub const UNSUBSCRIBED: &str = "unsubscribed";
    /// An `unsubscribed` reply's reason when the server ended the subscription by itself
    /// (tidings addition).
    pub const REASON: &str = "reason";
    /// The action of a `refreshed` reply (tidings addition).
    pub const REFRESHED: &str = "refreshed";
    /// The action of a `skipped` reply: an event of the topic (`seq`, `epoch`) that was not
    /// for this connection (tidings addition).
    pub const SKIPPED: &str = "skipped";
    /// The action of a presence snapshot: everyone present on `topic` (tidings addition).
    pub const PRESENCE: &str = "presence";
    /// A snapshot's list of present users.
    pub const MEMBERS: &str = "members";
    /// The action of a join (or an update: an upsert by `user_id`) of one present user.
    pub const PRESENCE_JOIN: &str = "presence_join";
    /// A join's present user.
    pub const MEMBER: &str = "member";
    /// The action of a leave of one present user.
    pub const PRESENCE_LEAVE: &str = "presence_leave";
    /// A present user's id (in a member, and in a leave).
    pub const USER_ID: &str = "user_id";
    /// An error reply's fixed text.
    pub const ERROR: &str = "error";
    /// An error reply's explanation.
    pub const DETAILS: &str = "details";
}

/// Characters of a generated connection id.
const ID_CHARS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Length of a generated connection id: 22 base-36 characters, about 113 bits.
pub const CONNECTION_ID_LEN: usize = 22;

/// A new random connection id (see [`tidings_protocol::CONNECTION_ID_PARAM`]): the client
/// sends it at the handshake and the app's requests carry it, so that the backend can leave
/// this client out of the events its own changes cause. `random` returns uniform numbers in
/// `[0, 1)` (the browser's `crypto.getRandomValues` where available, else `Math.random`).
/// Guessing another client's id lets a user only hide that client's echo of the user's own
/// changes, never read anything.
pub fn connection_id(mut random: impl FnMut() -> f64) -> String {
    (0..CONNECTION_ID_LEN)
        .map(|_| {
            // Truncation intended: an index in 0..36.
            let i = ((random() * 36.0) as usize).min(35);
            char::from(ID_CHARS[i])
        })
        .collect()
}

/// `text` escaped for a JSON string. Epochs come from the server (tidings sends hex digits)
/// and tokens from the app's `getToken` (base64url and dots), but whatever they hold is
/// written faithfully.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_protocol::{
        EventData, EventType, Payload, PresenceInfo, PresenceMember, PresenceMode, ServerMessage,
        Topic, WSError, WSEvent, WSReply,
    };

    /// The JSON object `message` serializes to.
    fn object(message: ServerMessage) -> serde_json::Map<String, serde_json::Value> {
        let text = serde_json::to_string(&message).unwrap();
        // The protocol's parser reads it back as the same shape.
        assert_eq!(ServerMessage::parse(&text).unwrap(), message);
        match serde_json::from_str(&text).unwrap() {
            serde_json::Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn connection_ids_are_valid_and_distinct() {
        // A 64-bit LCG's high bits: uniform enough for the test.
        let mut state = 1_u64;
        let mut lcg = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1_u64 << 53) as f64
        };
        let a = connection_id(&mut lcg);
        let b = connection_id(&mut lcg);
        assert_eq!(a.len(), CONNECTION_ID_LEN);
        assert!(tidings_protocol::is_valid_connection_id(&a), "{a}");
        assert_ne!(a, b);
        assert!(tidings_protocol::is_valid_connection_id(&connection_id(
            || 0.999_999_999
        )));
        assert!(tidings_protocol::is_valid_connection_id(&connection_id(
            || 0.0
        )));
    }

    #[test]
    fn names_match_the_protocol() {
        let event = WSEvent {
            seq: Some(7),
            epoch: Some("e1".into()),
            ..WSEvent::new(
                Topic::list(1),
                EventType::Added,
                EventData {
                    entity_id: "1".into(),
                    payload: Payload::from_json("{}".into()).unwrap(),
                    user_id: "2".into(),
                    timestamp: "t".into(),
                },
            )
        };
        let event = object(event.into());
        assert_eq!(event[names::TOPIC], "list:1");
        assert_eq!(event[names::EVENT], "ADDED");
        assert_eq!(event[names::SEQ], 7);
        assert_eq!(event[names::EPOCH], "e1");
        assert!(!event.contains_key(names::ACTION));

        let subscribed = object(
            WSReply::subscribed_at(
                Topic::list(1),
                Some(true),
                Some(tidings_protocol::StreamPosition {
                    seq: 3,
                    epoch: "e2".into(),
                }),
            )
            .into(),
        );
        assert_eq!(subscribed[names::ACTION], names::SUBSCRIBED);
        assert_eq!(subscribed[names::TOPIC], "list:1");
        assert_eq!(subscribed[names::RECOVERED], true);
        assert_eq!(subscribed[names::SEQ], 3);
        assert_eq!(subscribed[names::EPOCH], "e2");
        assert!(!subscribed.contains_key(names::EVENT));
        assert_eq!(
            object(WSReply::Refreshed.into())[names::ACTION],
            names::REFRESHED
        );
        let skipped = object(
            WSReply::Skipped {
                topic: Topic::list(1),
                seq: 4,
                epoch: "e3".into(),
            }
            .into(),
        );
        assert_eq!(skipped[names::ACTION], names::SKIPPED);
        assert_eq!(skipped[names::TOPIC], "list:1");
        assert_eq!(skipped[names::SEQ], 4);
        assert_eq!(skipped[names::EPOCH], "e3");
        assert!(!skipped.contains_key(names::EVENT));
        let ended = object(
            WSReply::Unsubscribed {
                topic: Topic::list(1),
                reason: Some(WSReply::REASON_FORBIDDEN.into()),
            }
            .into(),
        );
        assert_eq!(ended[names::ACTION], names::UNSUBSCRIBED);
        assert_eq!(ended[names::TOPIC], "list:1");
        assert_eq!(ended[names::REASON], "Forbidden");

        let member = PresenceMember {
            user_id: "u1".into(),
            info: PresenceInfo::from_json(r#"{"name":"Mom"}"#.into()).unwrap(),
            connections: 2,
        };
        let snapshot = object(
            WSReply::Presence {
                topic: Topic::list(1),
                members: vec![member.clone()],
            }
            .into(),
        );
        assert_eq!(snapshot[names::ACTION], names::PRESENCE);
        assert_eq!(snapshot[names::TOPIC], "list:1");
        assert_eq!(snapshot[names::MEMBERS][0][names::USER_ID], "u1");
        assert!(!snapshot.contains_key(names::EVENT));
        let join = object(
            WSReply::PresenceJoin {
                topic: Topic::list(1),
                member,
            }
            .into(),
        );
        assert_eq!(join[names::ACTION], names::PRESENCE_JOIN);
        assert_eq!(join[names::TOPIC], "list:1");
        assert_eq!(join[names::MEMBER][names::USER_ID], "u1");
        let leave = object(
            WSReply::PresenceLeave {
                topic: Topic::list(1),
                user_id: "u1".into(),
            }
            .into(),
        );
        assert_eq!(leave[names::ACTION], names::PRESENCE_LEAVE);
        assert_eq!(leave[names::TOPIC], "list:1");
        assert_eq!(leave[names::USER_ID], "u1");
        // The client's levels map onto the wire's modes.
        assert_eq!(crate::presence::Presence::None.mode(), None);
        assert_eq!(
            crate::presence::Presence::Watch.mode(),
            Some(PresenceMode::Watch)
        );
        assert_eq!(
            crate::presence::Presence::Join.mode(),
            Some(PresenceMode::Join)
        );

        let error = object(
            WSError {
                details: Some("why".into()),
                topic: Some("list:1".into()),
                ..WSError::new(WSError::FORBIDDEN)
            }
            .into(),
        );
        assert_eq!(error[names::ERROR], WSError::FORBIDDEN);
        assert_eq!(error[names::DETAILS], "why");
        assert_eq!(error[names::TOPIC], "list:1");
        assert!(!error.contains_key(names::EVENT) && !error.contains_key(names::ACTION));
    }

    #[test]
    fn matches_serde_json() {
        let weird = Topic::new("a.b-c_d@e+f=g~h/1:2").unwrap();
        for m in [
            WSClientMessage::Subscribe {
                topic: Topic::list(123),
                since: None,
                position: false,
                presence: None,
            },
            WSClientMessage::Subscribe {
                topic: Topic::list(124),
                since: None,
                position: true,
                presence: None,
            },
            WSClientMessage::Unsubscribe {
                topic: Topic::gifts_all(),
            },
            WSClientMessage::Subscribe {
                topic: weird,
                since: None,
                position: false,
                presence: None,
            },
            WSClientMessage::Ping,
            WSClientMessage::Refresh {
                token: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2ln-_".into(),
            },
            WSClientMessage::Refresh {
                token: "odd \"token\"\\\n".into(),
            },
            WSClientMessage::Subscribe {
                topic: Topic::list(1),
                since: Some(tidings_protocol::StreamPosition {
                    seq: 41,
                    epoch: "9f3a00c2e1d4b7a6".into(),
                }),
                position: true,
                presence: None,
            },
            WSClientMessage::Subscribe {
                topic: Topic::list(3),
                since: None,
                position: true,
                presence: Some(PresenceMode::Join),
            },
            WSClientMessage::Subscribe {
                topic: Topic::list(4),
                since: Some(tidings_protocol::StreamPosition {
                    seq: 2,
                    epoch: "e".into(),
                }),
                position: false,
                presence: Some(PresenceMode::Watch),
            },
            WSClientMessage::Subscribe {
                topic: Topic::list(2),
                since: Some(tidings_protocol::StreamPosition {
                    seq: 0,
                    epoch: "odd \"one\"\\\n\u{1}\u{8}".into(),
                }),
                position: false,
                presence: None,
            },
        ] {
            assert_eq!(encode(&m), serde_json::to_string(&m).unwrap());
            // And the server's parser reads it back as the same message.
            assert_eq!(WSClientMessage::parse(&encode(&m)), Ok(Some(m)));
        }
    }
}
