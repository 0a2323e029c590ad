//! Fuzzes the parse `POST /publish` does on a request body (server/src/publish.rs):
//! `serde_json::from_slice::<WSEvent>` on the raw bytes, with serde_json's error category
//! deciding between 422 (`Data`: JSON that is not a valid event) and 400 (anything else).
//!
//! Besides "never panics", it checks what the hub relies on when it serializes an accepted
//! event once and sends the bytes to every subscriber:
//! - the topic passes `Topic::check` and the payload is a JSON object;
//! - `serde_json::to_string` parses back into an equal event;
//! - the hub's text (server/src/hub.rs: `base_text` serializes the event without any
//!   publisher-supplied `seq`/`epoch`, `with_position` splices `,"seq":N,"epoch":"E"` before
//!   the closing brace) is one JSON object that a client's `ServerMessage::parse` reads as the
//!   same event at that position;
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
    let text = serde_json::to_string(&event).expect("an accepted event serializes");
    let back: WSEvent = serde_json::from_str(&text).expect("an event's text parses back");
    assert_eq!(back, event, "{text}");

    // What the hub sends: the base text, then the position spliced in.
    let mut numbered = event.clone();
    numbered.seq = None;
    numbered.epoch = None;
    let base = serde_json::to_string(&numbered).expect("the base text serializes");
    let body = base.strip_suffix('}').expect("the base text is an object");
    let wire = format!("{body},\"seq\":{},\"epoch\":\"{}\"}}", u64::MAX, "0f1e2d3c");
    numbered.seq = Some(u64::MAX);
    numbered.epoch = Some("0f1e2d3c".to_owned());
    match ServerMessage::parse(&wire) {
        Ok(ServerMessage::Event(seen)) => assert_eq!(seen, numbered, "{wire}"),
        other => panic!("{wire:?} reads back as {other:?} on the client"),
    }
});
