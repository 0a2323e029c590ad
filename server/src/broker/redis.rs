//! The Redis broker: scale-out over several nodes, with seq, epoch and history kept in Redis.
//!
//! Per topic `T` Redis holds two keys (the `{T}` hash tag keeps them in one cluster slot):
//! `tidings:{T}:meta`, a hash with the stream's `epoch` (set once with `HSETNX` to a random
//! value) and its last `seq` (`HINCRBY`), and `tidings:{T}:hist`, a list of the last N events
//! as `seq \n unix-ms \n json`, trimmed with `LTRIM`. One Lua script per publish numbers the
//! event, splices `seq`/`epoch` into its JSON, appends it to the history, refreshes both
//! keys' TTL (the history's max age: a topic idle for longer forgets its keys, and its next
//! event starts a new epoch) and `PUBLISH`es it on the channel `tidings:events`, atomically,
//! so every node receives every topic's events in `seq` order.
//!
//! Every node, the publishing one included, delivers events to its local subscribers from its
//! pub/sub subscription only: delivering its own publications directly could overtake an
//! earlier event of the same topic published on another node and still in flight. So
//! `delivered` (the result of a publish) is the number of local connections subscribed to the
//! topic when Redis took the event: they receive it through the node's subscription.
//!
//! Redis unavailable: publishing fails with [`BrokerError::Unavailable`] (`POST /publish`
//! answers 503), the pub/sub listener retries every few hundred milliseconds (backing off
//! to [`MAX_RETRY`]) and [`Broker::degraded`] says so; WebSocket connections are not touched.
//! Events published on other nodes while this node's subscription was down are not delivered
//! live to its clients; they get them on their next reconnect with `since`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Script};
use tidings_protocol::{StreamPosition, Topic};
use tokio_util::sync::CancellationToken;

use super::{BoxFuture, Broker, BrokerError};
use crate::hub::{HistoryLimits, Hub, Recovery, new_epoch};

/// The pub/sub channel every node listens on.
const CHANNEL: &str = "tidings:events";
/// How long connecting to Redis, or one command, may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest pause between two attempts to restore the pub/sub subscription.
pub(crate) const MAX_RETRY: Duration = Duration::from_secs(2);

const PUBLISH: &str = r#"
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[2])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local json = string.sub(ARGV[1], 1, -2) .. ',"seq":' .. seq .. ',"epoch":"' .. epoch .. '"}'
local size = tonumber(ARGV[3])
if size > 0 then
  redis.call('RPUSH', KEYS[2], seq .. '\n' .. string.format('%d', ms) .. '\n' .. json)
  redis.call('LTRIM', KEYS[2], -size, -1)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[5], seq .. '\n' .. epoch .. '\n' .. ARGV[6] .. '\n' .. json)
return seq
"#;

const HISTORY: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if not epoch then return {'', '0', string.format('%d', ms)} end
local seq = redis.call('HGET', KEYS[1], 'seq') or '0'
local out = {epoch, seq, string.format('%d', ms)}
if epoch == ARGV[1] then
  for _, e in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do out[#out + 1] = e end
end
return out
"#;

/// The Redis broker (see the module docs).
pub(crate) struct RedisBroker {
    client: Client,
    /// The command connection, re-established on the next call after it broke.
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    publish: Script,
    history: Script,
    limits: HistoryLimits,
    /// Whether this node's pub/sub subscription is up.
    listening: AtomicBool,
    /// Whether the last command failed for want of Redis.
    failing: AtomicBool,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("degraded", &self.degraded())
            .finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// A broker for the Redis at `url`; nothing connects until it is used.
    pub(crate) fn new(url: &str, limits: HistoryLimits) -> Result<Self, BrokerError> {
        let client = Client::open(url)
            .map_err(|e| BrokerError::Unavailable(format!("invalid Redis URL: {e}")))?;
        Ok(Self {
            client,
            conn: tokio::sync::Mutex::new(None),
            publish: Script::new(PUBLISH),
            history: Script::new(HISTORY),
            limits,
            listening: AtomicBool::new(false),
            failing: AtomicBool::new(false),
        })
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

    /// Runs the pub/sub listener until `stop`: subscribes to [`CHANNEL`], hands every event
    /// to `hub`, and re-subscribes after any failure.
    pub(crate) async fn listen(self: Arc<Self>, hub: Hub, stop: CancellationToken) {
        let mut retry = Duration::from_millis(100);
        loop {
            let session = async {
                let mut pubsub =
                    tokio::time::timeout(REDIS_TIMEOUT, self.client.get_async_pubsub())
                        .await
                        .map_err(|_| "connect timed out".to_owned())?
                        .map_err(|e| e.to_string())?;
                pubsub.subscribe(CHANNEL).await.map_err(|e| e.to_string())?;
                self.listening.store(true, Ordering::Relaxed);
                // Redis answers again: the next command reconnects if it must.
                self.failing.store(false, Ordering::Relaxed);
                tracing::info!("redis pub/sub subscribed");
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    deliver(&hub, msg.get_payload_bytes());
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
}

/// Hands one pub/sub message (`seq \n epoch \n topic \n json`) to the hub.
fn deliver(hub: &Hub, payload: &[u8]) {
    let parsed = std::str::from_utf8(payload).ok().and_then(|text| {
        let mut parts = text.splitn(4, '\n');
        let seq = parts.next()?.parse::<u64>().ok()?;
        let epoch = parts.next()?;
        let topic = parts.next()?;
        let json = parts.next()?;
        Some((seq, epoch, topic, json))
    });
    match parsed {
        Some((seq, epoch, topic, json)) => {
            hub.deliver(topic, seq, epoch, Utf8Bytes::from(json.to_owned()));
        }
        None => tracing::warn!("ignoring a malformed message on {CHANNEL}"),
    }
}

fn keys(topic: &Topic) -> (String, String) {
    (
        format!("tidings:{{{topic}}}:meta"),
        format!("tidings:{{{topic}}}:hist"),
    )
}

impl Broker for RedisBroker {
    fn publish<'a>(
        &'a self,
        hub: &'a Hub,
        topic: &'a Topic,
        base: String,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let mut conn = self.connection().await?;
            let (meta, hist) = keys(topic);
            let result: Result<u64, _> = self
                .publish
                .key(meta)
                .key(hist)
                .arg(base)
                .arg(new_epoch())
                .arg(self.limits.size)
                .arg(self.ttl_ms())
                .arg(CHANNEL)
                .arg(topic.as_str())
                .invoke_async(&mut conn)
                .await;
            match result {
                Ok(_) => {
                    self.failing.store(false, Ordering::Relaxed);
                    let delivered = hub.subscriber_count(topic.as_str());
                    hub.metrics().published(delivered, started.elapsed());
                    Ok(delivered)
                }
                Err(e) => {
                    self.forget_connection(&e).await;
                    Err(self.failed(e))
                }
            }
        })
    }

    fn history<'a>(
        &'a self,
        _hub: &'a Hub,
        topic: &'a Topic,
        since: &'a StreamPosition,
    ) -> BoxFuture<'a, Result<Recovery, BrokerError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            let (meta, hist) = keys(topic);
            let result: Result<Vec<String>, _> = self
                .history
                .key(meta)
                .key(hist)
                .arg(&since.epoch)
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
}

/// Interprets the history script's reply `[epoch, last seq, now ms, entries...]`.
fn recovery(reply: &[String], since: &StreamPosition, ttl_ms: u64) -> Recovery {
    let failed = Recovery {
        recovered: false,
        events: Vec::new(),
    };
    let [epoch, last, now, entries @ ..] = reply else {
        return failed;
    };
    let (Ok(last), Ok(now)) = (last.parse::<u64>(), now.parse::<u64>()) else {
        return failed;
    };
    if *epoch != since.epoch || since.seq > last {
        return failed;
    }
    let mut events = Vec::new();
    for entry in entries {
        let mut parts = entry.splitn(3, '\n');
        let (Some(seq), Some(at), Some(json)) = (parts.next(), parts.next(), parts.next()) else {
            return failed;
        };
        let (Ok(seq), Ok(at)) = (seq.parse::<u64>(), at.parse::<u64>()) else {
            return failed;
        };
        if seq > since.seq && at.saturating_add(ttl_ms) >= now {
            events.push((seq, Utf8Bytes::from(json.to_owned())));
        }
    }
    let expected = last - since.seq;
    let contiguous =
        events.first().is_none_or(|(s, _)| *s == since.seq + 1) && events.len() as u64 == expected;
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
        let mut r = vec!["e".to_owned(), last.to_string(), "10000".to_owned()];
        r.extend(
            entries
                .iter()
                .map(|(s, at)| format!("{s}\n{at}\n{{\"seq\":{s}}}")),
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
    }
}
