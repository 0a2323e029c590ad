//! Inbound: each text frame from the server decoded once into an [`Inbound`], a small typed
//! mirror of the protocol's [`ServerMessage`](tidings_protocol::ServerMessage).
//!
//! The frame is parsed with the browser's `JSON.parse` and its fields read with `Reflect`
//! under the protocol's names ([`crate::wire::names`]), not with `ServerMessage::parse`:
//! serde_json would grow the wasm, and a topic listener receives the parsed event object
//! itself (its `payload` as the app's own JSON). Like `ServerMessage::parse`, the shape is told
//! by the keys: `event` makes an event, else `action` a reply, else `error` an error. Only the
//! fields the client acts on are read; what it does with them is the socket module's business.

use wasm_bindgen::JsValue;

use crate::browser::get;
use crate::presence::Member;
use crate::wire::names;

/// One decoded server frame.
pub(super) enum Inbound {
    /// An event on `topic` (`ServerMessage::Event`).
    Event {
        topic: String,
        /// The event's position, when the server sent one (absent from seed servers).
        seq: Option<u64>,
        epoch: Option<String>,
        /// The parsed frame, as given to topic listeners and `rules.onEvent`.
        object: JsValue,
    },
    /// `{"action": "subscribed", "topic", "recovered"?}` (`WSReply::Subscribed`).
    Subscribed {
        topic: String,
        recovered: Option<bool>,
        /// The topic's position, when the server sent one (the client always asks).
        position: Option<(u64, String)>,
    },
    /// `{"action": "refreshed"}` (`WSReply::Refreshed`).
    Refreshed,
    /// `{"action": "skipped", "topic", "seq", "epoch"}` (`WSReply::Skipped`): event `seq` of
    /// `topic` was not for this connection; it only moves the topic's position.
    Skipped {
        topic: String,
        seq: u64,
        epoch: String,
    },
    /// `{"action": "unsubscribed", "topic", "reason"}`: the server ended the subscription by
    /// itself (`WSReply::Unsubscribed` with a reason: a refreshed token no longer allows it).
    Ended { topic: String, reason: String },
    /// `{"action": "presence", "topic", "members"}` (`WSReply::Presence`): everyone present
    /// on `topic` now.
    Presence {
        topic: String,
        members: Vec<Member<JsValue>>,
    },
    /// `{"action": "presence_join", "topic", "member"}` (`WSReply::PresenceJoin`): a user
    /// appeared, or its entry changed.
    PresenceJoin {
        topic: String,
        member: Member<JsValue>,
    },
    /// `{"action": "presence_leave", "topic", "user_id"}` (`WSReply::PresenceLeave`).
    PresenceLeave { topic: String, user_id: String },
    /// An error reply (`ServerMessage::Error`): its text (with `details`, if any) and topic.
    Error { topic: Option<String>, text: String },
    /// Anything else — `unsubscribed` (asked for by the client), `pong`, an event without a topic, an unknown shape: it
    /// only proves the connection alive.
    Other,
}

/// A frame's `seq`. Integers up to 2^53 are exact as f64, which is all a JSON number can be
/// in the browser.
fn seq(msg: &JsValue) -> Option<u64> {
    get(msg, names::SEQ)
        .as_f64()
        .filter(|s| *s >= 0.0)
        .map(|s| s as u64)
}

/// A frame's `seq` and `epoch`, when it has both.
pub(super) fn position(msg: &JsValue) -> Option<(u64, String)> {
    Some((seq(msg)?, get(msg, names::EPOCH).as_string()?))
}

/// A present user's object (`PresenceMember`) as the roster keeps it: its `user_id`, its JSON
/// text as the key (a new count or info is a change) and the object itself for the app.
/// `None` without a string `user_id`.
fn member(value: JsValue) -> Option<Member<JsValue>> {
    let user_id = get(&value, names::USER_ID).as_string()?;
    let key = js_sys::JSON::stringify(&value).ok()?.into();
    Some(Member {
        user_id,
        key,
        value,
    })
}

/// The frame is not JSON.
pub(super) struct NotJson;

/// Decodes one text frame.
pub(super) fn decode(text: &str) -> Result<Inbound, NotJson> {
    let msg = js_sys::JSON::parse(text).map_err(|_| NotJson)?;
    let topic = get(&msg, names::TOPIC).as_string();
    if !get(&msg, names::EVENT).is_undefined() {
        let Some(topic) = topic else {
            return Ok(Inbound::Other);
        };
        let seq = seq(&msg);
        let epoch = get(&msg, names::EPOCH).as_string();
        return Ok(Inbound::Event {
            topic,
            seq,
            epoch,
            object: msg,
        });
    }
    if let Some(action) = get(&msg, names::ACTION).as_string() {
        return Ok(match (topic, action.as_str()) {
            (Some(topic), names::SUBSCRIBED) => Inbound::Subscribed {
                topic,
                recovered: get(&msg, names::RECOVERED).as_bool(),
                position: position(&msg),
            },
            (_, names::REFRESHED) => Inbound::Refreshed,
            (Some(topic), names::SKIPPED) => match position(&msg) {
                Some((seq, epoch)) => Inbound::Skipped { topic, seq, epoch },
                None => Inbound::Other,
            },
            (Some(topic), names::PRESENCE) => {
                let members = get(&msg, names::MEMBERS);
                if !js_sys::Array::is_array(&members) {
                    return Ok(Inbound::Other);
                }
                let members = js_sys::Array::from(&members)
                    .iter()
                    .filter_map(member)
                    .collect();
                Inbound::Presence { topic, members }
            }
            (Some(topic), names::PRESENCE_JOIN) => match member(get(&msg, names::MEMBER)) {
                Some(member) => Inbound::PresenceJoin { topic, member },
                None => Inbound::Other,
            },
            (Some(topic), names::PRESENCE_LEAVE) => match get(&msg, names::USER_ID).as_string() {
                Some(user_id) => Inbound::PresenceLeave { topic, user_id },
                None => Inbound::Other,
            },
            (Some(topic), names::UNSUBSCRIBED) => match get(&msg, names::REASON).as_string() {
                Some(reason) => Inbound::Ended { topic, reason },
                None => Inbound::Other,
            },
            _ => Inbound::Other,
        });
    }
    if let Some(error) = get(&msg, names::ERROR).as_string() {
        let text = match get(&msg, names::DETAILS).as_string() {
            Some(d) => format!("{error}: {d}"),
            None => error,
        };
        return Ok(Inbound::Error { topic, text });
    }
    Ok(Inbound::Other)
}
