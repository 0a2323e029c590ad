//! The inbound byte budget of an upgraded WebSocket connection.
//!
//! The message rate limit ([`rate`](crate::rate)) counts complete messages, and tungstenite
//! hands over nothing else: an endless run of empty non-final continuation frames never
//! completes a message, so it escaped every limit and one connection could keep a core busy
//! parsing frames. This module meters what every frame is made of, the bytes read from the
//! socket. [`serve`](crate::serve) wraps every accepted socket in a [`Metered`] stream that
//! passes HTTP traffic through untouched and starts metering once `/ws` upgrades the
//! connection (the handler flips the [`UpgradeMeter`] switch it finds in the request's
//! extensions). Bytes need no frame parsing, so a client cannot dodge the count by
//! misaligning frames; and since the smallest masked client frame is 6 bytes, a byte rate also
//! bounds the frames per second, hence the CPU one connection can cost.
//!
//! The budget is a token bucket of bytes ([`Config::with_inbound_byte_rate`] and
//! [`Config::with_inbound_byte_burst`]). While it is empty the connection is not read
//! (the client's data waits in the kernel, and TCP flow control slows the client down): this
//! throttles without dropping anything. A connection that keeps the server holding back data
//! it has already sent for more than half of the
//! [rate-violation window](crate::Config::with_rate_violation_window) (5 s of every 10 s by
//! default) is flooding: its next read fails with [`InboundFlood`], and the connection is
//! closed with 1008 (policy violation), like a message flood.
//!
//! [`Config::with_inbound_byte_rate`]: crate::Config::with_inbound_byte_rate
//! [`Config::with_inbound_byte_burst`]: crate::Config::with_inbound_byte_burst

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep, sleep_until};

/// A throttled connection is woken at most this often: the bucket must hold this much
/// budget's worth of time before reading resumes, so waits are few and each read is useful.
const RESUME_AFTER: Duration = Duration::from_millis(10);

/// The byte-budget settings (from [`Config`](crate::Config)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ByteBudgetSettings {
    /// Bytes added to the bucket per second.
    pub(crate) per_second: f64,
    /// Most bytes the bucket holds (and holds at the start).
    pub(crate) burst: f64,
    /// The window throttled time is counted in.
    pub(crate) window: Duration,
    /// Throttled time within one window that marks the connection as flooding.
    pub(crate) max_throttled: Duration,
}

impl ByteBudgetSettings {
    /// How many bytes the bucket must hold before a throttled connection is read again.
    fn resume_level(&self) -> f64 {
        (self.per_second * RESUME_AFTER.as_secs_f64()).clamp(1.0, self.burst.max(1.0))
    }
}

/// One connection's byte bucket: plain data, decides only (see the module docs).
#[derive(Debug)]
pub(crate) struct ByteBudget {
    /// May go below zero: a read takes what the socket has (at most the caller's buffer), and
    /// the debt is paid back by waiting before the next read.
    tokens: f64,
    refilled: Instant,
    window_start: Instant,
    /// Time this window that the server held back data the client had already sent.
    throttled: Duration,
}

impl ByteBudget {
    pub(crate) fn new(settings: &ByteBudgetSettings, now: Instant) -> Self {
        Self {
            tokens: settings.burst,
            refilled: now,
            window_start: now,
            throttled: Duration::ZERO,
        }
    }

    fn refill(&mut self, settings: &ByteBudgetSettings, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * settings.per_second).min(settings.burst);
        self.refilled = now;
    }

    /// `None` when the connection may be read now; otherwise the instant to read again.
    pub(crate) fn wait_until(
        &mut self,
        settings: &ByteBudgetSettings,
        now: Instant,
    ) -> Option<Instant> {
        self.refill(settings, now);
        if self.tokens > 0.0 {
            return None;
        }
        let missing = settings.resume_level() - self.tokens;
        Some(now + Duration::from_secs_f64(missing / settings.per_second))
    }

    /// Accounts for `n` bytes read.
    pub(crate) fn consumed(&mut self, n: usize) {
        self.tokens -= n as f64;
    }

    /// Accounts for a wait that held back data the client had already sent (the read after it
    /// returned bytes); returns whether the connection is flooding.
    pub(crate) fn held_back(
        &mut self,
        settings: &ByteBudgetSettings,
        waited: Duration,
        now: Instant,
    ) -> bool {
        if now.saturating_duration_since(self.window_start) > settings.window {
            self.window_start = now;
            self.throttled = Duration::ZERO;
        }
        self.throttled += waited;
        self.throttled >= settings.max_throttled
    }
}

/// The error a flooding connection's reads fail with; [`is_flood`] recognizes it so that the
/// connection is closed with 1008.
#[derive(Debug, thiserror::Error)]
#[error("the client kept sending faster than the inbound byte budget")]
pub(crate) struct InboundFlood;

/// Whether `error` is the [`InboundFlood`] of a metered stream.
pub(crate) fn is_flood(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<InboundFlood>())
}

/// The switch that turns metering on for one TCP connection, put into every request's
/// extensions by [`serve`](crate::serve); the `/ws` handler flips it when it upgrades.
#[derive(Debug, Clone)]
pub(crate) struct UpgradeMeter(Arc<Switch>);

#[derive(Debug)]
struct Switch {
    on: AtomicBool,
    /// The connection went over its budget for too long: every read fails from now on.
    /// Here rather than in [`Throttle`], where it would take that box into the allocator's
    /// next size class.
    flooding: AtomicBool,
    /// Shared by every connection of a server: a pointer here, not a copy (this lives as
    /// long as the connection).
    settings: Arc<ByteBudgetSettings>,
}

impl UpgradeMeter {
    /// Meters every read from now on (the response to this request is the last HTTP on the
    /// connection).
    pub(crate) fn activate(&self) {
        self.0.on.store(true, Ordering::Relaxed);
    }
}

/// A socket whose reads are metered once its [`UpgradeMeter`] is switched on.
#[derive(Debug)]
pub(crate) struct Metered<S> {
    inner: S,
    switch: Arc<Switch>,
    /// Created at activation: HTTP connections that never upgrade carry only the switch.
    state: Option<Box<Throttle>>,
}

#[derive(Debug)]
struct Throttle {
    budget: ByteBudget,
    /// The timer of the waits, created at the first one and reset for each later one.
    timer: Option<Pin<Box<Sleep>>>,
    /// When the wait in progress started.
    waiting: Option<Instant>,
    /// The wait that just ended, if its read has not returned yet.
    waited_since: Option<Instant>,
}

impl<S> Metered<S> {
    /// Wraps `inner`; metering starts when the returned switch is activated.
    pub(crate) fn new(inner: S, settings: Arc<ByteBudgetSettings>) -> (Self, UpgradeMeter) {
        let switch = Arc::new(Switch {
            on: AtomicBool::new(false),
            flooding: AtomicBool::new(false),
            settings,
        });
        let meter = UpgradeMeter(switch.clone());
        (
            Self {
                inner,
                switch,
                state: None,
            },
            meter,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.state.is_none() {
            if !this.switch.on.load(Ordering::Relaxed) {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            this.state = Some(Box::new(Throttle {
                budget: ByteBudget::new(&this.switch.settings, Instant::now()),
                timer: None,
                waiting: None,
                waited_since: None,
            }));
        }
        let Some(state) = this.state.as_deref_mut() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        let settings = &this.switch.settings;
        if this.switch.flooding.load(Ordering::Relaxed) {
            return Poll::Ready(Err(io::Error::other(InboundFlood)));
        }
        loop {
            if let (Some(_), Some(timer)) = (state.waiting, state.timer.as_mut()) {
                ready!(timer.as_mut().poll(cx));
                state.waited_since = state.waiting.take();
            }
            let now = Instant::now();
            let Some(until) = state.budget.wait_until(settings, now) else {
                break;
            };
            // A wait that needs another one goes on counting from its start.
            state.waiting = Some(state.waited_since.take().unwrap_or(now));
            match &mut state.timer {
                Some(timer) => timer.as_mut().reset(until),
                None => state.timer = Some(Box::pin(sleep_until(until))),
            }
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        // A wait only counts when the client had data waiting; if it has none, the time
        // until it sends more is its own.
        let waited_since = state.waited_since.take();
        let Poll::Ready(result) = poll else {
            return Poll::Pending;
        };
        let n = buf.filled().len() - before;
        state.budget.consumed(n);
        if let Some(since) = waited_since {
            let now = Instant::now();
            if n > 0 && state.budget.held_back(settings, now - since, now) {
                tracing::debug!("closing a connection that floods the inbound byte budget");
                this.switch.flooding.store(true, Ordering::Relaxed);
            }
        }
        Poll::Ready(result)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ByteBudgetSettings {
        ByteBudgetSettings {
            per_second: 1000.0,
            burst: 100.0,
            window: Duration::from_secs(10),
            max_throttled: Duration::from_secs(5),
        }
    }

    /// Every upgraded connection keeps its boxed `Throttle`: the allocator's 96-byte class.
    #[test]
    fn the_throttle_stays_small() {
        assert!(std::mem::size_of::<Throttle>() <= 96);
    }

    #[test]
    fn burst_then_debt_then_paced_reads() {
        let s = settings();
        let t0 = Instant::now();
        let mut b = ByteBudget::new(&s, t0);
        assert_eq!(b.wait_until(&s, t0), None);
        // A read may take more than the bucket holds; the debt is waited off.
        b.consumed(150);
        let until = b.wait_until(&s, t0).expect("must wait");
        // 50 bytes of debt plus 10 ms worth (10 bytes) at 1000 bytes/s: 60 ms.
        assert_eq!(until - t0, Duration::from_millis(60));
        assert_eq!(b.wait_until(&s, until), None);
    }

    #[test]
    fn held_back_time_marks_a_flood_within_a_window() {
        let s = settings();
        let t0 = Instant::now();
        let mut b = ByteBudget::new(&s, t0);
        assert!(!b.held_back(&s, Duration::from_secs(3), t0 + Duration::from_secs(3)));
        assert!(b.held_back(&s, Duration::from_secs(2), t0 + Duration::from_secs(5)));
        // A new window starts from zero.
        let mut b = ByteBudget::new(&s, t0);
        assert!(!b.held_back(&s, Duration::from_secs(4), t0 + Duration::from_secs(4)));
        assert!(!b.held_back(&s, Duration::from_secs(4), t0 + Duration::from_secs(15)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_metered_stream_passes_http_and_paces_after_activation() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(1 << 20);
        let (mut metered, meter) = Metered::new(server, Arc::new(settings()));
        let (mut client_read, mut client_write) = tokio::io::split(client);
        client_write.write_all(&[0u8; 500]).await.unwrap();
        let mut buf = vec![0u8; 4096];
        // Not activated: everything at once.
        assert_eq!(metered.read(&mut buf).await.unwrap(), 500);
        meter.activate();
        client_write.write_all(&[0u8; 5000]).await.unwrap();
        let start = Instant::now();
        let mut total = 0;
        while total < 5000 {
            match metered.read(&mut buf[..100]).await {
                Ok(n) => total += n,
                Err(e) => panic!("{e}"),
            }
        }
        // 100 bytes of burst, then 1000 bytes/s (the last read may run up to 100 bytes of
        // debt). Virtual time: exact, not a timing assertion.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(4800), "{took:?}");
        assert!(took <= Duration::from_millis(5000), "{took:?}");
        // Writes are not metered.
        metered.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        client_read.read_exact(&mut one).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_sustained_flood_fails_the_reads() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let (mut metered, meter) = Metered::new(server, Arc::new(settings()));
        meter.activate();
        client.write_all(&vec![0u8; 20_000]).await.unwrap();
        let start = Instant::now();
        let mut buf = vec![0u8; 100];
        let error = loop {
            match metered.read(&mut buf).await {
                Ok(n) => assert!(n > 0),
                Err(e) => break e,
            }
        };
        assert!(is_flood(&error), "{error}");
        // After about 5 s held back (at 1000 bytes/s the data would take 20 s to read).
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "{:?}",
            start.elapsed()
        );
    }
}
