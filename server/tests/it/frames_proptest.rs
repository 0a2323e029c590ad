//! Property test over real sockets: whatever one connection sends (text of any content,
//! JSON-ish text, binary, text frames that are not UTF-8, oversized frames, pings, pongs,
//! close frames, raw bytes that are not WebSocket at all), the server neither panics nor lets
//! it affect anyone else. After every generated sequence a second, well-behaved client that
//! has been subscribed since the start must receive the event published next, have its
//! WebSocket ping and its `{"action":"ping"}` answered, and a brand-new connection must still
//! be accepted.
//!
//! The misbehaving client writes frames by hand over a `TcpStream` after a hand-made
//! handshake, because a WebSocket library refuses to send invalid UTF-8 as text (and would
//! answer the server's close frames for us). One server serves every case.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use crate::common::raw::{CONTINUATION, TEXT, encode, raw_connect, read_frame};
use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use tidings_server::Config;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Small, so that an oversized frame is cheap to generate and send.
const MAX_MESSAGE: usize = 4096;
/// The topic the well-behaved client is subscribed to.
const TOPIC: &str = "list:1";
/// Cases run against the one server: enough variety, well under 30 s on a busy machine.
const CASES: u32 = 48;

/// One thing the misbehaving client sends.
#[derive(Debug, Clone)]
enum Frame {
    /// A text frame with valid UTF-8 (anything, or something close to a real message).
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A text frame whose payload is not UTF-8 (the server must close it with 1007).
    InvalidUtf8(Vec<u8>),
    /// A text frame larger than the server's message limit (close 1009).
    Oversized(usize),
    /// A Ping control frame (payload ≤ 125 bytes, as the RFC requires).
    Ping(Vec<u8>),
    /// An unsolicited Pong.
    Pong(Vec<u8>),
    /// A Close frame with an arbitrary code.
    Close(u16),
    /// A text frame split into two fragments (FIN unset, then a continuation).
    Fragmented(String, String),
    /// Bytes that are not a well-formed frame (bad opcode, reserved bits, unmasked, truncated).
    Raw(Vec<u8>),
}

fn json_ish() -> impl Strategy<Value = String> {
    let action = prop_oneof![
        Just("\"subscribe\"".to_owned()),
        Just("\"unsubscribe\"".to_owned()),
        Just("\"ping\"".to_owned()),
        Just("\"PING\"".to_owned()),
        Just("null".to_owned()),
        Just("7".to_owned()),
        "\"[a-z]{0,10}\"",
    ];
    let topic = prop_oneof![
        Just(format!("\"{TOPIC}\"")),
        "\"[a-z0-9:_*# .-]{0,20}\"",
        Just("\"\"".to_owned()),
        Just("null".to_owned()),
        Just("[1,{\"a\":[]}]".to_owned()),
        "\"x{250,260}\"",
        Just("\"\\u00e9\\ud800\"".to_owned()),
    ];
    let extra = prop_oneof![
        Just(String::new()),
        Just(",\"extra\":{\"deep\":[[[[]]]]}".to_owned()),
        Just(",\"action\":\"ping\"".to_owned()),
    ];
    let cut = any::<prop::sample::Index>();
    (action, topic, extra, cut, any::<bool>()).prop_map(|(action, topic, extra, cut, truncate)| {
        let text = format!("{{\"action\":{action},\"topic\":{topic}{extra}}}");
        if truncate {
            // Cut at a char boundary: valid UTF-8, broken JSON.
            let mut at = cut.index(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text[..at].to_owned()
        } else {
            text
        }
    })
}

fn frame() -> impl Strategy<Value = Frame> {
    let bytes = |max: usize| prop::collection::vec(any::<u8>(), 0..max);
    prop_oneof![
        3 => json_ish().prop_map(Frame::Text),
        2 => any::<String>().prop_map(Frame::Text),
        1 => "[{}\\[\\]\":,a-z0-9 ]{0,64}".prop_map(Frame::Text),
        1 => bytes(256).prop_map(Frame::Binary),
        // A lone 0xFF is never valid UTF-8, wherever it sits.
        1 => (bytes(64), bytes(64)).prop_map(|(mut a, b)| { a.push(0xFF); a.extend(b); Frame::InvalidUtf8(a) }),
        1 => (MAX_MESSAGE + 1..4 * MAX_MESSAGE).prop_map(Frame::Oversized),
        2 => bytes(126).prop_map(Frame::Ping),
        1 => bytes(126).prop_map(Frame::Pong),
        1 => any::<u16>().prop_map(Frame::Close),
        1 => (json_ish(), json_ish()).prop_map(|(a, b)| Frame::Fragmented(a, b)),
        1 => bytes(32).prop_map(Frame::Raw),
    ]
}

fn wire(frame: &Frame) -> Vec<u8> {
    const BINARY: u8 = 0x2;
    match frame {
        Frame::Text(text) => encode(true, TEXT, text.as_bytes()),
        Frame::Binary(bytes) => encode(true, BINARY, bytes),
        Frame::InvalidUtf8(bytes) => encode(true, TEXT, bytes),
        Frame::Oversized(len) => encode(true, TEXT, &vec![b'x'; *len]),
        Frame::Ping(bytes) => encode(true, 0x9, &bytes[..bytes.len().min(125)]),
        Frame::Pong(bytes) => encode(true, 0xA, &bytes[..bytes.len().min(125)]),
        Frame::Close(code) => encode(true, 0x8, &code.to_be_bytes()),
        Frame::Fragmented(a, b) => {
            let mut out = encode(false, TEXT, a.as_bytes());
            out.extend(encode(true, CONTINUATION, b.as_bytes()));
            out
        }
        Frame::Raw(bytes) => bytes.clone(),
    }
}

/// Reads frames until a text frame (returned), answering nothing; Pongs whose payload is
/// `want_pong` are recorded in `got_pong`.
async fn next_text(ws: &mut Ws, want_pong: &[u8], got_pong: &mut bool) -> String {
    loop {
        let msg = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("healthy client: nothing within the timeout")
            .expect("healthy client: stream ended")
            .expect("healthy client: read error");
        match msg {
            Message::Text(text) => return text.to_string(),
            Message::Pong(payload) if payload.as_ref() == want_pong => *got_pong = true,
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("healthy client got {other:?}"),
        }
    }
}

/// One server frame (see [`read_frame`]), within the timeout.
async fn read_raw_frame(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    tokio::time::timeout(TIMEOUT, read_frame(tcp))
        .await
        .expect("no frame within the timeout")
        .expect("read frame")
}

/// The hand-made frames are real WebSocket to the server (else the property below would only
/// ever test garbage): a raw text ping is answered, a raw binary frame gets the error reply,
/// a raw ping gets its pong, and a raw text frame that is not UTF-8 is closed with 1007.
#[tokio::test]
async fn hand_made_frames_are_understood() {
    let server = start_server_with(Config::new(SECRET).with_max_message_size(MAX_MESSAGE)).await;
    let mut raw = raw_connect(&server, "raw").await;
    raw.write_all(&wire(&Frame::Text(r#"{"action":"ping"}"#.into())))
        .await
        .expect("write");
    assert_eq!(
        read_raw_frame(&mut raw).await,
        (0x1, br#"{"action":"pong"}"#.to_vec())
    );
    raw.write_all(&wire(&Frame::Binary(vec![1, 2, 3])))
        .await
        .expect("write");
    let (opcode, reply) = read_raw_frame(&mut raw).await;
    assert_eq!(opcode, 0x1);
    assert!(
        String::from_utf8_lossy(&reply).contains("binary frames are not supported"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    raw.write_all(&wire(&Frame::Ping(b"hi".to_vec())))
        .await
        .expect("write");
    assert_eq!(read_raw_frame(&mut raw).await, (0xA, b"hi".to_vec()));
    raw.write_all(&wire(&Frame::InvalidUtf8(vec![b'{', 0xFF, b'}'])))
        .await
        .expect("write");
    let (opcode, close) = read_raw_frame(&mut raw).await;
    assert_eq!(opcode, 0x8);
    assert_eq!(close[..2], 1007u16.to_be_bytes());
    // And an oversized frame on a fresh connection is closed with 1009.
    let mut raw = raw_connect(&server, "raw").await;
    let _ = raw
        .write_all(&wire(&Frame::Oversized(MAX_MESSAGE + 1)))
        .await;
    let (opcode, close) = read_raw_frame(&mut raw).await;
    assert_eq!(opcode, 0x8);
    assert_eq!(close[..2], 1009u16.to_be_bytes());
}

/// The `seq` the server gave an event.
fn seq_of(text: &str) -> u64 {
    let value: serde_json::Value = serde_json::from_str(text).expect("event JSON");
    value["seq"].as_u64().expect("event seq")
}

/// Panics on any thread of this test process (the server's tasks included) are recorded:
/// tokio would otherwise swallow a panicking connection task.
fn record_panics() -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hook_seen = seen.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        hook_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("thread {thread}: {info}"));
        default_hook(info);
    }));
    seen
}

/// Everything one case checks, given the frames the misbehaving client sends.
async fn run_case(
    server: &TestServer,
    healthy: &mut Ws,
    last_seq: &mut u64,
    case: u64,
    frames: &[Frame],
) -> Result<(), TestCaseError> {
    // The misbehaving client; a write error only means the server already closed it.
    let mut raw = raw_connect(server, &format!("fuzzer-{case}")).await;
    for frame in frames {
        if raw.write_all(&wire(frame)).await.is_err() {
            break;
        }
    }
    // Half-way: an event published while the bad connection may still be open.
    let entity = (2 * case).to_string();
    let delivered = server.tidings.hub().publish(event(TOPIC, &entity));
    prop_assert!(delivered >= 1, "the healthy subscriber was not counted");
    let mut pong = false;
    let received = next_text(healthy, b"", &mut pong).await;
    prop_assert_eq!(strip_position(&received), event_text(TOPIC, &entity));
    // Numbered one after the previous one: nothing was lost or reordered in between.
    prop_assert_eq!(seq_of(&received), *last_seq + 1);
    *last_seq += 1;
    drop(raw);

    // The healthy client's pings, both kinds, are answered.
    let ping = format!("hb-{case}").into_bytes();
    healthy
        .send(Message::Ping(ping.clone().into()))
        .await
        .expect("healthy ping");
    send(healthy, r#"{"action":"ping"}"#).await;
    prop_assert_eq!(
        next_text(healthy, &ping, &mut pong).await,
        r#"{"action":"pong"}"#
    );
    // The Pong may come after the reply: wait for it behind a second reply.
    send(healthy, r#"{"action":"ping"}"#).await;
    prop_assert_eq!(
        next_text(healthy, &ping, &mut pong).await,
        r#"{"action":"pong"}"#
    );
    prop_assert!(pong, "the healthy client's WebSocket ping was not answered");

    // Every published event still arrives, also after the bad connection is gone.
    let entity = (2 * case + 1).to_string();
    server.tidings.hub().publish(event(TOPIC, &entity));
    let received = next_text(healthy, b"", &mut pong).await;
    prop_assert_eq!(strip_position(&received), event_text(TOPIC, &entity));
    prop_assert_eq!(seq_of(&received), *last_seq + 1);
    *last_seq += 1;

    // And a new connection is accepted and served.
    let mut fresh = server.client().await;
    roundtrip(&mut fresh, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
    let _ = fresh.close(None).await;
    prop_assert!(!server.handle.is_finished(), "the server stopped");
    Ok(())
}

#[test]
fn no_frame_sequence_disturbs_other_connections() {
    let panics = record_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let config = Config::new(SECRET).with_max_message_size(MAX_MESSAGE);
    let server = runtime.block_on(start_server_with(config));
    let healthy = runtime.block_on(async {
        let mut ws = server.client().await;
        subscribe(&mut ws, TOPIC).await;
        ws
    });
    let healthy = RefCell::new(healthy);
    let case = RefCell::new(0u64);
    let last_seq = RefCell::new(0u64);

    let mut runner = TestRunner::new(ProptestConfig {
        cases: CASES,
        // No regression files from a test that runs against a live server.
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&prop::collection::vec(frame(), 1..12), |frames| {
        let n = {
            let mut case = case.borrow_mut();
            *case += 1;
            *case
        };
        runtime.block_on(run_case(
            &server,
            &mut healthy.borrow_mut(),
            &mut last_seq.borrow_mut(),
            n,
            &frames,
        ))?;
        let seen = panics.lock().unwrap_or_else(|e| e.into_inner());
        prop_assert!(seen.is_empty(), "panics: {:?}", *seen);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(*case.borrow() >= u64::from(CASES), "not every case ran");
    let seen = panics.lock().unwrap_or_else(|e| e.into_inner());
    assert!(seen.is_empty(), "the server panicked: {seen:?}");
}
