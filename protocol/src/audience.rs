//! Who an event is for: the audience a publisher may give an event (exclude the connection
//! that made the change, only some users, not some users), and the connection id a client
//! names itself with so that its app's requests can be excluded from their own echo.
//!
//! None of this is part of the event frame: a subscriber never sees who was excluded. A
//! subscriber left out of an event that tracks positions gets a
//! [`WSReply::Skipped`](crate::WSReply::Skipped) instead (the `seq` only, no content), so its
//! position stays continuous.

use serde::{Deserialize, Serialize};

/// The `/ws` query parameter a client sends its connection id in (`/ws?token=…&cid=…`).
pub const CONNECTION_ID_PARAM: &str = "cid";

/// The HTTP request header an app's fetch wrapper sends the client's connection id in, for
/// the app's backend to pass it on as [`PublishAudience::exclude_connection`].
pub const CONNECTION_ID_HEADER: &str = "tidings-connection-id";

/// The longest connection id, in bytes.
pub const MAX_CONNECTION_ID_LEN: usize = 64;

/// Whether `id` is a valid connection id: 1 to [`MAX_CONNECTION_ID_LEN`] ASCII letters,
/// digits, `-` or `_` (safe in a query string, a header and a log line as is).
pub fn is_valid_connection_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CONNECTION_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The audience fields of a publish request (`POST /publish` takes them next to the event's
/// own fields). All optional; none set means every subscriber of the topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct PublishAudience {
    /// The connection (its client's connection id) that must not receive the event: the one
    /// whose request caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub exclude_connection: Option<String>,
    /// When set, only connections authenticated as one of these `user_id`s (the token's
    /// `sub`) receive the event; anonymous connections do not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub only_users: Option<Vec<String>>,
    /// Connections authenticated as one of these `user_id`s do not receive the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub exclude_users: Option<Vec<String>>,
}

impl PublishAudience {
    /// Whether this is every subscriber (no field set).
    pub fn is_everyone(&self) -> bool {
        self.exclude_connection.is_none()
            && self.only_users.is_none()
            && self.exclude_users.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids() {
        assert!(is_valid_connection_id("a1-B_2"));
        assert!(is_valid_connection_id(&"x".repeat(MAX_CONNECTION_ID_LEN)));
        for bad in ["", "a b", "a&b", "é", "a\n"] {
            assert!(!is_valid_connection_id(bad), "{bad:?}");
        }
        assert!(!is_valid_connection_id(
            &"x".repeat(MAX_CONNECTION_ID_LEN + 1)
        ));
    }

    #[test]
    fn an_audience_is_read_next_to_an_event() {
        let body = r#"{"topic":"list:1","event":"ADDED","data":{},"exclude_connection":"c1","only_users":["7"]}"#;
        let audience: PublishAudience = serde_json::from_str(body).unwrap();
        assert_eq!(audience.exclude_connection.as_deref(), Some("c1"));
        assert_eq!(audience.only_users, Some(vec!["7".to_owned()]));
        assert!(!audience.is_everyone());
        let none: PublishAudience = serde_json::from_str(r#"{"topic":"list:1"}"#).unwrap();
        assert!(none.is_everyone());
        assert_eq!(serde_json::to_string(&none).unwrap(), "{}");
    }
}
