//! Graceful shutdown through the library: clients get close 1012, new connections are
//! refused, and `serve` returns within the bounded drain even if a client never answers.

use std::time::Duration;

use crate::common::*;
use tidings_server::Config;

#[tokio::test]
async fn clients_get_1012_and_serve_returns() {
    let mut server = start_server().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    subscribe(&mut a, "list:1").await;
    subscribe(&mut b, "list:2").await;
    server.trigger_shutdown();
    for ws in [&mut a, &mut b] {
        assert_eq!(recv_close(ws).await, (1012, "service restart".to_owned()));
    }
    drop((a, b));
    let served = tokio::time::timeout(TIMEOUT, &mut server.handle)
        .await
        .expect("serve did not return")
        .unwrap();
    served.unwrap();
    assert!(server.tidings.is_shutting_down());
    assert_eq!(server.tidings.hub().topic_count(), 0);
    // The listener is gone.
    let refused = tokio_tungstenite::connect_async(server.ws_url(&mint_token("1"))).await;
    assert!(refused.is_err());
}

#[tokio::test]
async fn tidings_shutdown_also_stops_serve() {
    let mut server = start_server().await;
    let mut ws = server.client().await;
    server.tidings.shutdown();
    assert_eq!(recv_close(&mut ws).await.0, 1012);
    // Upgrades are refused while draining.
    drop(ws);
    tokio::time::timeout(TIMEOUT, &mut server.handle)
        .await
        .expect("serve did not return")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_drain_is_bounded_when_a_client_never_answers() {
    let mut server = start_server_with(
        Config::new(SECRET)
            .with_close_timeout(Duration::from_millis(300))
            .with_drain_timeout(Duration::from_secs(2)),
    )
    .await;
    // This client completes the handshake and is then never read again, so it never answers
    // the server's close frame.
    let deaf = server.client().await;
    server.trigger_shutdown();
    tokio::time::timeout(TIMEOUT, &mut server.handle)
        .await
        .expect("serve did not return")
        .unwrap()
        .unwrap();
    drop(deaf);
}

/// Reads until EOF (or an error); panics if the server keeps the socket open too long.
async fn expect_eof(tcp: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(TIMEOUT, tcp.read(&mut buf))
            .await
            .expect("the server kept the connection open")
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn a_client_that_never_sends_a_request_is_dropped() {
    let server =
        start_server_with(Config::new(SECRET).with_header_read_timeout(Duration::from_millis(200)))
            .await;
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    expect_eof(&mut silent).await;
    // The server still serves everyone else.
    let mut ws = server.client().await;
    roundtrip(&mut ws, r#"{"action":"ping"}"#, r#"{"action":"pong"}"#).await;
}

#[tokio::test]
async fn idle_keep_alive_connections_do_not_hold_up_the_shutdown() {
    use tokio::io::AsyncWriteExt;
    let mut server = start_server().await;
    let mut idle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::io::AsyncReadExt::read(&mut idle, &mut buf)
        .await
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    server.trigger_shutdown();
    tokio::time::timeout(TIMEOUT, &mut server.handle)
        .await
        .expect("serve did not return")
        .unwrap()
        .unwrap();
    expect_eof(&mut idle).await;
}
