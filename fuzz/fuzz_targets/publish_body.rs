//! Fuzzes the parse `POST /publish` does on a request body (server/src/publish.rs):
//! `serde_json::from_slice::<WSEvent>` on the raw bytes, with serde_json's error category
//! deciding between 422 (`Data`: JSON that is not a valid event) and 400 (anything else).
//!
//! Besides "never panics", it checks what the hub relies on when it serializes an accepted
//! event once and sends the bytes to every subscriber:
//! - the topic passes `Topic::check` and the payload is a JSON object;
//! - `serde_json::to_string` (what the hub sends) parses back into an equal event, both as a
//!   `WSEvent` and through the client's `ServerMessage::parse`;
//! - a refused body is never an I/O error (there is no reader that can fail).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::error::Category;
use tidings_protocol::{ServerMessage, Topic, WSEvent};

fuzz_target!(|data: &[u8]| {
    let event: WSEvent = match serde_json::from_slice(data) {
        Ok(event) => event,
        Err(error) => {
            // 422 for Data, 400 for Syntax/Eof; Io cannot happen on a slice.
            assert_ne!(error.classify(), Category::Io, "{error}");
            return;
        }
    };
    assert!(
        Topic::check(event.topic.as_str()).is_ok(),
        "{:?}",
        event.topic
    );
    assert!(
        event.data.payload.get().starts_with('{'),
        "payload is not an object: {:?}",
        event.data.payload
    );
    let wire = serde_json::to_string(&event).expect("an accepted event serializes");
    let back: WSEvent = serde_json::from_str(&wire).expect("the hub's bytes parse back");
    assert_eq!(back, event, "{wire}");
    match ServerMessage::parse(&wire) {
        Ok(ServerMessage::Event(seen)) => assert_eq!(seen, event, "{wire}"),
        other => panic!("{wire:?} reads back as {other:?} on the client"),
    }
});
