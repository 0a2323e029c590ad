//! The `GET /ws` upgrade handler. The token comes in the `tidings.token.<JWT>` subprotocol
//! (see [`tidings_protocol::handshake`]; the server echoes only the `tidings` marker) or, as
//! in the seed, in `?token=<JWT>`.
//!
//! As in the seed, a bad token does not fail the HTTP request: the WebSocket handshake
//! completes, then the server sends a close frame with 4001 "Unauthorized" and no data frame
//! before it. The token is checked before the upgrade (it is cheap and keeps the upgraded task
//! small). An authenticated connection over the total or per-user connection limit is likewise
//! upgraded and then closed with 4005 "too many connections". The socket's buffers are sized
//! from [`Config`](crate::Config) for many mostly idle connections. During shutdown new
//! upgrades are refused with 503, and a browser `Origin` not on the configured allow-list with
//! 403 (see [`origin`](crate::origin)).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Extension;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt as _;
use futures_util::future::Either;
use tidings_protocol::{
    CONNECTION_ID_PARAM, CloseCode, MAX_CONNECTION_ID_LEN, handshake, is_valid_connection_id,
};
use tokio::time::timeout;

use crate::Tidings;
use crate::inbound::UpgradeMeter;
use crate::logging::Escaped;
use crate::{connection, ip, origin};

/// Handles `GET /ws`.
pub(crate) async fn upgrade(
    State(tidings): State<Tidings>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    meter: Option<Extension<UpgradeMeter>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ws: WebSocketUpgrade,
) -> Response {
    if tidings.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let allowed = tidings.config().allowed_origins.as_deref();
    if !origin::is_allowed(allowed, headers.get(header::ORIGIN)) {
        tracing::debug!(origin = ?headers.get(header::ORIGIN), "websocket origin refused");
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    // Per client address, before anything costly (the token check) and before the upgrade:
    // the socket, authenticated or not, holds its permit until it is closed. Only known
    // when the peer address is (`serve` provides it).
    let ip_permit = match peer {
        Some(Extension(ConnectInfo(peer))) => {
            let client = ip::client_ip(peer.ip(), &headers, &tidings.config().trusted_proxies);
            match tidings.ip_limits().admit(client) {
                Ok(permit) => Some(permit),
                Err(refused) => {
                    tidings.hub().metrics().handshake_refused();
                    tracing::debug!(%client, ?refused, "websocket handshake over the per-address limit");
                    return (
                        StatusCode::TOO_MANY_REQUESTS,
                        "too many connections from this address",
                    )
                        .into_response();
                }
            }
        }
        None => None,
    };
    // The client's connection id (`cid`), for publishers to exclude it from its own echo:
    // optional; a malformed one is refused before any token check.
    let connection_id = match query_param(query.as_deref().unwrap_or(""), CONNECTION_ID_PARAM) {
        None => None,
        Some(id) if is_valid_connection_id(&id) => Some(id),
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid {CONNECTION_ID_PARAM}: 1 to {MAX_CONNECTION_ID_LEN} of A-Z a-z 0-9 - _"
                ),
            )
                .into_response();
        }
    };
    // Checked before the upgrade. An admitted connection holds its connection-limit permit
    // until it ends; a refused one is upgraded only to be closed with its code.
    // The `tidings.token.` subprotocol (the browser client's default: the token stays out of
    // URLs) wins over `?token=` (seed clients). `ws`'s `Debug` prints the offered subprotocols,
    // token included: it is never logged.
    let offered = ws.requested_protocols().filter_map(|p| p.to_str().ok());
    let token = match handshake::token_from_subprotocols(offered) {
        Some(token) => Some(token.to_owned()),
        None => token_param(query.as_deref().unwrap_or("")),
    };
    let admission = match tidings.authenticate(token.as_deref().unwrap_or("")).await {
        Ok(claims) if tidings.is_revoked(&claims) => {
            tracing::debug!(user = %Escaped(&claims.sub), "websocket refused: revoked token");
            Err(CloseCode::Unauthorized)
        }
        Ok(claims) => match tidings.limits().acquire(&claims.sub) {
            Ok(permit) => {
                tracing::debug!(user = %Escaped(&claims.sub), "websocket accepted");
                Ok((permit, claims))
            }
            Err(limit) => {
                tracing::debug!(user = %Escaped(&claims.sub), ?limit, "websocket over the connection limit");
                Err(CloseCode::TooManyConnections)
            }
        },
        Err(e) => {
            // The error names what was wrong (expired, bad signature, …), never the token.
            tracing::debug!(reason = %Escaped(&e), "websocket refused");
            Err(CloseCode::Unauthorized)
        }
    };
    drop(token);
    let config = tidings.config();
    // Echo only the marker, and only when it was offered: a browser fails a handshake whose
    // answer names a subprotocol it did not offer.
    let ws = ws
        .protocols([handshake::SUBPROTOCOL])
        .read_buffer_size(config.buffers.read_buffer_size)
        .write_buffer_size(config.buffers.write_buffer_size)
        .max_write_buffer_size(
            config
                .buffers
                .max_write_buffer_size
                .max(config.buffers.write_buffer_size.saturating_add(1)),
        )
        .max_message_size(config.buffers.max_message_size)
        .max_frame_size(config.buffers.max_message_size);
    // From here on the connection's reads count against its inbound byte budget (when it is
    // served by `serve`, which provides the meter).
    if let Some(Extension(meter)) = meter {
        meter.activate();
    }
    ws.on_upgrade(move |socket| {
        match admission {
            Ok((permit, claims)) => {
                // The connection gets a task of its own, with nothing in it but the
                // connection (its permits are inside it): axum's upgrade task, which holds
                // this closure's captures and the upgrade's state next to whatever it awaits,
                // ends at once. Never wrap the connection in `async move { fut.await; … }`:
                // an async block that captures a future and awaits it keeps two slots of the
                // future's size, and this future lives as long as the connection.
                let permits = connection::Permits {
                    connection: permit,
                    ip: ip_permit,
                };
                connection::spawn(socket, &tidings, claims, connection_id, permits);
                Either::Left(std::future::ready(()))
            }
            Err(code) => {
                tidings.hub().metrics().closed(code);
                let close_timeout = tidings.config().close_timeout;
                Either::Right(tidings.tracker().track_future(
                    refuse(socket, code, close_timeout).map(move |()| drop(ip_permit)),
                ))
            }
        }
    })
}

/// Closes a freshly upgraded socket with `code` (4001 for a bad token, 4005 over a connection
/// limit), sending nothing before the close frame.
pub(crate) async fn refuse(mut socket: WebSocket, code: CloseCode, close_timeout: Duration) {
    let frame = CloseFrame {
        code: code.code(),
        reason: Utf8Bytes::from_static(code.reason()),
    };
    let sent = timeout(close_timeout, socket.send(Message::Close(Some(frame)))).await;
    if matches!(sent, Ok(Ok(()))) {
        // Wait for the client's close reply (bounded) so the close handshake completes.
        connection::await_close_reply(&mut socket, close_timeout).await;
    }
}

/// The value of the first `token` parameter of a query string, percent-decoded.
fn token_param(query: &str) -> Option<String> {
    query_param(query, handshake::TOKEN_QUERY_PARAM)
}

/// The value of the first `name` parameter of a query string, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

/// Decodes `%XX` escapes and `+` (a space in query strings); invalid escapes stay as they are
/// (the token check then refuses the result).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_from_query() {
        assert_eq!(token_param("token=a.b.c"), Some("a.b.c".into()));
        assert_eq!(token_param("x=1&token=a%2Eb&token=z"), Some("a.b".into()));
        assert_eq!(token_param("token"), Some(String::new()));
        assert_eq!(token_param("tokens=1"), None);
        assert_eq!(token_param(""), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("a%41"), "aA");
    }
}
