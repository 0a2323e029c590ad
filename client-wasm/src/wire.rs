//! Outgoing frames: the protocol crate's [`WSClientMessage`] written as JSON text without
//! serde_json.
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
        WSClientMessage::Subscribe { topic, since: _ } => {
            format!(r#"{{"action":"subscribe","topic":"{topic}"}}"#)
        }
        WSClientMessage::Unsubscribe { topic } => {
            format!(r#"{{"action":"unsubscribe","topic":"{topic}"}}"#)
        }
        WSClientMessage::Ping => r#"{"action":"ping"}"#.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_protocol::Topic;

    #[test]
    fn matches_serde_json() {
        let weird = Topic::new("a.b-c_d@e+f=g~h/1:2").unwrap();
        for m in [
            WSClientMessage::Subscribe {
                topic: Topic::list(123),
                since: None,
            },
            WSClientMessage::Unsubscribe {
                topic: Topic::gifts_all(),
            },
            WSClientMessage::Subscribe {
                topic: weird,
                since: None,
            },
            WSClientMessage::Ping,
        ] {
            assert_eq!(encode(&m), serde_json::to_string(&m).unwrap());
            // And the server's parser reads it back as the same message.
            assert_eq!(WSClientMessage::parse(&encode(&m)), Ok(Some(m)));
        }
    }
}
