//! The per-connection outbound queue: the one ordered path from the server to a client.
//!
//! Replies from the connection's reader and events from any publisher go into the same
//! [`Outbox`], so a client sees them in the order they were queued (an event published before
//! a client's ping reaches it before the pong). Pushing never waits: when the queue is full
//! the connection is marked for closing with 4003 (slow consumer) and the push fails, so one
//! stalled client can never slow a broadcast down. The connection's single writer task takes
//! everything queued in one batch ([`Outbox::next_batch`]).
//!
//! The queue is bounded twice: by message count and by the bytes waiting (so a few huge
//! events cannot pile up megabytes behind a stalled reader either way).
//!
//! Memory matters here because most connections are idle: the queue starts without any
//! allocation and only grows while messages wait.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use axum::extract::ws::Utf8Bytes;
use tidings_protocol::CloseCode;
use tokio::sync::Notify;

use crate::audience::Peer;

/// Why a message could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The connection is closing or closed.
    Closed,
    /// The queue was full: the connection is now closing with 4003.
    Full,
}

/// A bounded, ordered queue of text frames for one connection (see the module docs).
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Wakes the writer: messages arrived or the connection must close.
    wake: Notify,
    /// Wakes the reader once the connection must close.
    closed: Notify,
    capacity: usize,
    /// Most bytes of text that may wait in the queue.
    max_bytes: usize,
    /// Who the connection is, for the audience of an event ([`crate::audience`]).
    peer: Peer,
    /// The connection subscribed with `position` or `since` at least once: it follows `seq`s,
    /// so an event it is left out of is replaced by a `skipped` frame rather than nothing.
    tracks_positions: AtomicBool,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Utf8Bytes>,
    /// Total length of the texts in `queue`.
    bytes: usize,
    /// The reader asked the writer to send a Ping frame.
    ping: bool,
    /// Set once: the code the writer closes the connection with.
    close: Option<CloseCode>,
}

/// Queued messages beyond this many leave their memory allocated only while they wait.
const RETAINED_CAPACITY: usize = 16;

impl Outbox {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                bytes: 0,
                ping: false,
                close: None,
            }),
            wake: Notify::new(),
            closed: Notify::new(),
            capacity,
            max_bytes: usize::MAX,
            peer: Peer::default(),
            tracks_positions: AtomicBool::new(false),
        }
    }

    /// Names the connection's user and client connection id (for event audiences).
    pub(crate) fn with_peer(mut self, peer: Peer) -> Self {
        self.peer = peer;
        self
    }

    pub(crate) fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The connection follows `seq`s from now on (see [`Outbox::tracks_positions`]).
    pub(crate) fn track_positions(&self) {
        self.tracks_positions.store(true, Ordering::Relaxed);
    }

    /// Whether the connection follows `seq`s: an event it is left out of becomes a `skipped`
    /// frame for it.
    pub(crate) fn tracks_positions(&self) -> bool {
        self.tracks_positions.load(Ordering::Relaxed)
    }

    /// Also bounds the queue by the bytes waiting: a push that would take them over `max`
    /// closes the connection with 4003, as a full queue does. A message arriving at an empty
    /// queue is always taken, so one event larger than `max` does not close a healthy
    /// connection.
    pub(crate) fn with_max_bytes(mut self, max: usize) -> Self {
        self.max_bytes = max;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The critical sections cannot panic halfway, so a poisoned lock still holds a
        // consistent queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many messages may wait at once.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether a replay of `count` messages totalling `bytes` may be queued now: together with
    /// what already waits it must stay within half of the queue's bounds (messages and bytes),
    /// so that the live events following it still fit. A recovery that does not fit is answered
    /// `recovered: false` (the client refetches) instead of overflowing the queue into a 4003
    /// that the client's next reconnect would repeat.
    pub(crate) fn replay_fits(&self, count: usize, bytes: usize) -> bool {
        let state = self.lock();
        state.queue.len().saturating_add(count) <= self.capacity / 2
            && state.bytes.saturating_add(bytes) <= self.max_bytes / 2
    }

    /// Queues `msg` without waiting (see [`PushError`]).
    pub(crate) fn push(&self, msg: Utf8Bytes) -> Result<(), PushError> {
        let mut state = self.lock();
        if state.close.is_some() {
            return Err(PushError::Closed);
        }
        let over_bytes =
            !state.queue.is_empty() && state.bytes.saturating_add(msg.len()) > self.max_bytes;
        if state.queue.len() >= self.capacity || over_bytes {
            state.close = Some(CloseCode::SlowConsumer);
            drop(state);
            self.wake.notify_one();
            self.closed.notify_waiters();
            return Err(PushError::Full);
        }
        let was_empty = state.queue.is_empty();
        state.bytes += msg.len();
        state.queue.push_back(msg);
        drop(state);
        // The writer drains the whole queue under the lock and sleeps only after seeing it
        // empty, so only the empty → non-empty transition needs a wake-up.
        if was_empty {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Asks the writer to close the connection with `code` (the first code asked for wins).
    /// Messages still queued are dropped.
    pub(crate) fn close(&self, code: CloseCode) {
        let mut state = self.lock();
        if state.close.is_none() {
            state.close = Some(code);
        }
        drop(state);
        self.wake.notify_one();
        self.closed.notify_waiters();
    }

    /// Asks the writer to send a WebSocket Ping frame (after whatever is queued).
    pub(crate) fn request_ping(&self) {
        let mut state = self.lock();
        if state.close.is_some() {
            return;
        }
        state.ping = true;
        drop(state);
        self.wake.notify_one();
    }

    /// Whether a Ping was asked for since the last call (for the writer, after a batch).
    pub(crate) fn take_ping(&self) -> bool {
        std::mem::take(&mut self.lock().ping)
    }

    /// Completes once the connection must close (for the reader, which then stops reading).
    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.closed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a close between the check and the await is not
            // missed.
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// The code the connection closes with, once decided.
    pub(crate) fn close_code(&self) -> Option<CloseCode> {
        self.lock().close
    }

    /// Whether the connection is closing.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().close.is_some()
    }

    /// Waits for work: moves every queued message into `batch` and returns `None`, or returns
    /// the close code once the connection must close. Cancel-safe (messages move only when
    /// the future completes). Only the connection's writer calls this.
    pub(crate) async fn next_batch(&self, batch: &mut Vec<Utf8Bytes>) -> Option<CloseCode> {
        loop {
            match self.take(batch) {
                Taken::Close(code) => return Some(code),
                Taken::Messages => return None,
                Taken::Nothing => self.wake.notified().await,
            }
        }
    }

    /// Moves whatever is queued into `batch` without waiting; returns the close code if the
    /// connection must close.
    pub(crate) fn take_now(&self, batch: &mut Vec<Utf8Bytes>) -> Option<CloseCode> {
        match self.take(batch) {
            Taken::Close(code) => Some(code),
            Taken::Messages | Taken::Nothing => None,
        }
    }

    fn take(&self, batch: &mut Vec<Utf8Bytes>) -> Taken {
        let mut state = self.lock();
        if let Some(code) = state.close {
            state.queue = VecDeque::new();
            state.bytes = 0;
            return Taken::Close(code);
        }
        if state.queue.is_empty() {
            // A requested ping is work too; the writer picks it up with `take_ping`.
            return if state.ping {
                Taken::Messages
            } else {
                Taken::Nothing
            };
        }
        batch.extend(state.queue.drain(..));
        state.bytes = 0;
        if state.queue.capacity() > RETAINED_CAPACITY {
            state.queue.shrink_to(RETAINED_CAPACITY);
        }
        Taken::Messages
    }
}

enum Taken {
    Close(CloseCode),
    Messages,
    Nothing,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ordered_batches_and_overflow() {
        let outbox = Outbox::new(2);
        outbox.push("a".into()).unwrap();
        outbox.push("b".into()).unwrap();
        let mut batch = Vec::new();
        assert_eq!(outbox.next_batch(&mut batch).await, None);
        assert_eq!(batch, vec![Utf8Bytes::from("a"), Utf8Bytes::from("b")]);
        outbox.push("c".into()).unwrap();
        outbox.push("d".into()).unwrap();
        assert_eq!(outbox.push("e".into()), Err(PushError::Full));
        assert_eq!(outbox.push("f".into()), Err(PushError::Closed));
        assert_eq!(
            outbox.next_batch(&mut batch).await,
            Some(CloseCode::SlowConsumer)
        );
    }

    #[tokio::test]
    async fn overflowing_the_byte_bound_closes_4003() {
        let outbox = Outbox::new(100).with_max_bytes(10);
        // An oversized message at an empty queue is taken.
        outbox.push("0123456789ab".into()).unwrap();
        let mut batch = Vec::new();
        assert_eq!(outbox.next_batch(&mut batch).await, None);
        outbox.push("01234".into()).unwrap();
        outbox.push("56789".into()).unwrap();
        assert_eq!(outbox.push("x".into()), Err(PushError::Full));
        assert_eq!(
            outbox.next_batch(&mut batch).await,
            Some(CloseCode::SlowConsumer)
        );
    }

    #[tokio::test]
    async fn wakes_the_writer() {
        let outbox = std::sync::Arc::new(Outbox::new(8));
        let o = outbox.clone();
        let writer = tokio::spawn(async move {
            let mut batch = Vec::new();
            o.next_batch(&mut batch).await;
            batch
        });
        tokio::task::yield_now().await;
        outbox.push("x".into()).unwrap();
        assert_eq!(writer.await.unwrap(), vec![Utf8Bytes::from("x")]);
    }
}
