//! The Redis broker: scale-out over several nodes, with seq, epoch and history kept in Redis.
//!
//! Per topic `T` Redis holds two keys (the `{T}` hash tag keeps them in one cluster slot):
//! `tidings:{T}:meta`, a hash with the stream's `epoch` (set once with `HSETNX` to a random
//! value), its last `seq` (`HINCRBY`) and the time of its last event (`at`, unix ms, for the
//! check after a pub/sub break), and `tidings:{T}:hist`, a list of the last N events
//! as `seq \n unix-ms \n audience \n json`, trimmed with `LTRIM`. One Lua script per publish
//! numbers the event, splices `seq`/`epoch` into its JSON, appends it to the history, refreshes
//! both keys' TTL (the history's max age: a topic idle for longer forgets its keys, and its next
//! event starts a new epoch) and `PUBLISH`es it on the topic's channel `tidings:{T}:ch` as
//! `seq \n epoch \n topic \n audience \n json`, atomically, so every node following the topic
//! receives its events in `seq` order. `audience` is one line: empty for every subscriber, else
//! the event's [`Audience`] as compact JSON (`{"exclude_connection":…,"only_users":[…],
//! "exclude_users":[…]}`, see [`Audience::encode`]); each node applies it to its own subscribers,
//! live and in replays. (Nodes of one cluster must run the same format: an older node reads the
//! audience line as part of the JSON.)
//!
//! The same channel carries the topic's presence changes (issue 15, `presence::redis`), told apart
//! by their first line `p`; the listener hands them to [`Deliver::presence`].
//!
//! A node hears only what it serves: it subscribes to a topic's channel when the topic gets
//! its first local subscriber and unsubscribes when the last one leaves ([`Broker::follow`],
//! applied by the listener in pipelined batches; after a reconnect every followed topic is
//! subscribed again before anything is checked or delivered). A new subscriber is confirmed,
//! and a recovering one's history fetched, only once its topic's subscription is in effect
//! ([`Broker::ready`]): an event published after the ack (or after the history read) always
//! reaches it. A node with no subscriber of a topic receives nothing of it.
//!
//! Every node, the publishing one included, delivers events to its local subscribers from its
//! pub/sub subscription only: delivering its own publications directly could overtake an
//! earlier event of the same topic published on another node and still in flight. So
//! `delivered` (the result of a publish) is the number of local connections subscribed to the
//! topic when Redis took the event: they receive it through the node's subscription.
//!
//! Recovery reads only what a client misses: the history script computes where the events
//! after `since` start in the list and returns nothing when the client is up to date, and a
//! replay larger than half a connection's outbound budget ([`ReplayBound`]) is answered
//! `recovered: false` without being read. At most [`Config::with_max_history_fetches`]
//! fetches run at once per node (a fetch that waits longer than `REDIS_TIMEOUT` for a slot
//! answers `recovered: false`); each connection runs a few at a time and queues the rest
//! ([`Config::with_max_history_fetches_per_connection`]).
//!
//! Redis unavailable: publishing fails with [`BrokerError::Unavailable`] (`POST /publish`
//! answers 503), the pub/sub listener retries every few hundred milliseconds (backing off
//! to `MAX_RETRY`) and [`Broker::degraded`] says so; WebSocket connections stay up.
//!
//! No silent loss when the subscription breaks (Redis restarted, `CLIENT KILL TYPE pubsub`, a
//! dropped connection): once subscribed again, and before it delivers anything new, the
//! listener reads every local topic's `epoch`/`seq` from Redis (pipelined, `RESYNC_BATCH`
//! topics per round trip) and, for each topic this node had delivered events of:
//! - same epoch, further on: replays the missed events from the history to the local
//!   subscribers, in order, exactly once (later live duplicates are dropped by `seq`);
//! - history cannot cover them (trimmed, expired, over the bound), or the stream is gone or
//!   started over (Redis lost its data): closes the topic's local subscribers with **1013**
//!   (try again later). A client reconnects and resubscribes with `since`, which either
//!   recovers or answers `recovered: false` (refetch);
//! - a topic this node has subscribers of but no event yet, whose last event was published
//!   after the subscription was last known to deliver (minus `RESYNC_MARGIN`): 1013 too.
//!
//! Live events skipping numbers (a lost pub/sub message) are repaired the same way before
//! the next one is delivered, and a new epoch that starts past `seq` 1 on a topic this node
//! had delivered events of closes its subscribers with 1013 (see [`Deliver::deliver`]). The listener does this inline, so events
//! of other topics wait meanwhile (normally a few milliseconds; each command is bounded by
//! `REDIS_TIMEOUT`, and a failure restarts the subscription and the check). The link is
//! pinged every `PUBSUB_PING`, so one that hangs without an error counts as a break too.
//!
//! [`Config::with_max_history_fetches`]: crate::Config::with_max_history_fetches
//! [`Config::with_max_history_fetches_per_connection`]: crate::Config::with_max_history_fetches_per_connection

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink};
use redis::{AsyncConnectionConfig, Client, Script};
use tidings_protocol::{StreamPosition, Topic};
use tokio_util::sync::CancellationToken;

use crate::audience::Audience;

use super::{
    BoxFuture, Broker, BrokerError, Deliver, Delivered, HistoryLimits, Published, Recovery,
    ReplayBound, new_epoch,
};

/// Channel subscriptions sent to Redis in one pipelined round trip.
const FOLLOW_BATCH: usize = 512;
/// How long connecting to Redis, or one command, may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest pause between two attempts to restore the pub/sub subscription.
pub(crate) const MAX_RETRY: Duration = Duration::from_secs(2);
/// How often the pub/sub link is pinged: one that hangs without an error (a silent network
/// failure) is noticed within this plus [`REDIS_TIMEOUT`], then restored and checked.
const PUBSUB_PING: Duration = Duration::from_secs(5);
/// Topics whose position one pipelined round trip reads after the subscription comes back.
const RESYNC_BATCH: usize = 512;
/// Slack for events in flight: a topic with no position on this node counts as
/// affected by a break when its last event is younger than the time since the subscription
/// was last known to deliver (last event or ping answered) plus this.
const RESYNC_MARGIN: Duration = Duration::from_secs(2);

const PUBLISH: &str = r#"
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[2])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local json = string.sub(ARGV[1], 1, -2) .. ',"seq":' .. seq .. ',"epoch":"' .. epoch .. '"}'
redis.call('HSET', KEYS[1], 'at', string.format('%d', ms))
local size = tonumber(ARGV[3])
if size > 0 then
  redis.call('RPUSH', KEYS[2], seq .. '\n' .. string.format('%d', ms) .. '\n' .. ARGV[7] .. '\n' .. json)
  redis.call('LTRIM', KEYS[2], -size, -1)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[5], seq .. '\n' .. epoch .. '\n' .. ARGV[6] .. '\n' .. ARGV[7] .. '\n' .. json)
return {seq, epoch}
"#;

/// The events after `since` (ARGV: epoch, seq, most events, most bytes), as
/// `[epoch, last seq, now ms, status, entries...]`. Every publish appends exactly one entry
/// in the script that numbers it, so the list's tail holds `last - n + 1 ..= last` and the
/// entries after `since` are its last `last - since`: only those are read, in chunks, and
/// the read stops (status `big`, no entries) as soon as the byte bound is passed. Nothing is
/// read when the client is up to date, the epoch differs or the replay is over the count
/// bound.
const HISTORY: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
if not epoch then return {'', '0', now, 'gone'} end
local last = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local out = {epoch, string.format('%d', last), now, 'ok'}
local since = tonumber(ARGV[2])
if epoch ~= ARGV[1] or since >= last then return out end
local need = last - since
if need > tonumber(ARGV[3]) then out[4] = 'big' return out end
if redis.call('LLEN', KEYS[2]) < need then out[4] = 'trimmed' return out end
local budget = tonumber(ARGV[4])
local from = -need
while from <= -1 do
  local to = math.min(from + 63, -1)
  for _, e in ipairs(redis.call('LRANGE', KEYS[2], from, to)) do
    budget = budget - #e
    if budget < 0 then return {out[1], out[2], out[3], 'big'} end
    out[#out + 1] = e
  end
  from = to + 1
end
return out
"#;

/// The position of a topic (ARGV: a new epoch, the key TTL in ms) as `[epoch, last seq]`. A
/// topic without a stream gets its epoch now (with the history's TTL, as a publish would), so
/// that "no event yet" is a position the next publish continues from: its first event is
/// `seq` 1 of this epoch and a client resuming from `{0, epoch}` is replayed it.
const POSITION: &str = r#"
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return {redis.call('HGET', KEYS[1], 'epoch'), redis.call('HGET', KEYS[1], 'seq') or '0'}
"#;

/// The Redis broker (see the module docs).
pub struct RedisBroker {
    client: Client,
    /// The command connection, re-established on the next call after it broke.
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    publish: Script,
    history: Script,
    position: Script,
    limits: HistoryLimits,
    /// The most a repair replays to this node's subscribers (the configured outbound budget).
    repair_bound: ReplayBound,
    /// The history fetches of subscribes with `since` in flight on this node.
    fetches: tokio::sync::Semaphore,
    /// Whether this node's pub/sub subscription is up.
    listening: AtomicBool,
    /// Whether the last command failed for want of Redis.
    failing: AtomicBool,
    /// Topics whose following changed since the listener last applied them, and the
    /// subscribers waiting for that (see [`Broker::ready`]).
    follows: Mutex<Follows>,
    /// Wakes the listener when `follows` has something to apply.
    follows_changed: tokio::sync::Notify,
    /// [`Broker::follow`] calls so far, and how many of them are in effect.
    follows_asked: AtomicU64,
    follows_applied: AtomicU64,
}

/// See [`RedisBroker::follows`]. A set, so that churn on one topic while Redis is away
/// costs one entry, and the set is emptied by the next (re)subscription.
#[derive(Default)]
struct Follows {
    changed: HashSet<Topic>,
    waiters: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("degraded", &self.degraded())
            .finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// A broker for the Redis at `url`; nothing connects until it is used. `max_fetches`
    /// bounds the history fetches in flight; `repair_bound` is the outbound budget's share a
    /// repair after a pub/sub break may replay.
    pub fn new(
        url: &str,
        limits: HistoryLimits,
        max_fetches: usize,
        repair_bound: ReplayBound,
    ) -> Result<Self, BrokerError> {
        let client = Client::open(url)
            .map_err(|e| BrokerError::Unavailable(format!("invalid Redis URL: {e}")))?;
        Ok(Self {
            client,
            conn: tokio::sync::Mutex::new(None),
            publish: Script::new(PUBLISH),
            history: Script::new(HISTORY),
            position: Script::new(POSITION),
            limits,
            repair_bound,
            fetches: tokio::sync::Semaphore::new(max_fetches.max(1)),
            listening: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            follows: Mutex::new(Follows::default()),
            follows_changed: tokio::sync::Notify::new(),
            follows_asked: AtomicU64::new(0),
            follows_applied: AtomicU64::new(0),
        })
    }

    /// A broker for the Redis at `url` with the settings of `config` (history limits, fetch
    /// bounds, the outbound budget a repair may replay), once Redis answered a `PING`: what
    /// [`Tidings::builder`](crate::Tidings::builder) takes.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] for an invalid URL or a Redis that does not answer within
    /// two seconds.
    pub async fn connect(url: &str, config: &crate::Config) -> Result<Self, BrokerError> {
        let broker = Self::from_config(url, config)?;
        let mut conn = broker.connection().await?;
        let pong: Result<String, _> = redis::cmd("PING").query_async(&mut conn).await;
        pong.map_err(|e| broker.failed(e))?;
        broker.failing.store(false, Ordering::Relaxed);
        Ok(broker)
    }

    /// A broker for the Redis at `url` with the settings of `config`; nothing connects until
    /// it is used (what `Config::with_redis_url` makes).
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] for an invalid URL.
    pub fn from_config(url: &str, config: &crate::Config) -> Result<Self, BrokerError> {
        Self::new(
            url,
            HistoryLimits::from_config(config),
            config.max_history_fetches,
            ReplayBound::for_outbox(
                config.buffers.outbound_queue_capacity,
                config.buffers.max_outbound_bytes,
            ),
        )
    }

    fn follows(&self) -> std::sync::MutexGuard<'_, Follows> {
        self.follows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes what is to be applied: the count of follow calls it covers, the changed topics
    /// and the waiters.
    fn take_follows(&self) -> (u64, HashSet<Topic>, Vec<tokio::sync::oneshot::Sender<()>>) {
        let mut follows = self.follows();
        let asked = self.follows_asked.load(Ordering::SeqCst);
        (
            asked,
            std::mem::take(&mut follows.changed),
            std::mem::take(&mut follows.waiters),
        )
    }

    /// Subscribes to (and unsubscribes from) the channels of the topics whose following
    /// changed, as the hub has them now (a topic that changes again meanwhile is in the next
    /// batch), then releases the subscribers waiting for them.
    async fn apply_follows(&self, hub: &dyn Deliver, sink: &PubSubSink) -> Result<(), String> {
        let (asked, changed, waiters) = self.take_follows();
        let (on, off): (Vec<_>, Vec<_>) = changed
            .iter()
            .map(|topic| (channel(topic.as_str()), hub.is_followed(topic.as_str())))
            .partition(|(_, on)| *on);
        send_follows(sink, on.into_iter().map(|(c, _)| c).collect(), true).await?;
        send_follows(sink, off.into_iter().map(|(c, _)| c).collect(), false).await?;
        self.follows_applied.store(asked, Ordering::SeqCst);
        for waiter in waiters {
            let _ = waiter.send(());
        }
        Ok(())
    }

    async fn connection(&self) -> Result<MultiplexedConnection, BrokerError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT);
        match self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => {
                *slot = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Records a failed command; a broken connection is dropped so the next call reconnects.
    fn failed(&self, e: redis::RedisError) -> BrokerError {
        self.failing.store(true, Ordering::Relaxed);
        BrokerError::Unavailable(e.to_string())
    }

    async fn forget_connection(&self, e: &redis::RedisError) {
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.is_unrecoverable_error()
        {
            *self.conn.lock().await = None;
        }
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.limits.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Runs the pub/sub listener until `stop`: subscribes to the channel of every topic with
    /// local subscribers (and follows the changes), hands every event to `hub`, and
    /// re-subscribes after any failure.
    async fn listen(self: Arc<Self>, hub: Arc<dyn Deliver>, stop: CancellationToken) {
        let mut retry = Duration::from_millis(100);
        // The last moment this node's subscription was known to be delivering (its start,
        // then the last event or ping answered): events after it may have been missed.
        let mut alive_at = std::time::Instant::now();
        loop {
            let session = async {
                let pubsub = tokio::time::timeout(REDIS_TIMEOUT, self.client.get_async_pubsub())
                    .await
                    .map_err(|_| "connect timed out".to_owned())?
                    .map_err(|e| e.to_string())?;
                let (sink, mut messages) = pubsub.split();
                // Every topic followed now: what changes later is in `follows` again.
                let (asked, _, waiters) = self.take_follows();
                let channels = hub
                    .external_positions()
                    .iter()
                    .map(|(topic, _)| channel(topic.as_str()))
                    .chain([CONTROL_CHANNEL.to_owned()])
                    .collect();
                send_follows(&sink, channels, true).await?;
                // Revocations sent while this node was not listening (or before it started).
                self.replay_kept_control(&*hub).await?;
                // Every event from here on arrives through `messages` (buffered meanwhile);
                // what was published while it was down is repaired first.
                self.resync(&hub, alive_at.elapsed()).await?;
                alive_at = std::time::Instant::now();
                self.follows_applied.store(asked, Ordering::SeqCst);
                for waiter in waiters {
                    let _ = waiter.send(());
                }
                self.listening.store(true, Ordering::Relaxed);
                // Redis answers again: the next command reconnects if it must.
                self.failing.store(false, Ordering::Relaxed);
                tracing::info!("redis pub/sub subscribed");
                // Presence changes sent while the link was down are lost: every watcher here
                // gets a fresh snapshot.
                hub.presence_lost();
                let mut check = tokio::time::interval_at(
                    tokio::time::Instant::now() + PUBSUB_PING,
                    PUBSUB_PING,
                );
                loop {
                    tokio::select! {
                        msg = messages.next() => match msg {
                            Some(msg) => {
                                alive_at = std::time::Instant::now();
                                if msg.get_channel_name() == CONTROL_CHANNEL {
                                    hub.control(msg.get_payload_bytes());
                                } else if msg.get_payload_bytes().starts_with(PRESENCE_PREFIX) {
                                    // A presence change on the topic's channel (issue 15).
                                    hub.presence(msg.get_payload_bytes());
                                } else {
                                    self.deliver(&hub, msg.get_payload_bytes()).await?;
                                }
                            }
                            None => break,
                        },
                        // A topic got its first local subscriber or lost its last one.
                        () = self.follows_changed.notified() => {
                            self.apply_follows(&hub, &sink).await?;
                        }
                        _ = check.tick() => {
                            // A link that hangs without an error would lose events silently.
                            let sent = std::time::Instant::now();
                            tokio::time::timeout(REDIS_TIMEOUT, sink.clone().ping::<redis::Value>())
                                .await
                                .map_err(|_| "pub/sub ping timed out".to_owned())?
                                .map_err(|e| e.to_string())?;
                            // Everything published before the ping has been received.
                            alive_at = sent;
                        }
                    }
                }
                Err::<(), String>("pub/sub connection closed".to_owned())
            };
            let result = tokio::select! {
                // The server is shutting down (or the handle was dropped): stop listening.
                () = stop.cancelled() => return,
                result = session => result,
            };
            let was_up = self.listening.swap(false, Ordering::Relaxed);
            if let Err(e) = result {
                if was_up {
                    tracing::warn!(error = %e, "redis pub/sub lost; retrying");
                    retry = Duration::from_millis(100);
                } else {
                    tracing::debug!(error = %e, "redis pub/sub still unavailable");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(MAX_RETRY);
        }
    }

    /// Hands one pub/sub message (`seq \n epoch \n topic \n audience \n json`) to the hub; when the
    /// topic's numbers skip (a message was lost), repairs first. An error means Redis failed
    /// during the repair: the subscription restarts (and checks every topic again).
    async fn deliver(&self, hub: &dyn Deliver, payload: &[u8]) -> Result<(), String> {
        let Some((seq, epoch, topic, audience, json)) = parse_message(payload) else {
            tracing::warn!("ignoring a malformed pub/sub message");
            return Ok(());
        };
        let text = Utf8Bytes::from(json.to_owned());
        if let Delivered::Gap(from) = hub.deliver(topic, seq, epoch, text.clone(), &audience) {
            tracing::warn!(
                topic,
                from = from.seq,
                seq,
                "pub/sub skipped events; replaying them from the history"
            );
            self.repair(hub, topic, &from).await?;
            // Already in the replay (dropped), or the first event after an abandoned stream.
            hub.deliver(topic, seq, epoch, text, &audience);
        }
        Ok(())
    }

    /// Replays the events of `topic` after `from` to the local subscribers (see
    /// [`Deliver::repair`]).
    async fn repair(
        &self,
        hub: &dyn Deliver,
        topic: &str,
        from: &StreamPosition,
    ) -> Result<(), String> {
        let recovery = self
            .fetch(topic, from, self.repair_bound)
            .await
            .map_err(|e| e.to_string())?;
        hub.repair(topic, from, recovery);
        Ok(())
    }

    /// After (re)subscribing: compares every local topic's delivered position with Redis and
    /// repairs or abandons the ones that moved while the subscription was down (`down_for`);
    /// see the module docs.
    /// Applies the live kept control commands (see [`KEPT_CONTROL`]) to this node: called once
    /// the control channel is subscribed, so a command is either read here or received live
    /// (applying one twice changes nothing).
    async fn replay_kept_control(&self, hub: &dyn Deliver) -> Result<(), String> {
        let mut conn = self.connection().await.map_err(|e| e.to_string())?;
        let read: Result<Vec<String>, _> = redis::cmd("ZRANGEBYSCORE")
            .arg(KEPT_CONTROL)
            .arg(unix_now())
            .arg("+inf")
            .arg("LIMIT")
            .arg(0)
            .arg(MAX_KEPT_CONTROL)
            .query_async(&mut conn)
            .await;
        let kept = match read {
            Ok(kept) => kept,
            Err(e) => {
                // A connection from before a Redis restart: the next attempt opens another.
                self.forget_connection(&e).await;
                return Err(e.to_string());
            }
        };
        for command in &kept {
            hub.control(command.as_bytes());
        }
        if !kept.is_empty() {
            tracing::debug!(commands = kept.len(), "kept control commands applied");
        }
        Ok(())
    }

    async fn resync(&self, hub: &dyn Deliver, down_for: Duration) -> Result<(), String> {
        let positions = hub.external_positions();
        if positions.is_empty() {
            return Ok(());
        }
        let window = millis(down_for + RESYNC_MARGIN);
        let (mut repaired, mut abandoned) = (0usize, 0usize);
        for batch in positions.chunks(RESYNC_BATCH) {
            let mut conn = self.connection().await.map_err(|e| e.to_string())?;
            let mut pipe = redis::pipe();
            pipe.cmd("TIME");
            for (topic, _) in batch {
                pipe.cmd("HMGET")
                    .arg(keys(topic.as_str()).0)
                    .arg("epoch")
                    .arg("seq")
                    .arg("at");
            }
            let replies: Vec<Vec<Option<String>>> = match pipe.query_async(&mut conn).await {
                Ok(replies) => replies,
                Err(e) => {
                    self.forget_connection(&e).await;
                    return Err(self.failed(e).to_string());
                }
            };
            let field = |reply: &Vec<Option<String>>, i: usize| {
                reply
                    .get(i)
                    .cloned()
                    .flatten()
                    .and_then(|v| v.parse::<u64>().ok())
            };
            let Some((time, metas)) = replies.split_first() else {
                return Err("empty pipeline reply".to_owned());
            };
            let now = field(time, 0)
                .unwrap_or(0)
                .saturating_mul(1000)
                .saturating_add(field(time, 1).unwrap_or(0) / 1000);
            for ((topic, pos), meta) in batch.iter().zip(metas) {
                let epoch = meta.first().cloned().flatten();
                let seq = field(meta, 1).unwrap_or(0);
                let known = pos.seq > 0;
                match epoch {
                    Some(epoch) if known && epoch == pos.epoch => {
                        if seq > pos.seq {
                            self.repair(hub, topic.as_str(), pos).await?;
                            repaired += 1;
                        } else if seq < pos.seq {
                            hub.abandon(topic.as_str());
                            abandoned += 1;
                        }
                    }
                    // The stream this node delivered is gone (Redis lost its data, or the
                    // keys expired) or started over: what it missed cannot be known.
                    _ if known => {
                        hub.abandon(topic.as_str());
                        abandoned += 1;
                    }
                    // No position here yet: affected when its last event may have fallen
                    // into the outage.
                    Some(_) => {
                        let recent =
                            field(meta, 2).is_none_or(|at| at.saturating_add(window) >= now);
                        if seq > 0 && recent {
                            hub.abandon(topic.as_str());
                            abandoned += 1;
                        }
                    }
                    None => {}
                }
            }
        }
        if repaired + abandoned > 0 {
            tracing::warn!(
                topics = positions.len(),
                repaired,
                abandoned,
                "redis pub/sub was down: missed events replayed, or subscribers closed with 1013"
            );
        }
        Ok(())
    }

    /// Runs the history script for `topic` after `since`, within `bound`.
    async fn fetch(
        &self,
        topic: &str,
        since: &StreamPosition,
        bound: ReplayBound,
    ) -> Result<Recovery, BrokerError> {
        let mut conn = self.connection().await?;
        let (meta, hist) = keys(topic);
        let result: Result<Vec<String>, _> = self
            .history
            .key(meta)
            .key(hist)
            .arg(&since.epoch)
            .arg(since.seq)
            .arg(bound.events)
            .arg(bound.bytes)
            .invoke_async(&mut conn)
            .await;
        match result {
            Ok(reply) => {
                self.failing.store(false, Ordering::Relaxed);
                Ok(recovery(&reply, since, self.ttl_ms()))
            }
            Err(e) => {
                self.forget_connection(&e).await;
                Err(self.failed(e))
            }
        }
    }
}

/// Splits one pub/sub message into `seq`, `epoch`, topic, audience and JSON text. A message
/// whose audience line cannot be read is malformed (never delivered to everyone instead).
fn parse_message(payload: &[u8]) -> Option<(u64, &str, &str, Audience, &str)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(5, '\n');
    let seq = parts.next()?.parse::<u64>().ok()?;
    let epoch = parts.next()?;
    let topic = parts.next()?;
    let audience = Audience::decode(parts.next()?)?;
    let json = parts.next()?;
    Some((seq, epoch, topic, audience, json))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The channel that carries `topic`'s events (its keys' hash tag: the same cluster slot).
/// The channel control commands (`POST /admin/…`) travel on to every node. Commands sent
/// while a node's pub/sub link is down do not reach it (pub/sub keeps nothing): a disconnect
/// finds its connections gone anyway (they reconnect to a node that got it, or were on the
/// cut-off node, see `docs/SECURITY.md`).
const CONTROL_CHANNEL: &str = "tidings:control";

/// The control commands that must outlive the pub/sub link (revocations: a command with an
/// `until`), as a sorted set scored by that time: a node reads the live ones every time its
/// pub/sub subscription starts (at startup, after any break), so a node started after a
/// revocation, or cut off while it was sent, still refuses the token. Expired members are
/// trimmed on every write.
const KEPT_CONTROL: &str = "tidings:control:kept";

/// Most kept control commands a node reads at (re)subscription: the default revocation store
/// size (`Config::with_max_revocations`); each node refuses more than its own bound anyway.
const MAX_KEPT_CONTROL: usize = 100_000;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The Redis key of an `Idempotency-Key` (`key` names its publisher and endpoint).
fn idempotency_key(key: &str) -> String {
    format!("tidings:idem:{key}")
}

/// How a presence message on a topic's channel starts (`presence::redis` writes them; an
/// event message starts with its `seq`).
const PRESENCE_PREFIX: &[u8] = b"p\n";

fn channel(topic: &str) -> String {
    format!("tidings:{{{topic}}}:ch")
}

/// Sends `SUBSCRIBE` (`on`) or `UNSUBSCRIBE` for each of `channels`, one channel per command
/// (each confirmation answers exactly its command), [`FOLLOW_BATCH`] per round trip.
async fn send_follows(sink: &PubSubSink, channels: Vec<String>, on: bool) -> Result<(), String> {
    for batch in channels.chunks(FOLLOW_BATCH) {
        let calls = batch.iter().map(|channel| {
            let mut sink = sink.clone();
            async move {
                if on {
                    sink.subscribe(channel).await
                } else {
                    sink.unsubscribe(channel).await
                }
            }
        });
        tokio::time::timeout(REDIS_TIMEOUT, futures_util::future::try_join_all(calls))
            .await
            .map_err(|_| "pub/sub (un)subscribe timed out".to_owned())?
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn keys(topic: &str) -> (String, String) {
    (
        format!("tidings:{{{topic}}}:meta"),
        format!("tidings:{{{topic}}}:hist"),
    )
}

impl Broker for RedisBroker {
    fn publish<'a>(
        &'a self,
        hub: &'a dyn Deliver,
        topic: Topic,
        base: String,
        audience: Audience,
    ) -> BoxFuture<'a, Result<Published, BrokerError>> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let mut conn = self.connection().await?;
            let (meta, hist) = keys(topic.as_str());
            let result: Result<(u64, String), _> = self
                .publish
                .key(meta)
                .key(hist)
                .arg(base)
                .arg(new_epoch())
                .arg(self.limits.size)
                .arg(self.ttl_ms())
                .arg(channel(topic.as_str()))
                .arg(topic.as_str())
                .arg(audience.encode())
                .invoke_async(&mut conn)
                .await;
            match result {
                Ok((seq, epoch)) => {
                    self.failing.store(false, Ordering::Relaxed);
                    let delivered = hub.admitted_count(topic.as_str(), &audience);
                    hub.published(delivered, started.elapsed());
                    Ok(Published {
                        topic,
                        seq,
                        epoch: epoch.into(),
                        delivered,
                    })
                }
                Err(e) => {
                    self.forget_connection(&e).await;
                    Err(self.failed(e))
                }
            }
        })
    }

    fn control(
        &self,
        command: String,
        keep_until: Option<u64>,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            let mut pipe = redis::pipe();
            if let Some(until) = keep_until {
                // Kept for the nodes that are not listening now (see `KEPT_CONTROL`).
                pipe.cmd("ZREMRANGEBYSCORE")
                    .arg(KEPT_CONTROL)
                    .arg("-inf")
                    .arg(unix_now())
                    .ignore()
                    .cmd("ZADD")
                    .arg(KEPT_CONTROL)
                    .arg(until)
                    .arg(&command)
                    .ignore();
            }
            pipe.cmd("PUBLISH").arg(CONTROL_CHANNEL).arg(&command);
            let sent: Result<(u64,), _> = pipe.query_async(&mut conn).await;
            match sent {
                Ok(_) => Ok(()),
                Err(e) => {
                    self.forget_connection(&e).await;
                    Err(self.failed(e))
                }
            }
        })
    }

    /// `SET tidings:idem:… "" NX PX ttl`: the first request claims the key (an empty value
    /// marks it in flight); any other reads what is there.
    fn claim_key(
        &self,
        key: String,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<Option<super::SharedClaim>, BrokerError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            let key = idempotency_key(&key);
            let claimed: Result<Option<String>, _> = redis::cmd("SET")
                .arg(&key)
                .arg("")
                .arg("NX")
                .arg("PX")
                .arg(millis(ttl).max(1))
                .query_async(&mut conn)
                .await;
            let claimed = match claimed {
                Ok(reply) => reply.is_some(),
                Err(e) => {
                    self.forget_connection(&e).await;
                    return Err(self.failed(e));
                }
            };
            if claimed {
                return Ok(Some(super::SharedClaim::New));
            }
            let held: Result<Option<String>, _> =
                redis::cmd("GET").arg(&key).query_async(&mut conn).await;
            match held {
                Ok(Some(answer)) if !answer.is_empty() => {
                    Ok(Some(super::SharedClaim::Done(answer)))
                }
                Ok(Some(_)) => Ok(Some(super::SharedClaim::InFlight)),
                // Expired or released between the two commands: this request may run.
                Ok(None) => Ok(Some(super::SharedClaim::New)),
                Err(e) => {
                    self.forget_connection(&e).await;
                    Err(self.failed(e))
                }
            }
        })
    }

    fn settle_key(
        &self,
        key: String,
        answer: Option<String>,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            let key = idempotency_key(&key);
            let done: Result<redis::Value, _> = match answer {
                Some(answer) => {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(answer)
                        .arg("XX")
                        .arg("PX")
                        .arg(millis(ttl).max(1))
                        .query_async(&mut conn)
                        .await
                }
                None => redis::cmd("DEL").arg(&key).query_async(&mut conn).await,
            };
            match done {
                Ok(_) => Ok(()),
                Err(e) => {
                    self.forget_connection(&e).await;
                    Err(self.failed(e))
                }
            }
        })
    }

    fn history<'a>(
        &'a self,
        _hub: &'a dyn Deliver,
        topic: &'a Topic,
        since: &'a StreamPosition,
        bound: ReplayBound,
    ) -> BoxFuture<'a, Result<Recovery, BrokerError>> {
        Box::pin(async move {
            // One of this node's fetch slots, or `recovered: false` (the caller's answer to
            // an error) rather than an ever longer queue in front of Redis.
            let _slot = tokio::time::timeout(REDIS_TIMEOUT, self.fetches.acquire())
                .await
                .map_err(|_| BrokerError::Unavailable("too many history fetches".to_owned()))?
                .map_err(|_| BrokerError::Unavailable("history fetches closed".to_owned()))?;
            self.fetch(topic.as_str(), since, bound).await
        })
    }

    fn position<'a>(
        &'a self,
        _hub: &'a dyn Deliver,
        topic: &'a Topic,
    ) -> BoxFuture<'a, Result<StreamPosition, BrokerError>> {
        Box::pin(async move {
            // Shares the node's history-fetch slots: a flood of subscribes asking for
            // positions waits its turn (then is acked without one) instead of piling up in
            // front of Redis.
            let _slot = tokio::time::timeout(REDIS_TIMEOUT, self.fetches.acquire())
                .await
                .map_err(|_| BrokerError::Unavailable("too many history fetches".to_owned()))?
                .map_err(|_| BrokerError::Unavailable("history fetches closed".to_owned()))?;
            let mut conn = self.connection().await?;
            let (meta, _) = keys(topic.as_str());
            let result: Result<(String, String), _> = self
                .position
                .key(meta)
                .arg(new_epoch())
                .arg(self.ttl_ms())
                .invoke_async(&mut conn)
                .await;
            match result {
                Ok((epoch, seq)) => {
                    self.failing.store(false, Ordering::Relaxed);
                    let seq = seq.parse::<u64>().map_err(|_| {
                        BrokerError::Unavailable(format!("bad seq in {topic}'s meta"))
                    })?;
                    Ok(StreamPosition { seq, epoch })
                }
                Err(e) => {
                    self.forget_connection(&e).await;
                    Err(self.failed(e))
                }
            }
        })
    }

    fn degraded(&self) -> Option<String> {
        if !self.listening.load(Ordering::Relaxed) {
            Some("redis pub/sub unavailable".to_owned())
        } else if self.failing.load(Ordering::Relaxed) {
            Some("redis commands failing".to_owned())
        } else {
            None
        }
    }

    fn start(self: Arc<Self>, local: Arc<dyn Deliver>, stop: CancellationToken) {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(self.listen(local, stop));
            }
            Err(_) => tracing::error!(
                "the Redis broker needs a tokio runtime: no events will be received"
            ),
        }
    }

    fn follow(&self, topic: &Topic, _on: bool) {
        // Whether to subscribe is read from the hub when applied: the last change wins.
        {
            let mut follows = self.follows();
            follows.changed.insert(topic.clone());
            self.follows_asked.fetch_add(1, Ordering::SeqCst);
        }
        self.follows_changed.notify_one();
    }

    fn following(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
            && self.follows_applied.load(Ordering::SeqCst)
                == self.follows_asked.load(Ordering::SeqCst)
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            {
                let mut follows = self.follows();
                // Waiters that gave up (Redis away for long) are dropped before they pile up.
                let waiting = follows.waiters.len();
                if waiting >= FOLLOW_BATCH && waiting.is_power_of_two() {
                    follows.waiters.retain(|w| !w.is_closed());
                }
                follows.waiters.push(tx);
            }
            self.follows_changed.notify_one();
            // Redis away: give up after a bounded wait; the repair after the outage covers
            // what this subscriber misses meanwhile.
            matches!(tokio::time::timeout(REDIS_TIMEOUT, rx).await, Ok(Ok(())))
        })
    }
}

/// Interprets the history script's reply `[epoch, last seq, now ms, status, entries...]`.
fn recovery(reply: &[String], since: &StreamPosition, ttl_ms: u64) -> Recovery {
    let failed = Recovery {
        recovered: false,
        events: Vec::new(),
    };
    let [epoch, last, now, status, entries @ ..] = reply else {
        return failed;
    };
    if status != "ok" {
        return failed;
    }
    let (Ok(last), Ok(now)) = (last.parse::<u64>(), now.parse::<u64>()) else {
        return failed;
    };
    if *epoch != since.epoch || since.seq > last {
        return failed;
    }
    let mut events = Vec::new();
    for entry in entries {
        let mut parts = entry.splitn(4, '\n');
        let (Some(seq), Some(at), Some(audience), Some(json)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return failed;
        };
        let (Ok(seq), Ok(at), Some(audience)) = (
            seq.parse::<u64>(),
            at.parse::<u64>(),
            Audience::decode(audience),
        ) else {
            return failed;
        };
        if seq > since.seq && at.saturating_add(ttl_ms) >= now {
            events.push((seq, Utf8Bytes::from(json.to_owned()), audience));
        }
    }
    let expected = last - since.seq;
    let contiguous = events.first().is_none_or(|(s, _, _)| *s == since.seq + 1)
        && events.len() as u64 == expected;
    if contiguous {
        Recovery {
            recovered: true,
            events,
        }
    } else {
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(seq: u64) -> StreamPosition {
        StreamPosition {
            seq,
            epoch: "e".into(),
        }
    }

    fn reply(last: u64, entries: &[(u64, u64)]) -> Vec<String> {
        let mut r = vec![
            "e".to_owned(),
            last.to_string(),
            "10000".to_owned(),
            "ok".to_owned(),
        ];
        r.extend(
            entries
                .iter()
                .map(|(s, at)| format!("{s}\n{at}\n\n{{\"seq\":{s}}}")),
        );
        r
    }

    #[test]
    fn recovery_rules() {
        let full = reply(3, &[(1, 9000), (2, 9500), (3, 9900)]);
        let r = recovery(&full, &pos(1), 5000);
        assert!(r.recovered);
        assert_eq!(r.events.iter().map(|e| e.0).collect::<Vec<_>>(), [2, 3]);
        assert!(recovery(&full, &pos(3), 5000).recovered);
        assert!(!recovery(&full, &pos(4), 5000).recovered);
        // Trimmed: only 2..=3 left, since 0 needs 1.
        assert!(!recovery(&reply(3, &[(2, 9000), (3, 9000)]), &pos(0), 5000).recovered);
        // Expired by age: 1 is older than the TTL.
        assert!(!recovery(&full, &pos(0), 800).recovered);
        // Another epoch (or none: the keys expired).
        let mut other = full.clone();
        other[0] = "x".into();
        assert!(!recovery(&other, &pos(1), 5000).recovered);
        // Over the bound, or trimmed: the script says so and returns nothing.
        let mut big = full.clone();
        big[3] = "big".into();
        assert!(!recovery(&big, &pos(1), 5000).recovered);
    }

    #[test]
    fn pub_sub_messages_parse() {
        assert_eq!(
            parse_message(b"7\nab\nlist:1\n\n{\"a\":\"x\ny\"}"),
            Some((7, "ab", "list:1", Audience::everyone(), "{\"a\":\"x\ny\"}"))
        );
        assert_eq!(
            parse_message(b"7\nab\nlist:1\n{\"exclude_users\":[\"7\"]}\n{}"),
            Some((
                7,
                "ab",
                "list:1",
                Audience::everyone().exclude_users(["7"]),
                "{}"
            ))
        );
        // An audience that cannot be read is never taken as everyone.
        assert_eq!(parse_message(b"7\nab\nlist:1\n{oops\n{}"), None);
        assert_eq!(parse_message(b"x\nab\nlist:1\n{}"), None);
        assert_eq!(parse_message(b"7\nab"), None);
    }
}
