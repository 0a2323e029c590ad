//! Presence: who is on a topic right now (tidings addition, issue 15).
//!
//! A subscribe may carry `"presence": "join"` (be present on the topic and watch its presence)
//! or `"presence": "watch"` (watch without being present) — [`PresenceMode`]. Any other value
//! of `presence` is ignored like any extra field, so a seed client never sees a presence frame.
//!
//! After the `subscribed` ack (and after any replay for `since`) a watcher receives one
//! snapshot, `{"action":"presence","topic":T,"members":[..]}`, then as they happen
//! `{"action":"presence_join","topic":T,"member":M}` (a user appears, or a present user's
//! connection count changes: an upsert by `user_id`) and
//! `{"action":"presence_leave","topic":T,"user_id":U}` (the user's last connection on `T` left,
//! unsubscribed or died, or its node died). These are [`WSReply`](crate::WSReply) variants.
//!
//! A user is one [`PresenceMember`] however many connections (tabs, nodes) it has on the topic:
//! `connections` counts them. Its `info` is a small JSON object the server builds from the
//! token's claims (which claims is the server's configuration; `{}` when none is present).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

/// What a subscriber asks for with the `presence` field of `subscribe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub enum PresenceMode {
    /// Be present on the topic (one entry per user) and watch its presence.
    Join,
    /// Watch the topic's presence without being present.
    Watch,
}

impl PresenceMode {
    /// The wire value (`"join"` / `"watch"`).
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceMode::Join => "join",
            PresenceMode::Watch => "watch",
        }
    }

    /// The mode for a wire value; `None` for anything else (ignored, like an extra field).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "join" => Some(PresenceMode::Join),
            "watch" => Some(PresenceMode::Watch),
            _ => None,
        }
    }
}

/// A present user's `info`: a JSON object, kept as the exact text the server built it as (so
/// a node relays it from Redis without parsing it).
#[derive(Clone, Serialize)]
#[serde(transparent)]
#[cfg_attr(
    feature = "ts",
    derive(ts_rs::TS),
    ts(export, type = "Record<string, unknown>")
)]
pub struct PresenceInfo(Box<RawValue>);

impl PresenceInfo {
    /// `{}`: a user whose token carries none of the configured claims.
    pub fn empty() -> Self {
        Self(RawValue::from_string("{}".to_owned()).expect("valid JSON"))
    }

    /// Wraps JSON text that must be an object.
    ///
    /// # Errors
    /// A serde_json error when `json` is not valid JSON or not an object.
    pub fn from_json(json: String) -> Result<Self, serde_json::Error> {
        Self::object(RawValue::from_string(json)?)
    }

    fn object(raw: Box<RawValue>) -> Result<Self, serde_json::Error> {
        if !raw.get().trim_start().starts_with('{') {
            return Err(serde::de::Error::custom(
                "presence info must be a JSON object",
            ));
        }
        Ok(Self(raw))
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl Default for PresenceInfo {
    fn default() -> Self {
        Self::empty()
    }
}

/// Read through a `serde_json::Value` (and written back compact): the presence frames are
/// variants of the internally tagged [`WSReply`](crate::WSReply), whose deserializer buffers
/// its input, so raw text is not available there.
impl<'de> Deserialize<'de> for PresenceInfo {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        if !value.is_object() {
            return Err(serde::de::Error::custom(
                "presence info must be a JSON object",
            ));
        }
        let raw = serde_json::value::to_raw_value(&value).map_err(serde::de::Error::custom)?;
        Ok(Self(raw))
    }
}

impl fmt::Debug for PresenceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl PartialEq for PresenceInfo {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for PresenceInfo {}

/// One present user on a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct PresenceMember {
    /// The user (the token's `sub`).
    pub user_id: String,
    /// What the server took from the user's token (e.g. `{"name":"Mom"}`), at most a
    /// configured size.
    pub info: PresenceInfo,
    /// How many connections of the user are on the topic, across every tab and node (≥ 1).
    pub connections: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_info() {
        assert_eq!(PresenceMode::from_name("join"), Some(PresenceMode::Join));
        assert_eq!(PresenceMode::from_name("watch"), Some(PresenceMode::Watch));
        assert_eq!(PresenceMode::from_name("Join"), None);
        assert_eq!(
            serde_json::to_string(&PresenceMode::Watch).unwrap(),
            r#""watch""#
        );
        assert!(PresenceInfo::from_json("[1]".into()).is_err());
        let member = PresenceMember {
            user_id: "u1".into(),
            info: PresenceInfo::from_json(r#"{"name":"Mom"}"#.into()).unwrap(),
            connections: 2,
        };
        let text = serde_json::to_string(&member).unwrap();
        assert_eq!(
            text,
            r#"{"user_id":"u1","info":{"name":"Mom"},"connections":2}"#
        );
        assert_eq!(
            serde_json::from_str::<PresenceMember>(&text).unwrap(),
            member
        );
        assert_eq!(PresenceInfo::empty().get(), "{}");
    }
}
