//! Stopping the server: the process signals that start a shutdown.
//!
//! A shutdown is one [`CancellationToken`](tokio_util::sync::CancellationToken) inside
//! [`Tidings`](crate::Tidings): cancelling it (through
//! [`Tidings::shutdown`](crate::Tidings::shutdown)) makes every connection's writer send close
//! 1012 (service restart, so clients reconnect elsewhere), makes `/ws` refuse new upgrades
//! and makes [`serve`](crate::serve) stop accepting; `serve` then waits at most the
//! configured drain timeout for requests and sockets to finish.

/// Completes on Ctrl-C (SIGINT) or, on Unix, SIGTERM: the signals a process manager uses to
/// stop the server. Usable as the `shutdown` argument of [`serve`](crate::serve).
///
/// If a handler cannot be installed, that signal is simply not watched (and a warning is
/// logged); the other one still works.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot watch Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
