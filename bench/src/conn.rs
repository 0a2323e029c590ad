//! Opening benchmark WebSocket connections: TCP from a chosen loopback source address, the
//! `/ws?token=` handshake, one `subscribe` and its `subscribed` ack.
//!
//! One source address can open at most one connection per ephemeral port (28,232 with the
//! default `ip_local_port_range`) to the same server port, so past [`SourceAddrs::per_addr`]
//! connections a client binds its socket to `127.0.0.2`, `127.0.0.3`, … before connecting
//! (the whole `127.0.0.0/8` is loopback on Linux). Connections below the threshold connect
//! unbound, which lets the kernel reuse loopback TIME_WAIT ports (`tcp_tw_reuse = 2`).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use tidings_protocol::{ServerMessage, Topic, WSClientMessage, WSReply};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A benchmark client's WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// How long a handshake or an ack may take before the connection counts as failed.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Read buffer of each client socket. tungstenite allocates it eagerly (128 KiB by default),
/// which for 19,000 connections would be 2.4 GiB of client memory for ~200-byte events.
const CLIENT_READ_BUFFER: usize = 4 * 1024;

/// Spreads connections over loopback source addresses.
#[derive(Debug, Clone, Copy)]
pub struct SourceAddrs {
    /// Connections per source address (below the ephemeral port count).
    pub per_addr: usize,
}

impl SourceAddrs {
    /// The source address for connection `n`: `None` (unbound, 127.0.0.1) for the first
    /// `per_addr`, then `127.0.0.2`, `127.0.0.3`, …
    ///
    /// # Errors
    /// When `n` would need an address past `127.0.0.254`.
    pub fn for_conn(&self, n: usize) -> Result<Option<Ipv4Addr>> {
        let slot = n / self.per_addr.max(1);
        if slot == 0 {
            return Ok(None);
        }
        let last = u8::try_from(slot + 1)
            .ok()
            .filter(|o| *o < 255)
            .context("more connections than 254 source addresses can carry")?;
        Ok(Some(Ipv4Addr::new(127, 0, 0, last)))
    }
}

/// Connects to `server`'s `/ws` with `token`, from `source` if given.
///
/// # Errors
/// Connection, handshake or timeout errors.
pub async fn connect(server: SocketAddr, token: &str, source: Option<Ipv4Addr>) -> Result<Ws> {
    let socket = TcpSocket::new_v4().context("creating a socket")?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip.into(), 0))
            .with_context(|| format!("binding to source address {ip}"))?;
    }
    let step = async {
        let stream = socket.connect(server).await.context("TCP connect")?;
        stream.set_nodelay(true)?;
        let request = format!("ws://{server}/ws?token={token}")
            .into_client_request()
            .context("building the upgrade request")?;
        let config = WebSocketConfig::default()
            .read_buffer_size(CLIENT_READ_BUFFER)
            .write_buffer_size(0);
        let (ws, _response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .context("WebSocket handshake")?;
        anyhow::Ok(ws)
    };
    tokio::time::timeout(STEP_TIMEOUT, step)
        .await
        .context("connect timed out")?
}

/// Sends `subscribe` for `topic` and waits for its `subscribed` ack.
///
/// # Errors
/// An error reply, a close, or no ack within [`STEP_TIMEOUT`].
pub async fn subscribe(ws: &mut Ws, topic: &Topic) -> Result<()> {
    let text = serde_json::to_string(&WSClientMessage::Subscribe {
        topic: topic.clone(),
        since: None,
        position: false,
        presence: None,
    })?;
    ws.send(Message::text(text))
        .await
        .context("sending subscribe")?;
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => match ServerMessage::parse(&text) {
                    Ok(ServerMessage::Reply(WSReply::Subscribed { topic: t, .. }))
                        if &t == topic =>
                    {
                        return Ok(());
                    }
                    Ok(ServerMessage::Error(e)) => bail!("subscribe refused: {}", e.error),
                    // Anything else (an early event) is not the ack: keep waiting.
                    Ok(_) => {}
                    Err(e) => bail!("unparseable server message {text:?}: {e}"),
                },
                Some(Ok(Message::Close(frame))) => bail!("closed before the ack: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("reading the ack: {e}"),
                None => bail!("connection ended before the ack"),
            }
        }
    };
    tokio::time::timeout(STEP_TIMEOUT, wait)
        .await
        .context("no subscribe ack in time")?
}

/// Closes with 1000 and waits (bounded) for the server's close and end of stream.
pub async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(STEP_TIMEOUT, async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_spreading() {
        let s = SourceAddrs { per_addr: 10 };
        assert_eq!(s.for_conn(0).unwrap(), None);
        assert_eq!(s.for_conn(9).unwrap(), None);
        assert_eq!(s.for_conn(10).unwrap(), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(s.for_conn(25).unwrap(), Some(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(
            s.for_conn(2539).unwrap(),
            Some(Ipv4Addr::new(127, 0, 0, 254))
        );
        assert!(s.for_conn(2540).is_err());
    }
}
