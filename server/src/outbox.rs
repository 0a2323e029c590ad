//! The per-connection outbound queue: the one ordered path from the server to a client.
//!
//! Replies from the connection's reader and events from any publisher go into the same
//! [`Outbox`], so a client sees them in the order they were queued (an event published before
//! a client's ping reaches it before the pong). Pushing never waits: when the queue is full
//! the connection is marked for closing with 4003 (slow consumer) and the push fails, so one
//! stalled client can never slow a broadcast down. The connection's task takes everything
//! queued in one batch ([`Outbox::take_now`]) once its previous write is done.
//!
//! The queue is bounded twice: by message count and by the bytes waiting (so a few huge
//! events cannot pile up megabytes behind a stalled reader either way).
//!
//! Memory matters here because most connections are idle: the queue starts without any
//! allocation, only grows while messages wait, and hands its whole buffer to the batch it
//! becomes (the next message starts a new one), so an idle connection holds none.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use axum::extract::ws::Utf8Bytes;
use futures_util::task::AtomicWaker;
use tidings_protocol::CloseCode;

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
    /// Wakes the connection's task: messages arrived or the connection must close. A waker
    /// and a flag rather than a `Notify`: waiting on a `Notify` keeps a 64-byte future in the
    /// connection's task for its whole life, polling this keeps nothing.
    wake: AtomicWaker,
    /// Set with every wake-up, cleared by the task when it sees it.
    woken: AtomicBool,
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
    /// Set once: the code the connection closes with.
    close: Option<CloseCode>,
}

impl Outbox {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                bytes: 0,
                close: None,
            }),
            wake: AtomicWaker::new(),
            woken: AtomicBool::new(false),
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
            self.wake_task();
            return Err(PushError::Full);
        }
        let was_empty = state.queue.is_empty();
        state.bytes += msg.len();
        state.queue.push_back(msg);
        drop(state);
        // The task takes the whole queue under the lock and looks at it again before every
        // wait, so only the empty → non-empty transition needs a wake-up.
        if was_empty {
            self.wake_task();
        }
        Ok(())
    }

    /// Asks the connection's task to close the connection with `code` (the first code asked
    /// for wins). Messages still queued are dropped.
    pub(crate) fn close(&self, code: CloseCode) {
        let mut state = self.lock();
        if state.close.is_none() {
            state.close = Some(code);
        }
        drop(state);
        self.wake_task();
    }

    fn wake_task(&self) {
        self.woken.store(true, Ordering::Release);
        self.wake.wake();
    }

    /// Ready when messages arrived at an empty queue or the connection must close since the
    /// last time it was ready (a wake-up given while the task was busy is kept for its next
    /// poll). The connection's task looks at the queue ([`Outbox::take_now`]) after each.
    pub(crate) fn poll_woken(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.woken.swap(false, Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.wake.register(cx.waker());
        // Set between the check and the registration: its wake-up went to the old waker.
        if self.woken.swap(false, Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// The code the connection closes with, once decided.
    pub(crate) fn close_code(&self) -> Option<CloseCode> {
        self.lock().close
    }

    /// Whether the connection is closing.
    #[cfg(test)]
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().close.is_some()
    }

    /// Waits for work: moves every queued message into `batch` and returns `None`, or returns
    /// the close code once the connection must close.
    #[cfg(test)]
    pub(crate) async fn next_batch(&self, batch: &mut VecDeque<Utf8Bytes>) -> Option<CloseCode> {
        loop {
            if let Some(code) = self.take_now(batch) {
                return Some(code);
            }
            if !batch.is_empty() {
                return None;
            }
            std::future::poll_fn(|cx| self.poll_woken(cx)).await;
        }
    }

    /// Moves whatever is queued to the end of `batch` without waiting (when `batch` is empty,
    /// the queue's buffer itself becomes the batch); returns the close code if the connection
    /// must close, and then drops what was queued.
    pub(crate) fn take_now(&self, batch: &mut VecDeque<Utf8Bytes>) -> Option<CloseCode> {
        let mut state = self.lock();
        if let Some(code) = state.close {
            let dropped = std::mem::take(&mut state.queue);
            state.bytes = 0;
            drop(state);
            drop(dropped);
            return Some(code);
        }
        if state.queue.is_empty() {
            return None;
        }
        let taken = std::mem::take(&mut state.queue);
        state.bytes = 0;
        drop(state);
        if batch.is_empty() {
            *batch = taken;
        } else {
            batch.extend(taken);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ordered_batches_and_overflow() {
        let outbox = Outbox::new(2);
        outbox.push("a".into()).unwrap();
        outbox.push("b".into()).unwrap();
        let mut batch = VecDeque::new();
        assert_eq!(outbox.next_batch(&mut batch).await, None);
        assert_eq!(batch, [Utf8Bytes::from("a"), Utf8Bytes::from("b")]);
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
        let mut batch = VecDeque::new();
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
            let mut batch = VecDeque::new();
            o.next_batch(&mut batch).await;
            batch
        });
        tokio::task::yield_now().await;
        outbox.push("x".into()).unwrap();
        assert_eq!(writer.await.unwrap(), [Utf8Bytes::from("x")]);
    }
}
