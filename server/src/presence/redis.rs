//! The Redis presence store: the entries of every node, for scale-out.
//!
//! Per topic `T` (the `{T}` hash tag of the broker's keys):
//! - `tidings:{T}:pres:<node>`: a hash, user → how many connections node `<node>` holds of it
//!   on `T` (what the node's [`Update`]s say: absolute counts);
//! - `tidings:{T}:pres`: a hash, user → `count \n info`, the sum over every node and the
//!   user's info (of the last update): what a snapshot reads, at most `max_members` fields;
//! - `tidings:{T}:presv`: the topic's presence version, incremented by every change (kept a
//!   day after the last one).
//!
//! One Lua script per update sets the node's count, recomputes the user's total, refuses a new
//! user on a full topic, and `PUBLISH`es the change on the topic's event channel
//! `tidings:{T}:ch` as `p \n version \n topic \n j \n count \n info \n user` (a join or a new
//! count) or `p \n version \n topic \n l \n user` (a leave), atomically. Every node with
//! subscribers of `T` follows that channel already (the broker's [`Broker::follow`]), and
//! presence watchers are subscribers, so a node hears the changes of exactly the topics it
//! serves; the broker's listener hands these messages to [`Relay`] (`Deliver::presence`)
//! instead of the event path. After the listener's link broke (changes may have been lost), it
//! says so (`Deliver::presence_lost`) and every local watcher gets a fresh snapshot.
//!
//! Node liveness: each node is a member of the sorted set `tidings:presence:nodes`, scored by
//! the time its entries expire (Redis' clock); it renews it every quarter of the TTL
//! (`Config::with_presence_ttl`). Each node also sweeps, as often: it claims (removes from the
//! set, atomically, one node at a time) every node whose time passed, then removes that node's
//! entries topic by topic (`tidings:presence:node:<node>` lists its topics), publishing a leave
//! (or a lower count) for each of its users. So a killed node's users leave everywhere within
//! 1.25 × the TTL. A node that finds itself gone from the set (it was cut off or paused past
//! its TTL and swept) takes a new id and writes all its entries again; an update under a swept
//! id is refused by the script (`gone`), so nothing is written under an id nobody will sweep.
//! On shutdown a node marks itself expired, and the next sweep of any node removes its entries.
//!
//! A node's updates and snapshot reads go through one queue, in order, to one worker that sends
//! whatever is waiting as one pipeline (up to `BATCH`; Redis executes them in that order): a join is applied before the joining connection's snapshot is
//! read, and a leave never overtakes the join it follows. The queue is bounded
//! (`QUEUE`); an update that finds it full, or fails for want of Redis, is kept as a dirty
//! entry and written again (with the count of then) by the next heartbeat round.
//!
//! Keys of several slots are touched by one script (the node set): Redis Cluster is not
//! supported, as for the broker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Script};
use tidings_protocol::{PresenceInfo, PresenceMember, Topic};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Change, Node, Presence, PresenceError, Snapshot, Update, Watchers};
use crate::broker::{BoxFuture, PresenceRelay};

/// How long connecting to Redis, or one command, may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failed connect, operations fail at once for this long instead of each waiting
/// for a connect of its own (a backlog of leaves must not take `REDIS_TIMEOUT` apiece).
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);
/// Most updates and snapshot reads waiting for the worker.
const QUEUE: usize = 65_536;
/// Most operations sent in one pipelined round trip.
const BATCH: usize = 256;
/// Dead nodes claimed per sweep round trip.
const SWEEP_BATCH: usize = 16;
/// How long the version of a topic's presence outlives its last change (a watcher compares
/// versions only while its snapshot is read).
const VERSION_TTL_MS: u64 = 24 * 3600 * 1000;
const NODES: &str = "tidings:presence:nodes";

/// Sets one node's count of one user (KEYS: node's hash, totals, version, node set, nodes;
/// ARGV: user, count, info, max members, channel, topic, node id, version ttl).
const UPDATE: &str = r#"
if not redis.call('ZSCORE', KEYS[5], ARGV[7]) then return 'gone' end
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local count = tonumber(ARGV[2])
local cur = redis.call('HGET', KEYS[2], ARGV[1])
local total = 0
if cur then
  total = tonumber(string.sub(cur, 1, string.find(cur, '\n', 1, true) - 1))
end
local new = math.max(total - old, 0) + count
if new > 0 and not cur and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then return 'full' end
if count > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], count)
  redis.call('SADD', KEYS[4], ARGV[6])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local msg
if new > 0 then
  local value = new .. '\n' .. ARGV[3]
  if cur == value then return 'same' end
  redis.call('HSET', KEYS[2], ARGV[1], value)
  local v = redis.call('INCR', KEYS[3])
  msg = 'p\n' .. v .. '\n' .. ARGV[6] .. '\nj\n' .. value .. '\n' .. ARGV[1]
else
  if not cur then return 'same' end
  redis.call('HDEL', KEYS[2], ARGV[1])
  local v = redis.call('INCR', KEYS[3])
  msg = 'p\n' .. v .. '\n' .. ARGV[6] .. '\nl\n' .. ARGV[1]
end
redis.call('PEXPIRE', KEYS[3], ARGV[8])
redis.call('PUBLISH', ARGV[5], msg)
return 'ok'
"#;

/// A topic's members and version (KEYS: totals, version).
const SNAPSHOT: &str = r#"
return {redis.call('GET', KEYS[2]) or '0', redis.call('HGETALL', KEYS[1])}
"#;

/// Removes a swept node's entries of one topic (KEYS: its hash, totals, version; ARGV:
/// channel, topic, version ttl).
const REAP: &str = r#"
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local user = entries[i]
  local cur = redis.call('HGET', KEYS[2], user)
  if cur then
    local nl = string.find(cur, '\n', 1, true)
    local total = tonumber(string.sub(cur, 1, nl - 1)) - tonumber(entries[i + 1])
    local v = redis.call('INCR', KEYS[3])
    if total > 0 then
      local value = total .. string.sub(cur, nl)
      redis.call('HSET', KEYS[2], user, value)
      redis.call('PUBLISH', ARGV[1], 'p\n' .. v .. '\n' .. ARGV[2] .. '\nj\n' .. value .. '\n' .. user)
    else
      redis.call('HDEL', KEYS[2], user)
      redis.call('PUBLISH', ARGV[1], 'p\n' .. v .. '\n' .. ARGV[2] .. '\nl\n' .. user)
    end
    redis.call('PEXPIRE', KEYS[3], ARGV[3])
  end
end
redis.call('DEL', KEYS[1])
return #entries / 2
"#;

/// Renews a node (KEYS: nodes; ARGV: node id, ttl ms, `new` to register): `gone` when it was
/// swept (and not registering).
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] ~= 'new' and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 'gone' end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 'ok'
"#;

/// Claims the nodes whose time passed (KEYS: nodes; ARGV: most): removed from the set here,
/// so only one sweeper removes each one's entries.
const CLAIM: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, n in ipairs(dead) do redis.call('ZREM', KEYS[1], n) end
return dead
"#;

/// Marks a node expired now (KEYS: nodes; ARGV: node id): the next sweep removes its entries.
const EXPIRE: &str = r#"
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then redis.call('ZADD', KEYS[1], 0, ARGV[1]) end
return 'ok'
"#;

enum Op {
    Update {
        update: Update,
        max_members: usize,
        reply: oneshot::Sender<Result<(), PresenceError>>,
    },
    Snapshot {
        topic: Topic,
        reply: oneshot::Sender<Result<Snapshot, PresenceError>>,
    },
    /// Take a new node id and write every entry again (the old one was swept).
    Renew,
}

/// The Redis presence store (see the module docs).
pub struct RedisPresence {
    client: Client,
    ttl: Duration,
    /// This node's current id (a new one after it was swept).
    node: Mutex<Arc<str>>,
    queue: mpsc::Sender<Op>,
    receiver: Mutex<Option<mpsc::Receiver<Op>>>,
    failing: AtomicBool,
    update: Script,
    snapshot: Script,
    reap: Script,
    heartbeat: Script,
    claim: Script,
    expire: Script,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence")
            .field("node", &self.node_id())
            .finish_non_exhaustive()
    }
}

impl RedisPresence {
    /// A store on the Redis at `url` whose entries outlive a dead node by at most `ttl` (plus
    /// a quarter of it); nothing connects until it is started.
    ///
    /// # Errors
    /// [`PresenceError::Unavailable`] for an invalid URL.
    pub fn new(url: &str, ttl: Duration) -> Result<Self, PresenceError> {
        let client = Client::open(url)
            .map_err(|e| PresenceError::Unavailable(format!("invalid Redis URL: {e}")))?;
        let (queue, receiver) = mpsc::channel(QUEUE);
        Ok(Self {
            client,
            ttl: ttl.max(Duration::from_secs(1)),
            node: Mutex::new(new_node_id()),
            queue,
            receiver: Mutex::new(Some(receiver)),
            failing: AtomicBool::new(false),
            update: Script::new(UPDATE),
            snapshot: Script::new(SNAPSHOT),
            reap: Script::new(REAP),
            heartbeat: Script::new(HEARTBEAT),
            claim: Script::new(CLAIM),
            expire: Script::new(EXPIRE),
        })
    }

    fn node_id(&self) -> Arc<str> {
        self.node
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    async fn connect(&self) -> Result<MultiplexedConnection, String> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())
    }

    /// The worker: applies the queued operations one after the other, in order.
    async fn work(
        self: Arc<Self>,
        mut ops: mpsc::Receiver<Op>,
        local: Arc<dyn Watchers>,
        stop: CancellationToken,
    ) {
        let mut conn: Option<MultiplexedConnection> = None;
        let mut failed_at: Option<(tokio::time::Instant, String)> = None;
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let op = tokio::select! {
                () = stop.cancelled() => break,
                op = ops.recv() => match op { Some(op) => op, None => break },
            };
            // Whatever else is waiting goes in the same round trip.
            batch.push(op);
            while batch.len() < BATCH {
                match ops.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            if conn.is_none() {
                if let Some((at, e)) = &failed_at {
                    if at.elapsed() < RECONNECT_PAUSE {
                        batch.drain(..).for_each(|op| fail(op, &*local, e));
                        continue;
                    }
                }
                match self.connect_loaded().await {
                    Ok(c) => {
                        conn = Some(c);
                        failed_at = None;
                    }
                    Err(e) => {
                        self.failing.store(true, Ordering::Relaxed);
                        batch.drain(..).for_each(|op| fail(op, &*local, &e));
                        failed_at = Some((tokio::time::Instant::now(), e));
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            if let Err(e) = self.apply_batch(c, &mut batch, &*local).await {
                self.failing.store(true, Ordering::Relaxed);
                tracing::debug!(error = %e, "presence: redis command failed");
                conn = None;
                failed_at = Some((tokio::time::Instant::now(), e));
            } else {
                self.failing.store(false, Ordering::Relaxed);
            }
        }
        // Shutting down: the entries of this node go with the next sweep of any other node.
        if let Some(mut c) = conn {
            let _ = self
                .expire
                .key(NODES)
                .arg(&*self.node_id())
                .invoke_async::<String>(&mut c)
                .await;
        }
    }

    /// A connection with the pipelined scripts loaded (a pipeline does not load them itself).
    async fn connect_loaded(&self) -> Result<MultiplexedConnection, String> {
        let mut conn = self.connect().await?;
        for script in [&self.update, &self.snapshot] {
            script
                .prepare_invoke()
                .load_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(conn)
    }

    /// Applies `batch` (emptied): runs of updates and snapshot reads as one pipeline each
    /// (Redis runs them in order), a renewal on its own. On an error every operation not yet
    /// answered is failed (kept for a retry, or answered unavailable).
    async fn apply_batch(
        &self,
        conn: &mut MultiplexedConnection,
        batch: &mut Vec<Op>,
        local: &dyn Watchers,
    ) -> Result<(), String> {
        let mut ops = batch.drain(..);
        let mut run = Vec::new();
        let result = loop {
            match ops.next() {
                Some(Op::Renew) => {
                    if let Err(e) = self.pipeline(conn, &mut run, local).await {
                        break Err(e);
                    }
                    if let Err(e) = self.renew(conn, local).await {
                        break Err(e);
                    }
                }
                Some(op) => run.push(op),
                None => break self.pipeline(conn, &mut run, local).await,
            }
        };
        if let Err(e) = &result {
            run.drain(..).chain(ops).for_each(|op| fail(op, local, e));
        }
        result
    }

    /// Sends the updates and snapshot reads of `run` (emptied on success) in one pipeline and
    /// answers each. One operation takes the plain path (which loads its script if needed).
    async fn pipeline(
        &self,
        conn: &mut MultiplexedConnection,
        run: &mut Vec<Op>,
        local: &dyn Watchers,
    ) -> Result<(), String> {
        if run.len() <= 1 {
            return match run.pop() {
                Some(op) => self.apply(conn, op, local).await,
                None => Ok(()),
            };
        }
        let node = self.node_id();
        let mut pipe = redis::pipe();
        for op in run.iter() {
            match op {
                Op::Update {
                    update,
                    max_members,
                    ..
                } => {
                    pipe.invoke_script(&self.update_invocation(update, *max_members, &node));
                }
                Op::Snapshot { topic, .. } => {
                    let (keys, _) = keys(topic.as_str(), "");
                    let mut invocation = self.snapshot.prepare_invoke();
                    invocation.key(&keys.totals).key(&keys.version);
                    pipe.invoke_script(&invocation);
                }
                Op::Renew => {}
            }
        }
        let values: Vec<redis::Value> = pipe.query_async(conn).await.map_err(|e| e.to_string())?;
        let mut gone = Vec::new();
        for (op, value) in run.drain(..).zip(values) {
            match op {
                Op::Update {
                    update,
                    max_members,
                    reply,
                } => match redis::from_redis_value::<String>(&value).as_deref() {
                    Ok("gone") => gone.push(Op::Update {
                        update,
                        max_members,
                        reply,
                    }),
                    Ok("full") => {
                        let _ = reply.send(Err(PresenceError::Full(max_members)));
                    }
                    Ok(_) => {
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        local.failed(&update);
                        let _ = reply.send(Err(PresenceError::Unavailable(e.to_string())));
                    }
                },
                Op::Snapshot { reply, .. } => {
                    let read = redis::from_redis_value::<(String, Vec<String>)>(&value)
                        .map(|(version, fields)| snapshot(&version, &fields))
                        .map_err(|e| PresenceError::Unavailable(e.to_string()));
                    let _ = reply.send(read);
                }
                Op::Renew => {}
            }
        }
        // Written under an id that was swept: the single path renews and writes them again.
        let mut gone = gone.into_iter();
        while let Some(op) = gone.next() {
            if let Err(e) = self.apply(conn, op, local).await {
                gone.for_each(|op| fail(op, local, &e));
                return Err(e);
            }
        }
        Ok(())
    }

    /// Applies one operation; an error is Redis' (the operation has been answered or kept).
    async fn apply(
        &self,
        conn: &mut MultiplexedConnection,
        op: Op,
        local: &dyn Watchers,
    ) -> Result<(), String> {
        match op {
            Op::Update {
                update,
                max_members,
                reply,
            } => {
                let mut outcome = self.write(conn, &update, max_members).await;
                if matches!(&outcome, Ok(s) if s == "gone") {
                    self.renew(conn, local).await?;
                    outcome = self.write(conn, &update, max_members).await;
                }
                match outcome {
                    Ok(status) if status == "full" => {
                        let _ = reply.send(Err(PresenceError::Full(max_members)));
                    }
                    Ok(_) => {
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        local.failed(&update);
                        let _ = reply.send(Err(PresenceError::Unavailable(e.clone())));
                        return Err(e);
                    }
                }
            }
            Op::Snapshot { topic, reply } => {
                let (keys, _) = keys(topic.as_str(), "");
                let read: Result<(String, Vec<String>), _> = self
                    .snapshot
                    .key(&keys.totals)
                    .key(&keys.version)
                    .invoke_async(conn)
                    .await;
                match read {
                    Ok((version, fields)) => {
                        let _ = reply.send(Ok(snapshot(&version, &fields)));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(PresenceError::Unavailable(e.to_string())));
                        return Err(e.to_string());
                    }
                }
            }
            Op::Renew => self.renew(conn, local).await?,
        }
        Ok(())
    }

    async fn write(
        &self,
        conn: &mut MultiplexedConnection,
        update: &Update,
        max_members: usize,
    ) -> Result<String, String> {
        self.update_invocation(update, max_members, &self.node_id())
            .invoke_async(conn)
            .await
            .map_err(|e| e.to_string())
    }

    /// The update script with its keys and arguments, the one spelling of its calling
    /// convention (sent alone by [`Self::write`], or in a pipeline by the queue).
    fn update_invocation(
        &self,
        update: &Update,
        max_members: usize,
        node: &str,
    ) -> redis::ScriptInvocation<'_> {
        let (keys, node_set) = keys(update.topic.as_str(), node);
        let mut invocation = self.update.prepare_invoke();
        invocation
            .key(&keys.node)
            .key(&keys.totals)
            .key(&keys.version)
            .key(&node_set)
            .key(NODES)
            .arg(&*update.user)
            .arg(update.count)
            .arg(update.info.get())
            .arg(max_members)
            .arg(&keys.channel)
            .arg(update.topic.as_str())
            .arg(node)
            .arg(VERSION_TTL_MS);
        invocation
    }

    /// Takes a new node id (when the current one was swept) and writes every entry again.
    async fn renew(
        &self,
        conn: &mut MultiplexedConnection,
        local: &dyn Watchers,
    ) -> Result<(), String> {
        let node = {
            let mut node = self.node.lock().unwrap_or_else(PoisonError::into_inner);
            *node = new_node_id();
            node.clone()
        };
        self.heartbeat
            .key(NODES)
            .arg(&*node)
            .arg(self.ttl_ms())
            .arg("new")
            .invoke_async::<String>(conn)
            .await
            .map_err(|e| e.to_string())?;
        let entries = local.entries();
        if !entries.is_empty() {
            tracing::info!(
                entries = entries.len(),
                "presence: this node's entries were swept; writing them again"
            );
        }
        for update in entries {
            // Bound by nothing but the node's own entries, each already admitted.
            self.write(conn, &update, usize::MAX).await?;
        }
        Ok(())
    }

    /// The heartbeat and the sweep, every quarter of the TTL, until `stop`.
    async fn keep_alive(self: Arc<Self>, local: Arc<dyn Watchers>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.ttl / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conn: Option<MultiplexedConnection> = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if conn.is_none() {
                conn = self.connect().await.ok();
            }
            let Some(c) = conn.as_mut() else { continue };
            if let Err(e) = self.round(c, &*local).await {
                tracing::debug!(error = %e, "presence heartbeat failed");
                conn = None;
            }
        }
    }

    /// One heartbeat: renew this node (or ask for a new id), retry failed updates, sweep
    /// dead nodes.
    async fn round(
        &self,
        conn: &mut MultiplexedConnection,
        local: &dyn Watchers,
    ) -> Result<(), String> {
        let status: String = self
            .heartbeat
            .key(NODES)
            .arg(&*self.node_id())
            .arg(self.ttl_ms())
            .arg("renew")
            .invoke_async(conn)
            .await
            .map_err(|e| e.to_string())?;
        if status == "gone" {
            let _ = self.queue.try_send(Op::Renew);
        }
        for update in local.take_dirty() {
            // The outcome is only logged (the update is kept again if it fails).
            let (reply, _) = oneshot::channel();
            if self
                .queue
                .try_send(Op::Update {
                    update: update.clone(),
                    max_members: usize::MAX,
                    reply,
                })
                .is_err()
            {
                local.failed(&update);
            }
        }
        loop {
            let dead: Vec<String> = self
                .claim
                .key(NODES)
                .arg(SWEEP_BATCH)
                .invoke_async(conn)
                .await
                .map_err(|e| e.to_string())?;
            for node in &dead {
                self.sweep(conn, node).await?;
            }
            if dead.len() < SWEEP_BATCH {
                return Ok(());
            }
        }
    }

    /// Removes the entries of the swept node `node`, topic by topic.
    async fn sweep(&self, conn: &mut MultiplexedConnection, node: &str) -> Result<(), String> {
        let node_set = node_set(node);
        let topics: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&node_set)
            .query_async(conn)
            .await
            .map_err(|e| e.to_string())?;
        let mut users = 0usize;
        for topic in &topics {
            let (keys, _) = keys(topic, node);
            users += self
                .reap
                .key(&keys.node)
                .key(&keys.totals)
                .key(&keys.version)
                .arg(&keys.channel)
                .arg(topic)
                .arg(VERSION_TTL_MS)
                .invoke_async::<usize>(conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        redis::cmd("DEL")
            .arg(&node_set)
            .query_async::<()>(conn)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(
            node,
            topics = topics.len(),
            users,
            "presence: removed the entries of a node whose heartbeat lapsed"
        );
        Ok(())
    }
}

/// Answers an operation that could not reach Redis.
fn fail(op: Op, local: &dyn Watchers, error: &str) {
    let unavailable = || PresenceError::Unavailable(error.to_owned());
    match op {
        Op::Update { update, reply, .. } => {
            local.failed(&update);
            let _ = reply.send(Err(unavailable()));
        }
        Op::Snapshot { reply, .. } => {
            let _ = reply.send(Err(unavailable()));
        }
        Op::Renew => {}
    }
}

impl Presence for RedisPresence {
    fn update(
        &self,
        local: &dyn Watchers,
        update: Update,
        max_members: usize,
    ) -> BoxFuture<'static, Result<(), PresenceError>> {
        let (reply, answer) = oneshot::channel();
        let result = self.queue.try_send(Op::Update {
            update,
            max_members,
            reply,
        });
        if let Err(e) = result {
            let op = match e {
                mpsc::error::TrySendError::Full(op) | mpsc::error::TrySendError::Closed(op) => op,
            };
            fail(op, local, "the presence queue is full");
        }
        Box::pin(async move {
            answer.await.unwrap_or_else(|_| {
                Err(PresenceError::Unavailable("presence store stopped".into()))
            })
        })
    }

    fn snapshot(&self, topic: Topic) -> BoxFuture<'static, Result<Snapshot, PresenceError>> {
        let (reply, answer) = oneshot::channel();
        let queued = self.queue.try_send(Op::Snapshot { topic, reply }).is_ok();
        Box::pin(async move {
            if !queued {
                return Err(PresenceError::Unavailable(
                    "the presence queue is full".into(),
                ));
            }
            answer.await.unwrap_or_else(|_| {
                Err(PresenceError::Unavailable("presence store stopped".into()))
            })
        })
    }

    fn start(self: Arc<Self>, local: Arc<dyn Watchers>, stop: CancellationToken) {
        let Some(receiver) = self
            .receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::error!("the Redis presence store needs a tokio runtime");
            return;
        };
        // Registers this node before anything else is written.
        let _ = self.queue.try_send(Op::Renew);
        rt.spawn(self.clone().work(receiver, local.clone(), stop.clone()));
        rt.spawn(self.keep_alive(local, stop));
    }

    fn degraded(&self) -> Option<String> {
        self.failing
            .load(Ordering::Relaxed)
            .then(|| "redis presence commands failing".to_owned())
    }
}

/// Hands the presence messages the broker's listener receives to this node's watchers, and
/// resynchronizes them after the listener's link broke (see the module docs).
pub(crate) struct Relay(pub(crate) Node);

impl PresenceRelay for Relay {
    fn message(&self, payload: &[u8]) {
        match parse_message(payload) {
            Some((version, topic, change)) => self.0.local().changed(&topic, version, &change),
            None => tracing::warn!("ignoring a malformed presence message"),
        }
    }

    fn lost(&self) {
        self.0.resync();
    }
}

/// Reads `p \n version \n topic \n j \n count \n info \n user` or
/// `p \n version \n topic \n l \n user`.
fn parse_message(payload: &[u8]) -> Option<(u64, Topic, Change)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(5, '\n');
    if parts.next()? != "p" {
        return None;
    }
    let version = parts.next()?.parse().ok()?;
    let topic = Topic::new(parts.next()?).ok()?;
    let change = match parts.next()? {
        "j" => {
            let mut rest = parts.next()?.splitn(3, '\n');
            let connections = rest.next()?.parse().ok()?;
            let info = PresenceInfo::from_json(rest.next()?.to_owned()).ok()?;
            let user_id = rest.next()?.to_owned();
            Change::Join(PresenceMember {
                user_id,
                info,
                connections,
            })
        }
        "l" => Change::Leave(parts.next()?.to_owned()),
        _ => return None,
    };
    Some((version, topic, change))
}

/// A snapshot from the script's `[version, [user, "count \n info", ...]]`.
fn snapshot(version: &str, fields: &[String]) -> Snapshot {
    let mut members: Vec<PresenceMember> = fields
        .chunks_exact(2)
        .filter_map(|pair| {
            let (count, info) = pair[1].split_once('\n')?;
            Some(PresenceMember {
                user_id: pair[0].clone(),
                info: PresenceInfo::from_json(info.to_owned()).ok()?,
                connections: count.parse().ok()?,
            })
        })
        .collect();
    members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    Snapshot {
        version: version.parse().unwrap_or(0),
        members,
    }
}

struct Keys {
    node: String,
    totals: String,
    version: String,
    channel: String,
}

/// The keys of `topic`'s presence (`node`'s hash among them) and `node`'s topic set.
fn keys(topic: &str, node: &str) -> (Keys, String) {
    (
        Keys {
            node: format!("tidings:{{{topic}}}:pres:{node}"),
            totals: format!("tidings:{{{topic}}}:pres"),
            version: format!("tidings:{{{topic}}}:presv"),
            // The broker's event channel of the topic (`broker::redis`).
            channel: format!("tidings:{{{topic}}}:ch"),
        },
        node_set(node),
    )
}

fn node_set(node: &str) -> String {
    format!("tidings:presence:node:{node}")
}

fn new_node_id() -> Arc<str> {
    format!("{:016x}", rand::random::<u64>()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse() {
        let (version, topic, change) =
            parse_message(b"p\n7\nlist:1\nj\n2\n{\"name\":\"Mom\"}\nmom\nwith newline").unwrap();
        assert_eq!((version, topic.as_str()), (7, "list:1"));
        assert_eq!(
            change,
            Change::Join(PresenceMember {
                user_id: "mom\nwith newline".into(),
                info: PresenceInfo::from_json(r#"{"name":"Mom"}"#.into()).unwrap(),
                connections: 2,
            })
        );
        let (_, _, change) = parse_message(b"p\n8\nlist:1\nl\nmom").unwrap();
        assert_eq!(change, Change::Leave("mom".into()));
        assert!(parse_message(b"1\ne\nlist:1\n\n{}").is_none());
        assert!(parse_message(b"p\nx\nlist:1\nl\nmom").is_none());
        let snap = snapshot(
            "3",
            &[
                "b".into(),
                "1\n{}".into(),
                "a".into(),
                "2\n{\"n\":1}".into(),
            ],
        );
        assert_eq!(snap.version, 3);
        assert_eq!(snap.members[0].user_id, "a");
        assert_eq!(snap.members[0].connections, 2);
    }
}
