//! The accept loop: serving a router on a listener until shutdown, then draining.
//!
//! This drives hyper's HTTP/1.1 connections directly instead of `axum::serve`, for three
//! things the gateway needs: a header read timeout (a client that connects and never sends a
//! request is dropped instead of holding a socket forever), `TCP_NODELAY` on every accepted
//! socket (each batch a writer flushes leaves at once), and a per-connection graceful stop.
//! WebSockets run in their own tasks after the upgrade; [`Tidings`] tracks them, and the drain
//! waits for both kinds of connection under one deadline.
//!
//! Every accepted socket is wrapped in a [`Metered`] stream: reads pass through untouched
//! until `/ws` upgrades the connection, then the inbound byte budget applies (see
//! [`inbound`](crate::inbound)). The switch that turns it on travels to the handler in each
//! request's extensions.
//!
//! HTTP/2 is not offered: browsers open WebSockets over HTTP/1.1, and publishers are plain
//! HTTP/1.1 clients.

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::Router;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use socket2::TcpKeepalive;
use tokio::net::TcpListener;
use tokio::time::{Instant, timeout_at};
use tokio_util::task::TaskTracker;

use crate::inbound::Metered;
use crate::{ServeError, Tidings};

/// Seconds between TCP keepalive probes once a connection has been idle for
/// `Config::with_tcp_keepalive`.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered keepalive probes before the kernel drops the connection.
const KEEPALIVE_RETRIES: u32 = 3;

/// Serves `app` (which should include [`Tidings::router`]) on `listener` until `shutdown`
/// completes or [`Tidings::shutdown`] is called.
///
/// Then the listener is closed, every WebSocket gets close 1012, idle HTTP connections are
/// closed and requests in flight may finish; this returns once everything is done or the
/// configured drain timeout (`Config::with_drain_timeout`) has passed, whichever is first.
///
/// Every upgraded WebSocket's inbound bytes are metered (`Config::with_inbound_byte_rate`):
/// an app serving the router some other way does not get that bound.
///
/// # Errors
/// [`ServeError::Io`] if the listener fails for good (transient accept errors such as a
/// connection reset or running out of file descriptors are logged and retried).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tidings: Tidings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let token = tidings.shutdown_token().clone();
    let config = tidings.config();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(true);
    let keepalive = config.tcp_keepalive.map(|idle| {
        TcpKeepalive::new()
            .with_time(idle)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_RETRIES)
    });
    // Accepted sockets inherit these options from the listening socket (Linux and the BSDs),
    // which saves several system calls per connection; if the listener refuses them, every
    // accepted socket gets them instead.
    let listener_options_inherited =
        set_socket_options(&socket2::SockRef::from(&listener), keepalive.as_ref());
    let inbound = std::sync::Arc::new(config.inbound_byte_settings());
    let http_connections = TaskTracker::new();
    tokio::pin!(shutdown);

    loop {
        let (tcp, peer) = tokio::select! {
            // Stop accepting as soon as the shutdown starts, whoever started it.
            biased;
            () = &mut shutdown => break,
            () = token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) if is_resource_error(&e) => {
                    // Out of file descriptors or memory: retry after a pause rather than spin.
                    tracing::warn!(error = %e, "accept failed, retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => return Err(ServeError::Io(e)),
            },
        };
        if !listener_options_inherited {
            set_socket_options(&socket2::SockRef::from(&tcp), keepalive.as_ref());
        }
        let (tcp, meter) = Metered::new(tcp, inbound.clone());
        let router = TowerToHyperService::new(app.clone());
        let service = hyper::service::service_fn(move |mut request| {
            request.extensions_mut().insert(meter.clone());
            // The peer address, for the per-address limits of `/ws` (see `ip`).
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            router.call(request)
        });
        let connection = http
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        let token = token.clone();
        http_connections.spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = &mut connection => result,
                () = token.cancelled() => {
                    // Finish the request in flight (if any), then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection error");
            }
        });
    }
    drop(listener);
    tidings.shutdown();

    let deadline = Instant::now() + config.drain_timeout;
    http_connections.close();
    if timeout_at(deadline, http_connections.wait()).await.is_err() {
        tracing::warn!(
            open = http_connections.len(),
            "HTTP connections still open after the drain timeout"
        );
    }
    let websockets = tidings.tracker();
    websockets.close();
    if timeout_at(deadline, websockets.wait()).await.is_err() {
        tracing::warn!(
            open = websockets.len(),
            "WebSocket connections still open after the drain timeout"
        );
    }
    Ok(())
}

/// Sets `TCP_NODELAY` (each batch a writer flushes leaves at once) and TCP keepalive (the
/// kernel finds peers that vanished without a FIN or RST, whose connections would otherwise
/// stay forever); returns whether both were set.
fn set_socket_options(socket: &socket2::SockRef<'_>, keepalive: Option<&TcpKeepalive>) -> bool {
    let mut ok = true;
    if let Err(e) = socket.set_tcp_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        ok = false;
    }
    if let Some(keepalive) = keepalive {
        if let Err(e) = socket.set_tcp_keepalive(keepalive) {
            tracing::debug!(error = %e, "cannot set TCP keepalive");
            ok = false;
        }
    }
    ok
}

/// Errors about one incoming connection, not the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Errors that go away once resources are freed (EMFILE, ENFILE, ENOBUFS, ENOMEM).
fn is_resource_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12)) || e.kind() == io::ErrorKind::OutOfMemory
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `serve` sets the options once on the listener and relies on accepted sockets inheriting
    /// them; this checks that the platform does so.
    #[tokio::test]
    async fn accepted_sockets_inherit_the_listener_options() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let keepalive = TcpKeepalive::new()
            .with_time(Duration::from_secs(61))
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_RETRIES);
        assert!(set_socket_options(
            &socket2::SockRef::from(&listener),
            Some(&keepalive)
        ));
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let socket = socket2::SockRef::from(&accepted);
        assert!(accepted.nodelay().unwrap());
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            Duration::from_secs(61)
        );
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), KEEPALIVE_RETRIES);
    }
}
