//! Golden vectors: every JSON example of the seed document parses into the right type and
//! serializes back to equal JSON. Renaming a field or an event breaks this test.

use std::path::PathBuf;

use serde_json::Value;
use tidings_protocol::{ClientMessage, EventType, PresenceMode, ServerMessage, WSError, WSReply};

fn vectors() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("vectors dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("read vector"))
        })
        .collect();
    out.sort();
    assert!(
        out.len() >= 14,
        "expected every seed example, found {}",
        out.len()
    );
    out
}

fn same_json(name: &str, original: &str, reserialized: &str) {
    let a: Value = serde_json::from_str(original).unwrap();
    let b: Value = serde_json::from_str(reserialized).unwrap();
    assert_eq!(a, b, "{name}: round trip changed the JSON");
}

#[test]
fn every_vector_parses_into_its_type_and_back() {
    for (name, text) in vectors() {
        if let Some(action) = name.strip_prefix("client-") {
            let msg = ClientMessage::parse(&text)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .unwrap_or_else(|| panic!("{name}: parsed as an unknown action"));
            let expected = match &msg {
                ClientMessage::Subscribe { .. } => "subscribe",
                ClientMessage::Unsubscribe { .. } => "unsubscribe",
                ClientMessage::Ping => "ping",
                ClientMessage::Refresh { .. } => "refresh",
            };
            // `client-subscribe-position`: a tidings addition to the seed's `subscribe`.
            assert_eq!(action.split('-').next(), Some(expected), "{name}");
            same_json(&name, &text, &serde_json::to_string(&msg).unwrap());
        } else if let Some(rest) = name.strip_prefix("server-") {
            let msg = ServerMessage::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            match (&msg, rest) {
                (ServerMessage::Event(ev), kind) if kind.starts_with("event-") => {
                    let expected = kind["event-".len()..].to_uppercase().replace('-', "_");
                    assert_eq!(ev.event.as_str(), expected, "{name}");
                    assert!(EventType::ALL.contains(&ev.event));
                }
                (ServerMessage::Reply(r), kind) if kind.starts_with("reply-") => {
                    let expected = match r {
                        WSReply::Subscribed { .. } => "subscribed",
                        WSReply::Unsubscribed { .. } => "unsubscribed",
                        WSReply::Pong => "pong",
                        WSReply::Refreshed => "refreshed",
                        WSReply::Skipped { .. } => "skipped",
                        WSReply::Presence { .. } => "presence",
                        WSReply::PresenceJoin { .. } => "presence_join",
                        WSReply::PresenceLeave { .. } => "presence_leave",
                    };
                    let reply = &kind["reply-".len()..];
                    assert_eq!(reply.split('-').next(), Some(expected), "{name}");
                }
                (ServerMessage::Error(_), kind) if kind.starts_with("error-") => {}
                (other, _) => panic!("{name}: parsed as the wrong shape: {other:?}"),
            }
            same_json(&name, &text, &serde_json::to_string(&msg).unwrap());
        } else {
            panic!("{name}: vector names start with client- or server-");
        }
    }
}

#[test]
fn positions_are_additions_only_for_clients_that_ask() {
    let seed = ClientMessage::parse(r#"{"action":"subscribe","topic":"list:123"}"#)
        .unwrap()
        .unwrap();
    assert!(matches!(
        seed,
        ClientMessage::Subscribe {
            position: false,
            ..
        }
    ));
    let asks = ClientMessage::parse(
        &std::fs::read_to_string(vector("client-subscribe-position")).unwrap(),
    )
    .unwrap()
    .unwrap();
    assert!(matches!(
        asks,
        ClientMessage::Subscribe { position: true, .. }
    ));
    let ack = ServerMessage::parse(
        &std::fs::read_to_string(vector("server-reply-subscribed-position")).unwrap(),
    )
    .unwrap();
    let ServerMessage::Reply(reply) = ack else {
        panic!("not a reply")
    };
    let position = reply.position().expect("a position");
    assert_eq!(position.seq, 0);
    // The seed's ack has no position.
    let ServerMessage::Reply(seed_ack) =
        ServerMessage::parse(r#"{"action":"subscribed","topic":"list:123"}"#).unwrap()
    else {
        panic!("not a reply")
    };
    assert_eq!(seed_ack.position(), None);
}

#[test]
fn presence_is_an_addition_only_for_clients_that_ask() {
    let seed = ClientMessage::parse(r#"{"action":"subscribe","topic":"list:123"}"#)
        .unwrap()
        .unwrap();
    assert!(matches!(
        seed,
        ClientMessage::Subscribe { presence: None, .. }
    ));
    for (name, mode) in [
        ("client-subscribe-presence-join", PresenceMode::Join),
        ("client-subscribe-presence-watch", PresenceMode::Watch),
    ] {
        let asks = ClientMessage::parse(&std::fs::read_to_string(vector(name)).unwrap())
            .unwrap()
            .unwrap();
        assert!(
            matches!(asks, ClientMessage::Subscribe { presence: Some(m), .. } if m == mode),
            "{name}"
        );
    }
    let ServerMessage::Reply(WSReply::Presence { members, .. }) =
        ServerMessage::parse(&std::fs::read_to_string(vector("server-reply-presence")).unwrap())
            .unwrap()
    else {
        panic!("not a snapshot")
    };
    assert_eq!(members[0].connections, 2);
    assert_eq!(members[0].info.get(), r#"{"name":"Mom"}"#);
    let ServerMessage::Error(error) = ServerMessage::parse(
        &std::fs::read_to_string(vector("server-error-too-many-present")).unwrap(),
    )
    .unwrap() else {
        panic!("not an error")
    };
    assert_eq!(error.error, WSError::TOO_MANY_PRESENT);
}

fn vector(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/vectors/{name}.json"))
}

#[test]
fn seed_error_texts_are_exact() {
    let err = ClientMessage::parse("not json").unwrap_err().to_reply();
    assert_eq!(err.error, "Invalid message format");
    assert!(err.details.is_some());
    let err = ClientMessage::parse(r#"{"action":"subscribe"}"#)
        .unwrap_err()
        .to_reply();
    assert_eq!(
        serde_json::to_string(&err).unwrap(),
        r#"{"error":"Topic is required for subscribe action"}"#
    );
}
