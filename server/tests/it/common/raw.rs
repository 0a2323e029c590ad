//! A WebSocket client written by hand over a `TcpStream`, for what a well-behaved client
//! library refuses to send (endless fragmented messages, frames at any speed).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{TIMEOUT, TestServer, mint_token};

/// Opcode of a continuation frame.
pub const CONTINUATION: u8 = 0x0;
/// Opcode of a text frame.
pub const TEXT: u8 = 0x1;
/// Opcode of a close frame.
pub const CLOSE: u8 = 0x8;

/// One WebSocket frame as a client must send it: masked.
pub fn encode(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Opens a WebSocket for user `sub` by hand; returns the stream positioned after the 101.
pub async fn raw_connect(server: &TestServer, sub: &str) -> TcpStream {
    raw_connect_with_token(server, &mint_token(sub)).await
}

/// Opens a WebSocket with `token` by hand; returns the stream positioned after the 101.
pub async fn raw_connect_with_token(server: &TestServer, token: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(server.addr).await.expect("tcp connect");
    let request = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        token, server.addr
    );
    tcp.write_all(request.as_bytes())
        .await
        .expect("write handshake");
    // Byte by byte, so that no frame after the response is consumed.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(TIMEOUT, tcp.read(&mut byte))
            .await
            .expect("handshake response timed out")
            .expect("read handshake");
        assert_eq!(n, 1, "connection closed during the handshake");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "handshake: {head}");
    tcp
}

/// Reads one unfragmented server frame (servers do not mask): `(opcode, payload)`.
pub async fn read_frame<R: AsyncReadExt + Unpin>(tcp: &mut R) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).await?;
    let len = match head[1] & 0x7F {
        126 => usize::from(tcp.read_u16().await?),
        127 => usize::try_from(tcp.read_u64().await?).expect("frame length"),
        n => usize::from(n),
    };
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await?;
    Ok((head[0] & 0x0F, payload))
}

/// Reads server frames until a close frame and returns its code.
pub async fn read_close_code<R: AsyncReadExt + Unpin>(tcp: &mut R) -> u16 {
    loop {
        let (opcode, payload) = read_frame(tcp).await.expect("read a server frame");
        if opcode == CLOSE {
            assert!(payload.len() >= 2, "close frame without a code");
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}
