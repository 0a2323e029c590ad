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
        WSClientMessage::Subscribe { topic, since: None } => {
            format!(r#"{{"action":"subscribe","topic":"{topic}"}}"#)
        }
        WSClientMessage::Subscribe {
            topic,
            since: Some(since),
        } => format!(
            r#"{{"action":"subscribe","topic":"{topic}","since":{{"seq":{},"epoch":"{}"}}}}"#,
            since.seq,
            escape(&since.epoch)
        ),
        WSClientMessage::Unsubscribe { topic } => {
            format!(r#"{{"action":"unsubscribe","topic":"{topic}"}}"#)
        }
        WSClientMessage::Ping => r#"{"action":"ping"}"#.to_owned(),
        WSClientMessage::Refresh { token } => {
            format!(r#"{{"action":"refresh","token":"{}"}}"#, escape(token))
        }
    }
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
            },
            WSClientMessage::Subscribe {
                topic: Topic::list(2),
                since: Some(tidings_protocol::StreamPosition {
                    seq: 0,
                    epoch: "odd \"one\"\\\n\u{1}\u{8}".into(),
                }),
            },
        ] {
            assert_eq!(encode(&m), serde_json::to_string(&m).unwrap());
            // And the server's parser reads it back as the same message.
            assert_eq!(WSClientMessage::parse(&encode(&m)), Ok(Some(m)));
        }
    }
}
