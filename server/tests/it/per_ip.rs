//! Issue 14: limits per client address on `/ws` (HTTP 429 before the upgrade), trusted
//! proxies' forwarding headers, and the binary's connection cap from the open-file limit.

use std::time::Duration;

use crate::common::*;
use tidings_server::Config;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error, Message};

/// Tries a handshake with extra headers; the HTTP status of a refusal, or the socket.
async fn try_connect(url: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    match tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake timed out")
    {
        Ok((ws, _)) => Ok(ws),
        Err(Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

async fn ping(ws: &mut Ws) {
    roundtrip(ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
}

#[tokio::test]
async fn over_the_per_ip_limit_gets_429_and_the_others_stay() {
    let server = start_server_with(Config::new(SECRET).with_max_connections_per_ip(3)).await;
    let url = server.ws_url(&mint_token("42"));
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut ws = try_connect(&url, &[]).await.unwrap();
        subscribe(&mut ws, "list:1").await;
        open.push(ws);
    }
    assert_eq!(try_connect(&url, &[]).await.err(), Some(429));
    // A bad token is refused before the token is looked at, too.
    assert_eq!(
        try_connect(&server.ws_url("bad"), &[]).await.err(),
        Some(429)
    );
    let metrics = reqwest::get(server.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("\ntidings_handshakes_refused_total 2\n"),
        "{metrics}"
    );
    // The open connections are unaffected: they still get events and answer pings.
    assert_eq!(server.publish_http(&event_json("list:1", "1")).await, 3);
    for ws in &mut open {
        assert!(recv_text(ws).await.contains(r#""entity_id":"1""#));
        ping(ws).await;
    }
    // Closing one frees its slot.
    let mut first = open.remove(0);
    first.close(None).await.unwrap();
    while next_frame_or_end(&mut first).await {}
    assert!(
        eventually(|| {
            let url = url.clone();
            async move {
                match try_connect(&url, &[]).await {
                    Ok(mut ws) => {
                        ping(&mut ws).await;
                        true
                    }
                    Err(_) => false,
                }
            }
        })
        .await
    );
}

/// Reads one frame; false once the stream has ended (used to wait for a close to complete).
async fn next_frame_or_end(ws: &mut Ws) -> bool {
    use futures_util::StreamExt;
    matches!(
        tokio::time::timeout(TIMEOUT, ws.next()).await,
        Ok(Some(Ok(_)))
    )
}

#[tokio::test]
async fn unauthenticated_sockets_count_until_closed() {
    // One socket per address; a refused client that never answers the 4001 close keeps its
    // slot until the close timeout drops it.
    let server = start_server_with(
        Config::new(SECRET)
            .with_max_connections_per_ip(1)
            .with_close_timeout(Duration::from_secs(2)),
    )
    .await;
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(
        format!(
            "GET /ws?token=bad HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut reader = BufReader::new(&mut raw);
    let mut status = String::new();
    reader.read_line(&mut status).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    // The silent socket holds the address's only slot.
    let url = server.ws_url(&mint_token("42"));
    assert_eq!(try_connect(&url, &[]).await.err(), Some(429));
    // After the close timeout the server drops it and the slot is free again.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, raw.read_to_end(&mut rest)).await;
    assert!(
        eventually(|| {
            let url = url.clone();
            async move { try_connect(&url, &[]).await.is_ok() }
        })
        .await
    );
}

#[tokio::test]
async fn handshakes_per_second_are_limited() {
    let server = start_server_with(Config::new(SECRET).with_handshake_rate_per_ip(2, 4)).await;
    let url = server.ws_url(&mint_token("42"));
    for _ in 0..4 {
        let mut ws = try_connect(&url, &[]).await.unwrap();
        ws.close(None).await.unwrap();
    }
    assert_eq!(try_connect(&url, &[]).await.err(), Some(429));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut ws = try_connect(&url, &[]).await.unwrap();
    ping(&mut ws).await;
}

#[tokio::test]
async fn a_trusted_proxy_forwarded_address_is_the_client() {
    let server = start_server_with(
        Config::new(SECRET)
            .with_max_connections_per_ip(1)
            .with_trusted_proxies(["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]),
    )
    .await;
    let url = server.ws_url(&mint_token("42"));
    // Two clients behind the proxy: one slot each.
    let _a = try_connect(&url, &[("x-forwarded-for", "198.51.100.1")])
        .await
        .unwrap();
    // A client-supplied address left of the real one is not believed: the right-most
    // untrusted address counts.
    let _b = try_connect(&url, &[("x-forwarded-for", "198.51.100.1, 198.51.100.2")])
        .await
        .unwrap();
    assert_eq!(
        try_connect(&url, &[("x-forwarded-for", "198.51.100.2")])
            .await
            .err(),
        Some(429)
    );
    assert_eq!(
        try_connect(&url, &[("forwarded", "for=198.51.100.1;proto=http")])
            .await
            .err(),
        Some(429)
    );
    let _c = try_connect(&url, &[("forwarded", r#"for="[2001:db8::1]:4711""#)])
        .await
        .unwrap();
    // The proxy's own address is a third client.
    let _d = try_connect(&url, &[]).await.unwrap();
}

#[tokio::test]
async fn an_untrusted_peer_forwarding_headers_are_ignored() {
    let server = start_server_with(
        Config::new(SECRET)
            .with_max_connections_per_ip(1)
            .with_trusted_proxies(["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap()]),
    )
    .await;
    let url = server.ws_url(&mint_token("42"));
    let mut a = try_connect(&url, &[("x-forwarded-for", "198.51.100.1")])
        .await
        .unwrap();
    for header in [
        ("x-forwarded-for", "198.51.100.2"),
        ("forwarded", "for=198.51.100.3"),
    ] {
        assert_eq!(try_connect(&url, &[header]).await.err(), Some(429));
    }
    ping(&mut a).await;
}

/// The binary under `ulimit -n 256` lowers its connection cap, says so at startup, and
/// closes connections beyond it with 4005.
#[tokio::test]
async fn the_binary_caps_connections_by_the_open_file_limit() {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 256 && exec {} --log-format json",
            env!("CARGO_BIN_EXE_tidings")
        ))
        .env("JWT_SECRET", SECRET)
        .env("BIND", "127.0.0.1:0")
        .env_remove("MAX_CONNECTIONS")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(TIMEOUT, stdout.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr = line
        .strip_prefix("tidings listening on http://")
        .unwrap()
        .to_owned();
    // The startup line names the limit and the cap: 256 minus a reserve of 32.
    let mut cap_line = None;
    while let Ok(Ok(Some(line))) = tokio::time::timeout(TIMEOUT, stderr.next_line()).await {
        if line.contains("max connections lowered") {
            cap_line = Some(line);
            break;
        }
    }
    let cap_line = cap_line.expect("no startup line about the open-file limit");
    let log: serde_json::Value = serde_json::from_str(&cap_line).unwrap();
    assert_eq!(log["fields"]["open_file_limit"], 256, "{cap_line}");
    assert_eq!(log["fields"]["max_connections"], 224, "{cap_line}");
    assert_eq!(log["fields"]["configured"], 100_000, "{cap_line}");

    let url = format!("ws://{addr}/ws?token={}", mint_token("42"));
    let mut open = Vec::new();
    for i in 0..224 {
        // Distinct users: the per-user limit (100) is not what is tested.
        let url = format!("ws://{addr}/ws?token={}", mint_token(&format!("u{i}")));
        open.push(connect(&url).await);
    }
    ping(open.last_mut().unwrap()).await;
    let mut over = connect(&url).await;
    match next_frame(&mut over).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4005),
        other => panic!("expected close 4005, got {other:?}"),
    }
    // The connections within the cap still work.
    ping(&mut open[0]).await;
    child.kill().await.unwrap();
}
