//! Fuzzes what the server does with every inbound text frame: `ClientMessage::parse`.
//!
//! Arbitrary bytes; the ones that are UTF-8 are what a WebSocket text frame can carry (the
//! server closes 1007 on anything else before parsing). Besides "never panics", it checks
//! the parser's contract:
//! - a parsed subscribe/unsubscribe carries a topic that passes `Topic::check`;
//! - a parsed message (a subscribe's `since` position included), serialized the way a client
//!   sends it, parses back to itself;
//! - every error maps to an error reply that serializes to JSON a client reads back as the
//!   same `WSError` (the reply the server sends must always be well formed).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidings_protocol::{ClientMessage, ServerMessage, Topic};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ClientMessage::parse(text) {
        Ok(Some(message)) => {
            if let ClientMessage::Subscribe { topic, .. } | ClientMessage::Unsubscribe { topic } =
                &message
            {
                assert!(
                    Topic::check(topic.as_str()).is_ok(),
                    "parsed topic {topic:?} fails Topic::check"
                );
            }
            let sent = serde_json::to_string(&message).expect("a parsed message serializes");
            assert_eq!(
                ClientMessage::parse(&sent),
                Ok(Some(message)),
                "re-serialized message {sent:?} does not parse back"
            );
        }
        // An unknown action: ignored, nothing to check but that it did not panic.
        Ok(None) => {}
        Err(error) => {
            let reply = error.to_reply();
            let wire = serde_json::to_string(&reply).expect("an error reply serializes");
            match ServerMessage::parse(&wire) {
                Ok(ServerMessage::Error(back)) => assert_eq!(back, reply, "reply {wire:?}"),
                other => panic!("error reply {wire:?} reads back as {other:?}"),
            }
        }
    }
});
