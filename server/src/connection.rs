//! One WebSocket connection after a successful handshake: its reader loop and its writer task.
//!
//! The reader (the task axum hands the upgraded socket to) parses each text frame with the
//! seed's rules, updates the connection's subscriptions in the [`Hub`] and queues the reply.
//! A `refresh` swaps the connection's token for a newer one of the same user (new expiry, new
//! claims for the topic policy); a token that fails the check closes the connection with 4001.
//! The writer (one spawned task per connection) is the only code that writes to the socket:
//! it takes everything waiting in the connection's [`Outbox`] as one batch, feeds the frames
//! to the socket and flushes once. Replies and events share that one ordered queue.
//!
//! Either side can end the connection: the client (close frame, EOF or a broken socket), the
//! hub (full queue → 4003), a bad frame (1009 too big, 1007 bad UTF-8, 1002 protocol error) or
//! the server's shutdown (1012). Whatever the cause, the connection leaves every topic before
//! anything else happens, and every wait on the way out is bounded by the close timeout.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt as _, SinkExt, StreamExt};
use tidings_protocol::{
    ClientMessage, CloseCode, PresenceMode, StreamPosition, Topic, WSError, WSReply,
};
use tokio::task::JoinHandle;
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

/// A writer's batch keeps at most this many slots allocated between batches.
const RETAINED_BATCH: usize = 16;

/// The reader's state: which topics this connection is subscribed to.
///
/// A `Vec` rather than a set: most connections hold a handful of topics, and an idle
/// connection's memory is what limits how many a server holds.
struct Connection {
    id: ConnId,
    hub: Hub,
    outbox: Arc<Outbox>,
    topics: Vec<Topic>,
    /// The topics of `topics` whose presence it watches (or is present on): empty, without
    /// an allocation, for a client that never asks.
    presence: Vec<Topic>,
    max_subscriptions: usize,
    rate: RateLimiter,
    heartbeat: Heartbeat,
    /// The token's claims, for the topic policy. Boxed: a pointer in the reader future.
    claims: Box<Claims>,
    /// The server handle, for settings read on demand (cheaper to keep than copies).
    tidings: Tidings,
    /// This connection's history fetches (Redis), made on its first subscribe with `since`.
    fetches: Option<Arc<FetchSlots>>,
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

/// The halves of an upgraded socket. The socket is split as soon as it is upgraded (before
/// any future holds it), so no task keeps a dead socket-sized slot for its whole life.
pub(crate) type Sink = SplitSink<WebSocket, Message>;
/// The read half of an upgraded socket.
pub(crate) type Stream = SplitStream<WebSocket>;

/// Why the reader stopped.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The client closed or the socket broke: nothing more to send.
    Peer,
    /// The server closes the connection (the writer sends or has sent a close frame).
    Server,
}

/// Starts an authenticated connection: spawns its writer and returns its reader loop.
///
/// The set-up happens here, outside the returned future, so that the reader future (alive
/// as long as the connection) keeps no slots for values it only needed to start.
pub(crate) fn start(
    sink: Sink,
    stream: Stream,
    tidings: &Tidings,
    claims: Claims,
    connection_id: Option<String>,
) -> impl Future<Output = ()> + Send + use<> {
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
    let hub = tidings.hub().clone();
    let id = hub.next_conn_id();
    // One span over both tasks, so every event of this connection carries its id and user
    // (the token's `sub`, escaped: it is the client's text, and a newline in it must not start
    // a forged log line; never the token). Debug level: at the default level it is disabled,
    // its fields are not even formatted, and the futures carry an empty span.
    let span = tracing::debug_span!("conn", conn_id = id, user = %Escaped(&claims.sub));
    let writer =
        tokio::spawn(write_loop(sink, outbox.clone(), tidings.clone()).instrument(span.clone()));
    // Findable by user and token id (`POST /admin/…`) until the reader loop ends.
    let session = tidings.sessions().register(&claims, outbox.clone());
    let conn = Connection {
        id,
        hub,
        outbox,
        topics: Vec::new(),
        presence: Vec::new(),
        max_subscriptions: config.limits.max_subscriptions_per_connection,
        rate: RateLimiter::new(config.rate_settings(), Instant::now()),
        heartbeat: Heartbeat::new(
            config.heartbeat_settings(),
            Instant::now(),
            claims.exp,
            config.auth.jwt_leeway,
        ),
        claims: Box::new(claims),
        tidings: tidings.clone(),
        fetches: None,
    };
    // Boxed: an `async fn` keeps its arguments twice in its future (as passed and as moved
    // into its body), so the connection's state by value would take two slots for its whole
    // life; boxed, both are a pointer. The session (findable by `POST /admin/…`) ends with
    // the reader loop; `map`, not an `async` block, which would hold the future twice.
    run(Box::new(conn), stream, writer, config.close_timeout)
        .map(move |()| drop(session))
        .instrument(span)
}

/// The reader loop of a connection, until it ends.
async fn run(
    mut conn: Box<Connection>,
    mut stream: Stream,
    mut writer: JoinHandle<()>,
    close_timeout: Duration,
) {
    let outbox = conn.outbox.clone();
    let id = conn.id;
    let end = {
        // Created once: it stays registered with the outbox for the connection's whole life
        // instead of registering again for every frame read.
        let closed = outbox.closed();
        tokio::pin!(closed);
        // The one timer for pings, the dead-peer timeout and the token's expiry. Boxed: a
        // pointer in the long-lived reader future instead of the whole timer.
        let mut timer = Box::pin(sleep_until(conn.next_deadline()));
        loop {
            tokio::select! {
                // The hub (full queue) or the shutdown decided to close: stop reading.
                () = &mut closed => break End::Server,
                // The shutdown token is watched by the writer, which then closes the outbox; this
                // arm only covers a writer that ended on its own (a write error).
                _ = &mut writer => break End::Server,
                // A ping, a dead peer or an expired token is due (or traffic moved a deadline).
                () = &mut timer => {
                    match conn.on_deadline() {
                        Due::Nothing => {}
                        Due::Ping => outbox.request_ping(),
                        Due::NoPong => {
                            tracing::debug!(conn = id, "closing a silent connection");
                            outbox.close(CloseCode::NoPong);
                        }
                        Due::TokenExpired => {
                            tracing::debug!(conn = id, "closing: the token expired");
                            outbox.close(CloseCode::TokenExpired);
                        }
                    }
                    timer.as_mut().reset(conn.next_deadline());
                }
                msg = stream.next() => {
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
                            conn.reply(&WSError::invalid_format("binary frames are not supported"));
                        }
                    }
                    // tungstenite answers pings itself; pongs need nothing. Both still count
                    // against the rate limit, so a ping flood ends in 1008 too.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => conn.admit_control(),
                    Some(Ok(Message::Close(_))) | None => break End::Peer,
                    Some(Err(e)) => match close_code_for(&e) {
                        Some(code) => {
                            let error = Escaped(&e);
                            tracing::debug!(conn = id, %error, "closing after a bad frame");
                            outbox.close(code);
                            break End::Server;
                        }
                        None => break End::Peer,
                    },
                    }
                }
            }
        }
    };

    // Leave every topic first so that no broadcast counts this connection any more.
    conn.leave_all();
    // Decide the close code now (a peer close is 1000) so that it can be counted.
    outbox.close(CloseCode::Normal);
    if let Some(code) = outbox.close_code() {
        conn.hub.metrics().closed(code);
    }
    // Boxed: the closing steps hold timers, and only a closing connection needs them.
    Box::pin(finish(outbox, writer, stream, end, close_timeout)).await;
}

/// The way out of a connection, every wait bounded by `close_timeout`.
async fn finish(
    outbox: Arc<Outbox>,
    mut writer: JoinHandle<()>,
    mut stream: Stream,
    end: End,
    close_timeout: Duration,
) {
    // The writer sends the close frame (or, when the peer closed, flushes tungstenite's
    // automatic close reply) and ends; a socket that does not take it in time is dropped.
    outbox.close(CloseCode::Normal);
    if !writer.is_finished() && timeout(close_timeout, &mut writer).await.is_err() {
        writer.abort();
    }
    if end == End::Server {
        // Give the client a moment to answer our close frame, as RFC 6455 asks.
        await_close_reply(&mut stream, close_timeout).await;
    }
}

/// Reads until the client's close frame (or the end of the stream), at most `limit`.
pub(crate) async fn await_close_reply(stream: &mut Stream, limit: Duration) {
    let _ = timeout(limit, async {
        while let Some(Ok(msg)) = stream.next().await {
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

    fn next_deadline(&self) -> Instant {
        let settings = self.tidings.config().heartbeat_settings();
        self.heartbeat.deadline(settings)
    }

    fn on_deadline(&mut self) -> Due {
        let settings = self.tidings.config().heartbeat_settings();
        self.heartbeat.on_deadline(settings, Instant::now())
    }

    /// Applies the rate limit to one inbound message: whether to handle it.
    fn admit(&mut self) -> bool {
        self.hub.metrics().message_in();
        match self
            .rate
            .check(self.tidings.config().rate_settings(), Instant::now())
        {
            Verdict::Allow => true,
            Verdict::Drop => {
                self.hub.metrics().rate_limited();
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
            Verdict::Drop => self.hub.metrics().rate_limited(),
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
                    self.hub.unsubscribe(topic.as_str(), self.id);
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
            self.hub.unsubscribe(topic.as_str(), self.id);
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
        if !self.presence.contains(topic) {
            self.presence.push(topic.clone());
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
        if let Some(i) = self.presence.iter().position(|t| t == topic) {
            self.presence.swap_remove(i);
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
                .then(|| self.hub.memory_position(topic.as_str()))
                .flatten();
            let start = presence.map(|mode| self.watch(&topic, mode));
            self.reply(&WSReply::subscribed_at(topic, since.map(|_| false), at));
            if let Some(start) = start {
                start.run();
            }
            return;
        }
        {
            if self.topics.len() >= self.max_subscriptions {
                let error = WSError {
                    details: Some(format!(
                        "at most {} topics per connection",
                        self.max_subscriptions
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
            match self.hub.external_broker() {
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
                    self.hub
                        .subscribe_with_position(&topic, self.id, &self.outbox, |at| {
                            ack_text(&WSReply::subscribed_at(topic.clone(), None, Some(at)))
                        });
                    run_presence(start);
                }
                // Subscribe before confirming: once the client reads "subscribed", every
                // later event of the topic reaches it.
                None => {
                    self.hub.subscribe(&topic, self.id, &self.outbox);
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
        match self.hub.external_broker() {
            // In memory: the same park → read → merge, in one step (the history answers at
            // once, so no task is needed).
            None => {
                self.hub
                    .subscribe_since(&topic, self.id, &self.outbox, &since, ack);
                run_presence(start);
            }
            // Redis: park the connection (live events are held back), fetch the history,
            // then replay and merge. The reader goes on meanwhile.
            Some(broker) => {
                let config = self.tidings.config();
                let slots = self
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
                if slots.outstanding.fetch_add(1, Ordering::Relaxed) >= self.max_subscriptions {
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
                let hub = self.hub.clone();
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
        let hub = self.hub.clone();
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
        for topic in self.topics.drain(..) {
            self.hub.unsubscribe(topic.as_str(), self.id);
        }
        for topic in self.presence.drain(..) {
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

/// The connection's single writer: sends queued frames in batches until the connection must
/// close, then sends the close frame. Settings are read from `tidings` when needed rather than
/// copied, to keep this long-lived future small.
pub(crate) async fn write_loop<S>(mut sink: S, outbox: Arc<Outbox>, tidings: Tidings)
where
    S: futures_util::Sink<Message> + Unpin,
{
    let mut batch: Vec<Utf8Bytes> = Vec::new();
    let mut last_flush: Option<Instant> = None;
    // Created once: every writer waits on the same token, and registering with it for each
    // batch would put one shared lock on the hot path.
    let cancelled = tidings.shutdown_token().cancelled();
    tokio::pin!(cancelled);
    loop {
        let mut close = tokio::select! {
            // Checked first so that a busy connection still gets its 1012 promptly.
            biased;
            () = &mut cancelled => Some(CloseCode::ServiceRestart),
            close = outbox.next_batch(&mut batch) => close,
        };
        if close.is_none() {
            if let Some(last) = last_flush {
                // A connection that flushed less than `write_delay` ago is busy: wait out the
                // rest of the delay so that the events arriving meanwhile share one write. An
                // idle connection (the common case) is written to at once.
                let until = last + tidings.config().write_delay;
                if Instant::now() < until {
                    // Boxed: only a busy connection needs the timer.
                    Box::pin(sleep_until(until)).await;
                    close = outbox.take_now(&mut batch);
                }
            }
        }
        if !batch.is_empty() {
            tidings.hub().metrics().messages_out(batch.len());
            if write_batch(&mut sink, &mut batch).await.is_err() {
                // The socket is broken: make the reader stop too.
                outbox.close(CloseCode::Normal);
                return;
            }
            if batch.capacity() > RETAINED_BATCH {
                batch.shrink_to(RETAINED_BATCH);
            }
            if !tidings.config().write_delay.is_zero() {
                last_flush = Some(Instant::now());
            }
        }
        if close.is_none()
            && outbox.take_ping()
            && sink.send(Message::Ping(Bytes::new())).await.is_err()
        {
            outbox.close(CloseCode::Normal);
            return;
        }
        if let Some(code) = close {
            // Pushes fail from now on, and the reader stops reading.
            outbox.close(code);
            // Boxed: only a closing connection needs the timer and the close frame.
            Box::pin(send_close(&mut sink, code, tidings.config().close_timeout)).await;
            return;
        }
    }
}

/// Sends the close frame for `code`, at most `limit`.
async fn send_close<S>(sink: &mut S, code: CloseCode, limit: Duration)
where
    S: futures_util::Sink<Message> + Unpin,
{
    let _ = timeout(limit, async {
        if code == CloseCode::Normal {
            // The reader ended (the peer closed or vanished): only flush what tungstenite
            // queued itself, such as its close reply.
            let _ = sink.flush().await;
        } else {
            let frame = CloseFrame {
                code: code.code(),
                reason: Utf8Bytes::from_static(code.reason()),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
    })
    .await;
}

/// Feeds every frame of `batch` to the socket and flushes once (tungstenite writes to the
/// socket on its own whenever more than its configured write buffer size is buffered).
async fn write_batch<S>(sink: &mut S, batch: &mut Vec<Utf8Bytes>) -> Result<(), S::Error>
where
    S: futures_util::Sink<Message> + Unpin,
{
    for text in batch.drain(..) {
        sink.feed(Message::Text(text)).await?;
    }
    sink.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::PollSender;

    #[tokio::test]
    async fn writer_sends_in_order_then_closes_on_shutdown() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(16);
        let tx = PollSender::new(tx);
        let outbox = Arc::new(Outbox::new(16));
        let tidings = Tidings::new(crate::Config::new("secret"));
        outbox.push("a".into()).unwrap();
        outbox.push("b".into()).unwrap();
        let writer = tokio::spawn(write_loop(tx, outbox.clone(), tidings.clone()));
        assert_eq!(rx.recv().await, Some(Message::Text("a".into())));
        assert_eq!(rx.recv().await, Some(Message::Text("b".into())));
        tidings.shutdown();
        writer.await.unwrap();
        match rx.recv().await {
            Some(Message::Close(Some(frame))) => assert_eq!(frame.code, 1012),
            other => panic!("expected a close frame, got {other:?}"),
        }
        assert!(outbox.is_closed());
    }
}
#[cfg(test)]
mod write_delay_tests {
    use std::pin::Pin;
    use std::sync::Mutex;
    use std::task::{Context, Poll};

    use super::*;

    /// A sink that records which messages went out in the same flush.
    #[derive(Clone, Default)]
    struct Recorder {
        flushed: Arc<Mutex<Vec<Vec<String>>>>,
        pending: Arc<Mutex<Vec<String>>>,
    }

    impl futures_util::Sink<Message> for Recorder {
        type Error = std::convert::Infallible;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
            if let Message::Text(text) = item {
                self.pending.lock().unwrap().push(text.to_string());
            }
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            let batch = std::mem::take(&mut *self.pending.lock().unwrap());
            if !batch.is_empty() {
                self.flushed.lock().unwrap().push(batch);
            }
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.poll_flush(cx)
        }
    }

    async fn batches_with(write_delay: Duration) -> Vec<Vec<String>> {
        let sink = Recorder::default();
        let outbox = Arc::new(Outbox::new(16));
        let tidings = Tidings::new(crate::Config::new("secret").with_write_delay(write_delay));
        let writer = tokio::spawn(write_loop(sink.clone(), outbox.clone(), tidings.clone()));
        for text in ["a", "b", "c"] {
            outbox.push(text.into()).unwrap();
            // Let the writer take what is queued (and, when delayed, start waiting).
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        tidings.shutdown();
        writer.await.unwrap();
        sink.flushed.lock().unwrap().clone()
    }

    #[tokio::test(start_paused = true)]
    async fn without_delay_every_wake_is_written_at_once() {
        assert_eq!(batches_with(Duration::ZERO).await, [["a"], ["b"], ["c"]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_waits_out_the_delay_and_batches() {
        // "a" goes out at once (the connection was idle); "b" arrives within the delay, so the
        // writer waits, and "c" joins it in one write.
        assert_eq!(
            batches_with(Duration::from_millis(10)).await,
            [vec!["a"], vec!["b", "c"]]
        );
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    fn size3<A, B, C, F: std::future::Future>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn size4<A, B, C, D, F: std::future::Future>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every idle connection keeps these two futures alive (inside its two tasks), so their
    /// size is memory per connection; a change that makes them balloon should be a choice.
    #[test]
    fn per_connection_futures_stay_small() {
        let reader = size4(run);
        let writer = size3(write_loop::<Sink>);
        // 640 rather than the earlier 512: each connection now also carries its rate bucket,
        // its heartbeat deadlines and its claims (issue 6, about 80 bytes).
        assert!(reader <= 640, "reader future is {reader} bytes");
        assert!(writer <= 512, "writer future is {writer} bytes");
        assert!(std::mem::size_of::<Outbox>() <= 192);
    }
}
