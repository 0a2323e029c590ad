//! One WebSocket connection after a successful handshake: one task that reads, writes and
//! keeps time.
//!
//! The task (spawned by [`ws`](crate::ws) once the socket is upgraded) selects over four
//! things: the socket (the next frame in, and the progress of the write in flight), the
//! connection's [`Outbox`] (messages queued, or a decision to close), the heartbeat timer and,
//! only on a busy connection with a write delay, the delay's timer. Each text frame is parsed
//! with the seed's rules, updates the connection's subscriptions in the [`Hub`] and queues the
//! reply. A `refresh` swaps the connection's token for a newer one of the same user (new
//! expiry, new claims for the topic policy); a token that fails the check closes the
//! connection with 4001. Replies and events share one ordered queue: the task takes everything
//! waiting as one batch, feeds the frames to the socket and flushes once, and takes the next
//! batch only when that write is done, so the outbox's bounds hold while a socket is slow.
//! Nothing else writes to the socket; the hub only pushes to the outbox, so a slow socket only
//! slows its own connection. A write in flight does not stop the task from reading or its
//! timers from firing: a client that stops reading is still closed by the heartbeat (1011 no
//! pong) or by its full queue (4003).
//!
//! Either side can end the connection: the client (close frame, EOF or a broken socket), the
//! hub (full queue → 4003), a bad frame (1009 too big, 1007 bad UTF-8, 1002 protocol error) or
//! the server's shutdown (1012, through [`Sessions`](crate::control::Sessions)). Whatever the
//! cause, the connection leaves every topic before anything else happens, and every wait on the
//! way out is bounded by the close timeout.
//!
//! One task rather than a reader and a writer: an idle connection's memory is what limits how
//! many a server holds, and a second task costs its own allocation (about 0.6 KiB) plus the
//! lock that shares the socket between two halves.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::Bytes;
use futures_util::{FutureExt as _, SinkExt, StreamExt};
use tidings_protocol::{
    ClientMessage, CloseCode, PresenceMode, StreamPosition, Topic, WSError, WSReply,
};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::Instrument;

use crate::audience::Peer;
use crate::broker::{Broker, Recovery, ReplayBound};
use crate::heartbeat::{Due, Heartbeat};
use crate::hub::{ConnId, Hub};
use crate::logging::Escaped;
use crate::outbox::Outbox;
use crate::presence::Start;
use crate::rate::{RATE_LIMIT_EXCEEDED, RateLimiter, Verdict};
use crate::{Claims, Tidings};

/// The error text sent when a subscribe would exceed the per-connection limit (tidings
/// addition; the connection stays open).
pub const TOO_MANY_SUBSCRIPTIONS: &str = WSError::TOO_MANY_SUBSCRIPTIONS;

/// The connection's state: which topics it is subscribed to, its limits and its token.
///
/// A `Vec` rather than a set: most connections hold a handful of topics, and an idle
/// connection's memory is what limits how many a server holds.
struct Connection {
    id: ConnId,
    outbox: Arc<Outbox>,
    topics: Vec<Topic>,
    rate: RateLimiter,
    heartbeat: Heartbeat,
    /// The token's claims, for the topic policy. Boxed: a pointer in the connection's future.
    claims: Box<Claims>,
    /// The server handle, for settings read on demand (cheaper to keep than copies).
    tidings: Tidings,
    /// What only some connections use (history fetches, presence), allocated on first use:
    /// one pointer in every idle connection rather than the fields themselves.
    extras: Option<Box<Extras>>,
    /// When the last write was flushed (only with a write delay configured): a batch taken
    /// before the delay is over waits until then. Kept here rather than in the connection's
    /// future: the box has room for it, the future's size is what sets its task's allocation.
    flushed_at: Option<Instant>,
    /// Held until the connection ends: its place under the connection limits.
    _permits: Permits,
}

/// The limits a connection counts against (total and per user; per client address when the
/// address is known), released when the connection ends. Kept in the boxed [`Connection`]
/// rather than in a wrapper around its future, for the same reason as `last_flush`.
#[expect(dead_code, reason = "held for their `Drop`, which releases them")]
pub(crate) struct Permits {
    pub(crate) connection: crate::limits::ConnectionPermit,
    pub(crate) ip: Option<crate::ip::IpPermit>,
}

/// The parts of a connection that most connections never use.
#[derive(Default)]
struct Extras {
    /// This connection's history fetches (Redis), made on its first subscribe with `since`.
    fetches: Option<Arc<FetchSlots>>,
    /// The topics of `topics` whose presence it watches (or is present on).
    presence: Vec<Topic>,
}

/// Bounds one connection's history fetches (Redis broker): a few run at once
/// ([`Config::with_max_history_fetches_per_connection`](crate::Config::with_max_history_fetches_per_connection)),
/// the others wait their turn in order, and at most one per topic the connection may hold
/// can be outstanding (running or waiting), so a client looping subscribe/unsubscribe cannot
/// pile up waiting tasks.
struct FetchSlots {
    running: tokio::sync::Semaphore,
    outstanding: AtomicUsize,
}

/// One outstanding fetch of a connection, counted out when its task ends.
struct Outstanding(Arc<FetchSlots>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An upgraded WebSocket as the connection task uses it: frames in, frames out. Generic so that
/// the unit tests can drive the task with an in-memory socket.
pub(crate) trait Socket:
    futures_util::Stream<Item = Result<Message, axum::Error>>
    + futures_util::Sink<Message, Error = axum::Error>
    + Unpin
    + Send
    + 'static
{
}

impl<T> Socket for T where
    T: futures_util::Stream<Item = Result<Message, axum::Error>>
        + futures_util::Sink<Message, Error = axum::Error>
        + Unpin
        + Send
        + 'static
{
}

/// Why the connection's loop stopped.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The client closed or the socket broke while reading: nothing more to send.
    Peer,
    /// The server closes the connection: the close frame goes out, then the client's reply
    /// is awaited.
    Server,
    /// A write failed: nothing can be sent any more (the client's reply is still awaited,
    /// briefly, as for a server close).
    WriteFailed,
}

/// What the connection is writing: the batch taken from the outbox, and whether a Ping is due.
#[derive(Default)]
struct Out {
    /// Taken from the outbox in one go. Freed once written: an idle connection keeps no
    /// buffer (the outbox's queue likewise starts empty at every batch).
    batch: VecDeque<Utf8Bytes>,
    /// A write is in flight: the batch (possibly already fed) still has to be flushed.
    writing: bool,
    /// The heartbeat asked for a Ping frame (sent after the batch, in the same flush).
    ping: bool,
    /// The batch waits for the end of the write delay (not written yet).
    delaying: bool,
}

impl Out {
    /// Whether the socket has something to write now.
    fn busy(&self) -> bool {
        self.writing || self.ping
    }

    /// Feeds the batch (and the Ping) to the socket and flushes once; ready when all of it
    /// is written. Cancel-safe: the progress is in `self` and in the socket.
    fn poll_write<S: Socket>(
        &mut self,
        socket: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), axum::Error>> {
        while !self.batch.is_empty() {
            ready!(socket.poll_ready_unpin(cx))?;
            if let Some(text) = self.batch.pop_front() {
                socket.start_send_unpin(Message::Text(text))?;
            }
        }
        if self.ping {
            ready!(socket.poll_ready_unpin(cx))?;
            socket.start_send_unpin(Message::Ping(Bytes::new()))?;
            self.ping = false;
        }
        ready!(socket.poll_flush_unpin(cx))?;
        self.writing = false;
        // A batch that waited for the write delay went out with a Ping: nothing waits now.
        self.delaying = false;
        self.batch = VecDeque::new();
        Poll::Ready(Ok(()))
    }
}

/// What the socket did: a write completed, or a frame (or the end) was read.
enum Io {
    Written(Result<(), axum::Error>),
    Read(Option<Result<Message, axum::Error>>),
}

/// Drives the write in flight (if any) and reads the next frame, in one poll: the two
/// directions of one socket, owned by one task.
fn poll_io<S: Socket>(out: &mut Out, socket: &mut S, cx: &mut Context<'_>) -> Poll<Io> {
    if out.busy() {
        if let Poll::Ready(result) = out.poll_write(socket, cx) {
            return Poll::Ready(Io::Written(result));
        }
    }
    socket.poll_next_unpin(cx).map(Io::Read)
}

/// Starts an authenticated connection in a task of its own (tracked for the shutdown's
/// drain).
///
/// The task carries the connection's tracing span only when the span is enabled (debug
/// level): at the default level the span would be 40 bytes of nothing in every connection's
/// task, enough to put it in the allocator's next size class.
pub(crate) fn spawn<S: Socket>(
    socket: S,
    tidings: &Tidings,
    claims: Claims,
    connection_id: Option<String>,
    permits: Permits,
) -> tokio::task::JoinHandle<()> {
    let (connection, span) = start(socket, tidings, claims, connection_id, permits);
    if span.is_disabled() {
        tidings.tracker().spawn(connection)
    } else {
        tidings.tracker().spawn(connection.instrument(span))
    }
}

/// Sets an authenticated connection up: returns its task's future and its span.
///
/// The set-up happens here, outside the returned future, so that the future (alive as long as
/// the connection) keeps no slots for values it only needed to start.
fn start<S: Socket>(
    socket: S,
    tidings: &Tidings,
    claims: Claims,
    connection_id: Option<String>,
    permits: Permits,
) -> (impl Future<Output = ()> + Send + use<S>, tracing::Span) {
    let config = tidings.config();
    // Who the connection is, for event audiences: the token's user (a refreshed token must
    // keep it) and the id its client sent.
    let peer = Peer {
        user: claims.sub.as_str().into(),
        connection_id: connection_id.map(String::into_boxed_str),
    };
    let outbox = Arc::new(
        Outbox::new(config.buffers.outbound_queue_capacity)
            .with_max_bytes(config.buffers.max_outbound_bytes)
            .with_peer(peer),
    );
    let id = tidings.hub().next_conn_id();
    // One span over the task, so every event of this connection carries its id and user
    // (the token's `sub`, escaped: it is the client's text, and a newline in it must not start
    // a forged log line; never the token). Debug level: at the default level it is disabled,
    // its fields are not even formatted, and the future carries an empty span.
    let span = tracing::debug_span!("conn", conn_id = id, user = %Escaped(&claims.sub));
    // Findable by user and token id (`POST /admin/…`) until the connection ends; the shutdown
    // closes every registered outbox with 1012.
    let session = tidings.sessions().register(&claims, outbox.clone());
    if tidings.is_shutting_down() {
        // Registered after the shutdown closed every session: close it the same way.
        outbox.close(CloseCode::ServiceRestart);
    }
    let conn = Connection {
        id,
        outbox,
        topics: Vec::new(),
        rate: RateLimiter::new(config.rate_settings(), Instant::now()),
        heartbeat: Heartbeat::new(
            config.heartbeat_settings(),
            Instant::now(),
            claims.exp,
            config.auth.jwt_leeway,
        ),
        claims: Box::new(claims),
        tidings: tidings.clone(),
        extras: None,
        flushed_at: None,
        _permits: permits,
    };
    // The session ends with the loop; `map`, not an `async` block, which would hold the
    // future twice.
    let connection = run(Box::new(conn), socket).map(move |()| drop(session));
    (connection, span)
}

/// The connection's loop, until it ends, then its way out.
///
/// A plain function returning an `async move` block rather than an `async fn`: an `async fn`
/// keeps each argument twice in its future (as passed and as moved into its body), and this
/// future lives as long as the connection.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` would keep its arguments twice in this long-lived future"
)]
fn run<S: Socket>(
    mut conn: Box<Connection>,
    mut socket: S,
) -> impl Future<Output = ()> + Send + use<S> {
    async move {
        let mut out = Out::default();
        // The one timer for pings, the dead-peer timeout, the token's expiry and the write
        // delay. Boxed: a pointer in the long-lived future instead of the whole timer.
        let mut timer = Box::pin(sleep_until(conn.next_deadline(false)));
        let end = loop {
            // Whatever woke the task, the outbox is looked at first: a decision to close wins,
            // and once the last write is done the next batch is taken.
            let closing = if !out.busy() && !out.delaying {
                let closing = conn.outbox.take_now(&mut out.batch);
                if closing.is_none() && !out.batch.is_empty() {
                    // A connection that flushed less than `write_delay` ago is busy: wait out
                    // the rest of the delay so that the events arriving meanwhile share one
                    // write. An idle connection (the common case) is written to at once.
                    match conn.delay_until() {
                        Some(until) if Instant::now() < until => {
                            out.delaying = true;
                            timer.as_mut().reset(conn.next_deadline(true));
                        }
                        _ => {
                            conn.flushed_at = None;
                            conn.hub().metrics().messages_out(out.batch.len());
                            out.writing = true;
                        }
                    }
                }
                closing
            } else {
                conn.outbox.close_code()
            };
            if closing.is_some() {
                break End::Server;
            }
            tokio::select! {
                biased;
                // Messages queued, or the hub, an admin command or the shutdown decided to
                // close (with 1012): handled at the top of the loop.
                () = poll_fn(|cx| conn.outbox.poll_woken(cx)) => {}
                // A ping, a dead peer, an expired token or the end of the write delay is due
                // (or traffic moved a deadline).
                () = &mut timer => {
                    if out.delaying && conn.delay_until().is_none_or(|until| Instant::now() >= until) {
                        // Write what was taken, with what arrived since.
                        out.delaying = false;
                        conn.flushed_at = None;
                        if conn.outbox.take_now(&mut out.batch).is_none() {
                            conn.hub().metrics().messages_out(out.batch.len());
                            out.writing = true;
                        }
                    }
                    match conn.on_deadline() {
                        Due::Nothing => {}
                        Due::Ping => out.ping = true,
                        Due::NoPong => {
                            tracing::debug!(conn = conn.id, "closing a silent connection");
                            conn.outbox.close(CloseCode::NoPong);
                        }
                        Due::TokenExpired => {
                            tracing::debug!(conn = conn.id, "closing: the token expired");
                            conn.outbox.close(CloseCode::TokenExpired);
                        }
                    }
                    timer.as_mut().reset(conn.next_deadline(out.delaying));
                }
                io = poll_fn(|cx| poll_io(&mut out, &mut socket, cx)) => match io {
                    Io::Written(Ok(())) => {
                        if !conn.tidings.config().write_delay.is_zero() {
                            conn.flushed_at = Some(Instant::now());
                        }
                    }
                    Io::Written(Err(_)) => {
                        // The socket is broken.
                        conn.outbox.close(CloseCode::Normal);
                        break End::WriteFailed;
                    }
                    Io::Read(msg) => {
                        if let Some(Ok(_)) = &msg {
                            conn.heartbeat.seen(Instant::now());
                        }
                        match msg {
                            Some(Ok(Message::Text(text))) => {
                                if conn.admit() {
                                    conn.on_text(&text);
                                }
                            }
                            Some(Ok(Message::Binary(_))) => {
                                if conn.admit() {
                                    conn.reply(&WSError::invalid_format(
                                        "binary frames are not supported",
                                    ));
                                }
                            }
                            // tungstenite answers pings itself; pongs need nothing. Both still
                            // count against the rate limit, so a ping flood ends in 1008 too.
                            Some(Ok(Message::Ping(_) | Message::Pong(_))) => conn.admit_control(),
                            Some(Ok(Message::Close(_))) | None => break End::Peer,
                            Some(Err(e)) => match close_code_for(&e) {
                                Some(code) => {
                                    let error = Escaped(&e);
                                    tracing::debug!(conn = conn.id, %error, "closing after a bad frame");
                                    conn.outbox.close(code);
                                    break End::Server;
                                }
                                None => break End::Peer,
                            },
                        }
                    }
                },
            }
        };

        // Leave every topic first so that no broadcast counts this connection any more.
        conn.leave_all();
        // Decide the close code now (a peer close is 1000) so that it can be counted.
        conn.outbox.close(CloseCode::Normal);
        let code = conn.outbox.close_code().unwrap_or(CloseCode::Normal);
        conn.hub().metrics().closed(code);
        drop(timer);
        let close_timeout = conn.tidings.config().close_timeout;
        // Boxed: the closing steps hold timers, and only a closing connection needs them.
        Box::pin(finish(&mut socket, &mut out, code, end, close_timeout)).await;
    }
}

/// The way out of a connection, every wait bounded by `close_timeout`.
async fn finish<S: Socket>(
    socket: &mut S,
    out: &mut Out,
    code: CloseCode,
    end: End,
    close_timeout: Duration,
) {
    if end != End::WriteFailed {
        let _ = timeout(close_timeout, async {
            // What was taken from the outbox before the close was decided goes out first, as
            // it would have from a writer that finishes its batch; no Ping any more.
            out.ping = false;
            if (out.writing || !out.batch.is_empty())
                && poll_fn(|cx| out.poll_write(socket, cx)).await.is_err()
            {
                return;
            }
            if code == CloseCode::Normal {
                // The peer closed or vanished: only flush what tungstenite queued itself,
                // such as its close reply.
                let _ = socket.flush().await;
            } else {
                let frame = CloseFrame {
                    code: code.code(),
                    reason: Utf8Bytes::from_static(code.reason()),
                };
                let _ = socket.send(Message::Close(Some(frame))).await;
            }
        })
        .await;
    }
    if end != End::Peer {
        // Give the client a moment to answer our close frame, as RFC 6455 asks.
        await_close_reply(socket, close_timeout).await;
    }
}

/// Reads until the client's close frame (or the end of the stream), at most `limit`.
pub(crate) async fn await_close_reply<S: Socket>(socket: &mut S, limit: Duration) {
    let _ = timeout(limit, async {
        while let Some(Ok(msg)) = socket.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

impl Connection {
    /// Asks the topic policy; a denied subscribe is answered here.
    fn may_subscribe(&self, topic: &Topic) -> bool {
        let policy = &self.tidings.config().topic_policy;
        if policy.allow_subscribe(&self.claims, topic) {
            return true;
        }
        self.reply(&WSError {
            error: crate::FORBIDDEN.into(),
            details: None,
            topic: Some(topic.as_str().to_owned()),
        });
        false
    }

    fn hub(&self) -> &Hub {
        self.tidings.hub()
    }

    fn max_subscriptions(&self) -> usize {
        self.tidings
            .config()
            .limits
            .max_subscriptions_per_connection
    }

    /// When a batch taken now would be written: the end of the write delay after the last
    /// flush, if there is one.
    fn delay_until(&self) -> Option<Instant> {
        self.flushed_at
            .map(|at| at + self.tidings.config().write_delay)
    }

    /// The timer's next deadline: the heartbeat's, or the write delay's end if a batch waits
    /// for it (`delaying`) and it comes first.
    fn next_deadline(&self, delaying: bool) -> Instant {
        let settings = self.tidings.config().heartbeat_settings();
        let heartbeat = self.heartbeat.deadline(settings);
        match self.delay_until() {
            Some(until) if delaying => heartbeat.min(until),
            _ => heartbeat,
        }
    }

    fn on_deadline(&mut self) -> Due {
        let settings = self.tidings.config().heartbeat_settings();
        self.heartbeat.on_deadline(settings, Instant::now())
    }

    /// Applies the rate limit to one inbound message: whether to handle it.
    fn admit(&mut self) -> bool {
        self.hub().metrics().message_in();
        match self
            .rate
            .check(self.tidings.config().rate_settings(), Instant::now())
        {
            Verdict::Allow => true,
            Verdict::Drop => {
                self.hub().metrics().rate_limited();
                self.reply(&WSError::new(RATE_LIMIT_EXCEEDED));
                false
            }
            Verdict::Close => {
                tracing::debug!(conn = self.id, "closing a connection that keeps flooding");
                self.outbox.close(CloseCode::PolicyViolation);
                false
            }
        }
    }

    /// Applies the rate limit to a control frame (Ping or Pong): nothing to drop or answer,
    /// but a flood of them closes the connection like a flood of messages.
    fn admit_control(&mut self) {
        let verdict = self
            .rate
            .check(self.tidings.config().rate_settings(), Instant::now());
        match verdict {
            Verdict::Allow => {}
            Verdict::Drop => self.hub().metrics().rate_limited(),
            Verdict::Close => {
                tracing::debug!(conn = self.id, "closing a connection that floods pings");
                self.outbox.close(CloseCode::PolicyViolation);
            }
        }
    }

    fn on_text(&mut self, text: &str) {
        match ClientMessage::parse(text) {
            Ok(Some(ClientMessage::Subscribe {
                topic,
                since,
                position,
                presence,
            })) => self.subscribe(topic, since, position, presence),
            Ok(Some(ClientMessage::Unsubscribe { topic })) => {
                if let Some(i) = self.topics.iter().position(|t| *t == topic) {
                    self.topics.swap_remove(i);
                    self.hub().unsubscribe(topic.as_str(), self.id);
                    self.unwatch(&topic);
                }
                self.reply(&WSReply::Unsubscribed {
                    topic,
                    reason: None,
                });
            }
            Ok(Some(ClientMessage::Ping)) => {
                self.push(Utf8Bytes::from_static(WSReply::PONG_JSON));
            }
            Ok(Some(ClientMessage::Refresh { token })) => self.refresh(&token),
            // Unknown actions are ignored without a reply, as in the seed.
            Ok(None) => {}
            Err(e) => self.reply(&e.to_reply()),
        }
    }

    /// Continues the connection on `token`: checked exactly like the connect token, and it must
    /// name the same user. A bad credential ends the connection (4001) rather than letting it
    /// run on the old token: the client has to notice and get a new one.
    fn refresh(&mut self, token: &str) {
        let claims = match self.tidings.verify_token(token) {
            Ok(claims) if self.tidings.is_revoked(&claims) => {
                tracing::debug!(conn = self.id, "refresh refused: revoked token");
                self.outbox.close(CloseCode::Unauthorized);
                return;
            }
            Ok(claims) if claims.sub == self.claims.sub => claims,
            Ok(_) => {
                tracing::debug!(conn = self.id, "refresh refused: another user's token");
                self.outbox.close(CloseCode::Unauthorized);
                return;
            }
            Err(e) => {
                // The error names what was wrong (expired, bad signature, …), never the token.
                tracing::debug!(conn = self.id, reason = %Escaped(&e), "refresh refused");
                self.outbox.close(CloseCode::Unauthorized);
                return;
            }
        };
        let leeway = self.tidings.config().auth.jwt_leeway;
        self.heartbeat
            .set_token_exp(Instant::now(), claims.exp, leeway);
        *self.claims = claims;
        self.drop_forbidden_topics();
        self.push(Utf8Bytes::from_static(WSReply::REFRESHED_JSON));
    }

    /// After a refresh: ends every subscription the new claims no longer allow (a narrowed
    /// `topics` claim), each with an `unsubscribed` whose `reason` is `Forbidden`, queued
    /// before the `refreshed` reply so that a client reading `refreshed` knows its final set.
    fn drop_forbidden_topics(&mut self) {
        let tidings = self.tidings.clone();
        let policy = &tidings.config().topic_policy;
        let mut i = 0;
        while i < self.topics.len() {
            if policy.allow_subscribe(&self.claims, &self.topics[i]) {
                i += 1;
                continue;
            }
            let topic = self.topics.swap_remove(i);
            self.hub().unsubscribe(topic.as_str(), self.id);
            self.unwatch(&topic);
            self.reply(&WSReply::Unsubscribed {
                topic,
                reason: Some(WSReply::REASON_FORBIDDEN.to_owned()),
            });
        }
    }

    /// Registers the connection as a watcher of `topic`'s presence (present too for `join`):
    /// what is returned runs once the ack is queued. The topic policy has allowed the
    /// subscribe, so presence is allowed with it.
    fn watch(&mut self, topic: &Topic, mode: PresenceMode) -> Start {
        let presence = &mut self.extras.get_or_insert_default().presence;
        if !presence.contains(topic) {
            presence.push(topic.clone());
        }
        self.tidings.presence().watch(
            topic,
            self.id,
            &self.outbox,
            mode,
            &self.claims.sub,
            self.claims.presence_info.as_ref(),
        )
    }

    /// Ends the connection's presence on `topic`, if it had any.
    fn unwatch(&mut self, topic: &Topic) {
        let Some(presence) = self.extras.as_mut().map(|e| &mut e.presence) else {
            return;
        };
        if let Some(i) = presence.iter().position(|t| t == topic) {
            presence.swap_remove(i);
            self.tidings.presence().unwatch(topic, self.id);
        }
    }

    /// `position`: the client asked for the topic's position in the ack (a seed client never
    /// does, and its ack stays the seed's bytes). `presence`: it asked for the topic's
    /// presence, which follows the ack (a seed client never does).
    fn subscribe(
        &mut self,
        topic: Topic,
        since: Option<StreamPosition>,
        position: bool,
        presence: Option<PresenceMode>,
    ) {
        if !self.may_subscribe(&topic) {
            return;
        }
        if position || since.is_some() {
            // It follows `seq`s: events it is left out of become `skipped` frames for it.
            self.outbox.track_positions();
        }
        if self.topics.contains(&topic) {
            // Already live on this connection: nothing was missed here, but a position
            // from elsewhere cannot be checked against what was delivered; the client
            // refetches rather than risk a gap. (The position, in memory, is the current
            // one: what the refetch will reflect at least.)
            let at = position
                .then(|| self.hub().memory_position(topic.as_str()))
                .flatten();
            let start = presence.map(|mode| self.watch(&topic, mode));
            self.reply(&WSReply::subscribed_at(topic, since.map(|_| false), at));
            if let Some(start) = start {
                start.run();
            }
            return;
        }
        {
            if self.topics.len() >= self.max_subscriptions() {
                let error = WSError {
                    details: Some(format!(
                        "at most {} topics per connection",
                        self.max_subscriptions()
                    )),
                    topic: Some(topic.into_string()),
                    ..WSError::new(TOO_MANY_SUBSCRIPTIONS)
                };
                self.reply(&error);
                return;
            }
            if self.topics.len() == self.topics.capacity() {
                // Grow by half instead of doubling from 4: one topic costs one slot.
                self.topics.reserve_exact((self.topics.len() / 2).max(1));
            }
            self.topics.push(topic.clone());
        }
        // Registered now, so that an unsubscribe or a close before the ack ends it too; run
        // once the ack is queued.
        let start = presence.map(|mode| self.watch(&topic, mode));
        let Some(since) = since else {
            match self.hub().external_broker() {
                // A shared broker, which may not carry the topic to this node yet (its first
                // subscriber here asks for it): park the connection, and confirm once it
                // does (at once when it already did). Deciding before parking would miss the
                // follow request the parking itself makes: the ack would go out before the
                // topic's channel is subscribed, and the next event would be lost.
                Some(broker) => {
                    let ack = {
                        let topic = topic.clone();
                        move |_, at: Option<StreamPosition>| {
                            ack_text(&WSReply::subscribed_at(
                                topic,
                                None,
                                at.filter(|_| position),
                            ))
                        }
                    };
                    self.join_when_ready(broker.clone(), topic, true, position, ack, start);
                }
                // Subscribe and read the position under the topic's lock, then confirm:
                // once the client reads "subscribed", every later event reaches it.
                None if position => {
                    self.hub()
                        .subscribe_with_position(&topic, self.id, &self.outbox, |at| {
                            ack_text(&WSReply::subscribed_at(topic.clone(), None, Some(at)))
                        });
                    run_presence(start);
                }
                // Subscribe before confirming: once the client reads "subscribed", every
                // later event of the topic reaches it.
                None => {
                    self.hub().subscribe(&topic, self.id, &self.outbox);
                    self.reply(&WSReply::subscribed(topic));
                    run_presence(start);
                }
            }
            return;
        };
        let ack = {
            let topic = topic.clone();
            move |recovered: bool, at: Option<StreamPosition>| {
                ack_text(&WSReply::subscribed_at(
                    topic,
                    Some(recovered),
                    at.filter(|_| position),
                ))
            }
        };
        match self.hub().external_broker().cloned() {
            // In memory: the same park → read → merge, in one step (the history answers at
            // once, so no task is needed).
            None => {
                self.hub()
                    .subscribe_since(&topic, self.id, &self.outbox, &since, ack);
                run_presence(start);
            }
            // Redis: park the connection (live events are held back), fetch the history,
            // then replay and merge. The reader goes on meanwhile.
            Some(broker) => {
                let config = self.tidings.config();
                let slots = self
                    .extras
                    .get_or_insert_default()
                    .fetches
                    .get_or_insert_with(|| {
                        Arc::new(FetchSlots {
                            running: tokio::sync::Semaphore::new(
                                config.max_history_fetches_per_connection,
                            ),
                            outstanding: AtomicUsize::new(0),
                        })
                    })
                    .clone();
                if slots.outstanding.fetch_add(1, Ordering::Relaxed) >= self.max_subscriptions() {
                    slots.outstanding.fetch_sub(1, Ordering::Relaxed);
                    tracing::debug!(%topic, "too many history fetches queued; not recovered");
                    self.join_when_ready(broker.clone(), topic, false, false, ack, start);
                    return;
                }
                let outstanding = Outstanding(slots);
                let bound = ReplayBound::for_outbox(
                    self.outbox.capacity(),
                    config.buffers.max_outbound_bytes,
                );
                let broker = broker.clone();
                let hub = self.hub().clone();
                let id = self.id;
                let ticket = hub.subscribe_pending(&topic, id, &self.outbox);
                let outbox = self.outbox.clone();
                tokio::spawn(async move {
                    let slots = &outstanding.0;
                    let Ok(_running) = slots.running.acquire().await else {
                        return;
                    };
                    // Left the topic while waiting: nothing to fetch.
                    if !hub.pending_is_current(topic.as_str(), id, ticket) {
                        return;
                    }
                    // Events after the history read must reach this node: the topic's
                    // subscription with the broker is in effect first.
                    if !broker.following() && !ready_or_close(&*broker, &outbox).await {
                        return;
                    }
                    let recovery = match broker.history(&hub, &topic, &since, bound).await {
                        Ok(recovery) => recovery,
                        Err(e) => {
                            tracing::debug!(%topic, error = %e, "history unavailable; not recovered");
                            Recovery {
                                recovered: false,
                                events: Vec::new(),
                            }
                        }
                    };
                    hub.finish_pending(&topic, id, ticket, Some(&since), recovery, None, ack);
                    run_presence(start);
                });
            }
        }
    }

    /// Parks the connection on `topic` (live events are held back) until the shared broker
    /// carries the topic to this node, then queues `ack(recovered, position)` and the held
    /// events and makes it a live subscriber: an event published after the client reads the
    /// ack reaches it.
    ///
    /// `position`: read the topic's position from the broker once the topic is carried here;
    /// the connection then joins from it (events up to it are skipped, later ones follow the
    /// ack). A failed read acks without a position.
    fn join_when_ready(
        &self,
        broker: Arc<dyn Broker>,
        topic: Topic,
        recovered: bool,
        position: bool,
        ack: impl FnOnce(bool, Option<StreamPosition>) -> Utf8Bytes + Send + 'static,
        then: Option<Start>,
    ) {
        let hub = self.hub().clone();
        let id = self.id;
        // Parking creates the topic here if it is new, which asks the broker to follow it:
        // `following()` is only meaningful after that.
        let ticket = hub.subscribe_pending(&topic, id, &self.outbox);
        let nothing_missed = Recovery {
            recovered,
            events: Vec::new(),
        };
        if broker.following() && !position {
            // Every follow asked for, this topic's included, is in effect.
            hub.finish_pending(&topic, id, ticket, None, nothing_missed, None, ack);
            run_presence(then);
            return;
        }
        let outbox = self.outbox.clone();
        tokio::spawn(async move {
            if !broker.following() && !ready_or_close(&*broker, &outbox).await {
                return;
            }
            // Read after the topic is carried here: every event after the position read
            // reaches this node, and is held for the connection until the ack is queued.
            let at = if position {
                match broker.position(&hub, &topic).await {
                    Ok(at) => Some(at),
                    Err(e) => {
                        tracing::debug!(%topic, error = %e, "position unavailable; acked without");
                        None
                    }
                }
            } else {
                None
            };
            hub.finish_pending(&topic, id, ticket, at.as_ref(), nothing_missed, None, ack);
            run_presence(then);
        });
    }

    fn reply<T: serde::Serialize>(&self, reply: &T) {
        self.push(ack_text(reply));
    }

    fn push(&self, text: Utf8Bytes) {
        // A full queue closes the connection (4003); the reader notices through
        // `Outbox::closed`, so the error needs no handling here.
        let _ = self.outbox.push(text);
    }

    fn leave_all(&mut self) {
        let hub = self.tidings.hub();
        for topic in self.topics.drain(..) {
            hub.unsubscribe(topic.as_str(), self.id);
        }
        let presence = self
            .extras
            .as_mut()
            .map(|e| std::mem::take(&mut e.presence));
        for topic in presence.into_iter().flatten() {
            self.tidings.presence().unwatch(&topic, self.id);
        }
    }
}

/// Waits until the broker carries every followed topic to this node. When it gives up while
/// the broker reports itself healthy (a channel subscription that is slow, not an outage that
/// the repair after it would cover), the connection is closed with 1013 instead of confirming
/// a subscription that may miss events: the client reconnects and subscribes again. Returns
/// whether to go on.
async fn ready_or_close(broker: &dyn crate::broker::Broker, outbox: &Outbox) -> bool {
    if broker.ready().await || broker.degraded().is_some() {
        return true;
    }
    tracing::warn!("the broker did not confirm a channel subscription in time; closing with 1013");
    outbox.close(CloseCode::TryAgainLater);
    false
}

/// Runs a presence subscribe's rest (snapshot, refusal) once its ack is queued, if it asked.
fn run_presence(start: Option<Start>) {
    if let Some(start) = start {
        start.run();
    }
}

/// The JSON text of a reply.
fn ack_text<T: serde::Serialize>(reply: &T) -> Utf8Bytes {
    match serde_json::to_string(reply) {
        Ok(text) => Utf8Bytes::from(text),
        // Cannot happen for protocol replies; logged rather than panicking.
        Err(e) => {
            tracing::error!(error = %e, "could not serialize a reply");
            Utf8Bytes::from_static(WSError::INTERNAL_ERROR_JSON)
        }
    }
}

/// The close code for a read error, or `None` when the peer is simply gone.
fn close_code_for(error: &axum::Error) -> Option<CloseCode> {
    use tungstenite::error::{CapacityError, Error};
    let source = std::error::Error::source(error)?;
    match source.downcast_ref::<Error>()? {
        Error::Capacity(CapacityError::MessageTooLong { .. }) => Some(CloseCode::MessageTooBig),
        Error::Capacity(_) => Some(CloseCode::MessageTooBig),
        Error::Utf8(_) => Some(CloseCode::InvalidPayload),
        Error::Protocol(_) => Some(CloseCode::ProtocolError),
        // Over the inbound byte budget for too long (see `inbound`).
        Error::Io(e) if crate::inbound::is_flood(e) => Some(CloseCode::PolicyViolation),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::Mutex;
    use std::time::{SystemTime, UNIX_EPOCH};

    use tokio::sync::mpsc;

    use super::*;

    /// An in-memory socket: frames in from a channel, frames out recorded per flush. A stalled
    /// one never completes a write (a client that stopped reading).
    struct MockSocket {
        inbound: mpsc::UnboundedReceiver<Message>,
        pending: Vec<String>,
        flushed: Arc<Mutex<Vec<Vec<String>>>>,
        stalled: bool,
    }

    impl futures_util::Stream for MockSocket {
        type Item = Result<Message, axum::Error>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.inbound.poll_recv(cx).map(|m| m.map(Ok))
        }
    }

    impl futures_util::Sink<Message> for MockSocket {
        type Error = axum::Error;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            if self.stalled {
                Poll::Pending
            } else {
                Poll::Ready(Ok(()))
            }
        }
        fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
            let text = match item {
                Message::Text(text) => text.to_string(),
                Message::Ping(_) => "<ping>".into(),
                Message::Close(Some(frame)) => format!("<close {}>", frame.code),
                other => format!("{other:?}"),
            };
            self.pending.push(text);
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            if self.stalled {
                return Poll::Pending;
            }
            let this = self.get_mut();
            if !this.pending.is_empty() {
                let batch = std::mem::take(&mut this.pending);
                this.flushed.lock().unwrap().push(batch);
            }
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.poll_flush(cx)
        }
    }

    type Flushed = Arc<Mutex<Vec<Vec<String>>>>;

    /// Starts a connection on a mock socket: its task, the client's sending end, what was
    /// written.
    fn connect(
        tidings: &Tidings,
        stalled: bool,
    ) -> (
        tokio::task::JoinHandle<()>,
        mpsc::UnboundedSender<Message>,
        Flushed,
    ) {
        let (tx, inbound) = mpsc::unbounded_channel();
        let flushed = Flushed::default();
        let socket = MockSocket {
            inbound,
            pending: Vec::new(),
            flushed: flushed.clone(),
            stalled,
        };
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let claims = Claims {
            sub: "u".into(),
            exp,
            scope: None,
            topics: None,
            jti: None,
            presence_info: None,
        };
        let permits = Permits {
            connection: tidings.limits().acquire("u").unwrap(),
            ip: None,
        };
        let task = spawn(socket, tidings, claims, None, permits);
        (task, tx, flushed)
    }

    const PING: &str = r#"{"action":"ping"}"#;

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn replies_go_out_in_order_then_1012_on_shutdown() {
        let tidings = Tidings::new(crate::Config::new("secret"));
        let (task, tx, flushed) = connect(&tidings, false);
        tx.send(Message::Text(PING.into())).unwrap();
        tx.send(Message::Text("not json".into())).unwrap();
        settle().await;
        tidings.shutdown();
        settle().await;
        // The client answers the close frame.
        tx.send(Message::Close(None)).unwrap();
        task.await.unwrap();
        let written: Vec<String> = flushed.lock().unwrap().concat();
        assert_eq!(written.len(), 3, "{written:?}");
        assert_eq!(written[0], WSReply::PONG_JSON);
        assert!(written[1].contains("error"), "{written:?}");
        assert_eq!(written[2], "<close 1012>");
        let metrics = tidings.hub().metrics();
        assert_eq!(metrics.closes_with(CloseCode::ServiceRestart), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_registered_after_the_shutdown_closes_with_1012() {
        let tidings = Tidings::new(crate::Config::new("secret"));
        tidings.shutdown();
        let (task, tx, flushed) = connect(&tidings, false);
        settle().await;
        tx.send(Message::Close(None)).unwrap();
        task.await.unwrap();
        assert_eq!(flushed.lock().unwrap().concat(), ["<close 1012>"]);
    }

    async fn batches_with(write_delay: Duration) -> Vec<Vec<String>> {
        let tidings = Tidings::new(crate::Config::new("secret").with_write_delay(write_delay));
        let (task, tx, flushed) = connect(&tidings, false);
        for _ in 0..3 {
            tx.send(Message::Text(PING.into())).unwrap();
            settle().await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send(Message::Close(None)).unwrap();
        task.await.unwrap();
        flushed.lock().unwrap().clone()
    }

    #[tokio::test(start_paused = true)]
    async fn without_delay_every_wake_is_written_at_once() {
        let pong = WSReply::PONG_JSON;
        assert_eq!(batches_with(Duration::ZERO).await, [[pong], [pong], [pong]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_waits_out_the_delay_and_batches() {
        // The first pong goes out at once (the connection was idle); the second arrives
        // within the delay, so the task waits, and the third joins it in one write.
        let pong = WSReply::PONG_JSON.to_owned();
        assert_eq!(
            batches_with(Duration::from_millis(10)).await,
            [vec![pong.clone()], vec![pong.clone(), pong]]
        );
    }

    /// A client that stops reading: its write never completes, and the heartbeat still
    /// closes it (1011 after the pong timeout), the way out bounded by the close timeout.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_write_does_not_stop_the_heartbeat() {
        let config = crate::Config::new("secret")
            .with_ping_interval(Duration::from_secs(1))
            .with_pong_timeout(Duration::from_secs(3))
            .with_close_timeout(Duration::from_secs(1));
        let tidings = Tidings::new(config);
        let (task, tx, _flushed) = connect(&tidings, true);
        tx.send(Message::Text(PING.into())).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(10), task).await;
        assert!(ended.is_ok(), "the connection outlived its heartbeat");
        let metrics = tidings.hub().metrics();
        assert_eq!(metrics.closes_with(CloseCode::NoPong), 1);
    }

    /// While a write is stuck the task goes on reading: replies pile up in the outbox until
    /// its bound closes the connection with 4003, long before any heartbeat deadline.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_write_does_not_stop_reading() {
        let config = crate::Config::new("secret")
            .with_outbound_queue_capacity(8)
            .with_close_timeout(Duration::from_secs(1));
        let tidings = Tidings::new(config);
        let (task, tx, _flushed) = connect(&tidings, true);
        for _ in 0..20 {
            tx.send(Message::Text(PING.into())).unwrap();
        }
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(
            ended.is_ok(),
            "the connection did not notice its full queue"
        );
        let metrics = tidings.hub().metrics();
        assert_eq!(metrics.closes_with(CloseCode::SlowConsumer), 1);
    }

    fn size_of_output<A, B, C, D, E, F>(_: fn(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every idle connection keeps its task alive: the future's size is memory per
    /// connection, so a change that makes it balloon should be a choice. (The task adds
    /// tokio's header and trailer, about 100 bytes, rounded up to 128.) Printed with
    /// `--nocapture`.
    #[test]
    fn the_connection_task_stays_small() {
        let span = std::mem::size_of::<tracing::Span>();
        let future = size_of_output(start::<axum::extract::ws::WebSocket>) - span;
        let connection = std::mem::size_of::<Connection>();
        let outbox = std::mem::size_of::<Outbox>();
        let boxed = size_of_output(start::<Box<axum::extract::ws::WebSocket>>) - span;
        println!(
            "connection future {future} B (socket boxed: {boxed} B), Connection {connection} B, Outbox {outbox} B"
        );
        // With tokio's header and trailer (~104 bytes) and the tracker's token, at most 640
        // bytes: the allocator's size class below 768.
        assert!(future <= 520, "connection future is {future} bytes");
        // Boxed and in an `Arc`: the allocator's 224- and 160-byte classes.
        assert!(connection <= 224, "Connection is {connection} bytes");
        assert!(outbox <= 144, "Outbox is {outbox} bytes");
    }
}
