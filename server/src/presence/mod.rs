//! The presence seam: who is on a topic right now, on one node or many (issue 15).
//!
//! A connection that subscribes with `"presence":"join"` is present on the topic as its user
//! (the token's `sub`), with an `info` object built from the token's claims; one with
//! `"presence":"watch"` (or `join`) watches the topic's presence: it gets a snapshot after its
//! ack, then each join and leave (see `tidings_protocol::presence`). A user is one entry per
//! topic however many connections it has there, on however many nodes: its entry counts them,
//! and it leaves when the count falls to zero (the last connection unsubscribed, closed or
//! died, or its node died).
//!
//! The parts, after centrifuge's `presence.go` / `presence_memory.go` / `presence_redis.go`:
//!
//! - this module: the [`Presence`] trait — where the entries of every node are kept and
//!   changes announced — and the values that cross it ([`Update`], [`Change`], [`Snapshot`]);
//! - [`local`]: this node's side, the [`Watchers`] a store reports to: the connections watching
//!   each topic (each with its snapshot held back until its ack is out), this node's count of
//!   connections per (topic, user), and the one serialization of each change for every
//!   watcher. It never calls a store; the [`Node`] handle does, after its locks are released.
//! - [`memory`] (the default): one node; every update is applied and announced at once.
//! - [`redis`] (with `Config::with_redis_url`): the entries of every node in Redis, per topic
//!   and node, announced on the topic's event channel (which every node with subscribers of
//!   the topic follows already); a node heartbeat lets the others remove a dead node's entries.
//!
//! A node tells the store absolute counts ("this node holds `n` connections of user `u` on
//! `T`"), never increments, so an update can be repeated (after a failure, or after the node's
//! entries were swept while it was cut off) without double counting. Every change of a topic's
//! presence gets the topic's next `version`; a snapshot carries the version it was read at, so
//! a watcher that receives changes while its snapshot is read drops those already in it.
//!
//! The topic policy applies as it does to subscribe: presence is asked for by a subscribe, and
//! a denied subscribe is denied before presence is looked at. Presence topics per connection
//! are the connection's subscriptions (bounded by `Config::with_max_subscriptions_per_connection`).

pub mod local;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

use std::future::Future;
use std::sync::Arc;
use std::task::Context;

use tidings_protocol::{PresenceInfo, PresenceMember, Topic};
use tokio_util::sync::CancellationToken;

pub use self::local::Local;
pub use self::memory::MemoryPresence;
#[cfg(feature = "redis")]
pub use self::redis::RedisPresence;

use tidings_protocol::{PresenceMode, WSError};

use crate::broker::BoxFuture;
use crate::hub::ConnId;
use crate::outbox::Outbox;

/// Why a presence update or snapshot failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PresenceError {
    /// The topic already has the most present users allowed; the user is not among them.
    #[error("at most {0} present members per topic")]
    Full(usize),
    /// The store (Redis) cannot be reached.
    #[error("presence unavailable: {0}")]
    Unavailable(String),
}

/// This node now holds `count` connections of `user` on `topic` (0: none): the one kind of
/// write a node makes.
#[derive(Debug, Clone)]
pub struct Update {
    /// The topic.
    pub topic: Topic,
    /// The user (the token's `sub`).
    pub user: Arc<str>,
    /// This node's connections of the user on the topic now.
    pub count: u32,
    /// The user's info (of the connection that joined last).
    pub info: PresenceInfo,
}

/// A change of a topic's presence, as every node's watchers receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A user appeared, or its connection count changed.
    Join(PresenceMember),
    /// A user's last connection left.
    Leave(String),
}

/// Who is present on a topic, and the topic's presence version it was read at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Every change up to this version is reflected in `members`.
    pub version: u64,
    /// Every present user, once.
    pub members: Vec<PresenceMember>,
}

/// The node's side a store reports to (implemented by [`Local`]): the narrow handle a store
/// gets instead of the node, as a broker gets [`Deliver`](crate::broker::Deliver).
pub trait Watchers: Send + Sync {
    /// `change` happened on `topic` as its presence's `version`: queue it for this node's
    /// watchers of the topic (in version order per topic; a store calls it in that order).
    fn changed(&self, topic: &Topic, version: u64, change: &Change);
    /// Every entry this node holds, as updates (to write them again after the store lost
    /// them).
    fn entries(&self) -> Vec<Update>;
    /// The entries whose last update failed, as updates with their counts of now (to retry).
    fn take_dirty(&self) -> Vec<Update>;
    /// `update` did not reach the store: keep its entry for [`Watchers::take_dirty`].
    fn failed(&self, update: &Update);
}

/// Where presence entries live and how their changes reach every node (see the module docs).
///
/// Implemented by [`MemoryPresence`] and (feature `redis`) `RedisPresence`.
pub trait Presence: Send + Sync + 'static {
    /// Applies `update` (made when this is called, in call order; the future only reports
    /// the outcome) and announces the change (if any) to every node's watchers through
    /// [`Watchers::changed`]. Updates of one node are applied in the order they are made.
    /// Fails with [`PresenceError::Full`] when the update would add a user to a topic that has
    /// `max_members` already (nothing changes), or [`PresenceError::Unavailable`].
    fn update(
        &self,
        local: &dyn Watchers,
        update: Update,
        max_members: usize,
    ) -> BoxFuture<'static, Result<(), PresenceError>>;

    /// Who is on `topic`, with the version it was read at (read after every update this node
    /// made before the call).
    fn snapshot(&self, topic: Topic) -> BoxFuture<'static, Result<Snapshot, PresenceError>>;

    /// Starts the store's background work for the node whose watchers `local` reaches
    /// (Redis: the node heartbeat, the sweep of dead nodes, retries), until `stop`.
    fn start(self: Arc<Self>, _local: Arc<dyn Watchers>, _stop: CancellationToken) {}

    /// `None` when healthy, else why presence is degraded.
    fn degraded(&self) -> Option<String> {
        None
    }
}

/// The JSON text of a presence frame.
pub(crate) fn frame(reply: &tidings_protocol::WSReply) -> axum::extract::ws::Utf8Bytes {
    match serde_json::to_string(reply) {
        Ok(text) => text.into(),
        Err(e) => {
            tracing::error!(error = %e, "could not serialize a presence frame");
            axum::extract::ws::Utf8Bytes::from_static(
                tidings_protocol::WSError::INTERNAL_ERROR_JSON,
            )
        }
    }
}

/// Runs `future` at once when it can finish without waiting (the in-memory store), else as a
/// task: a join, a leave and a snapshot cost no task on one node.
pub(crate) fn run_now_or_spawn(future: impl Future<Output = ()> + Send + 'static) {
    let mut future = Box::pin(future);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    if future.as_mut().poll(&mut cx).is_pending() {
        // Polled again by the runtime with a real waker: whatever registered the no-op one
        // is registered again.
        tokio::spawn(future);
    }
}

/// The node's presence: this node's watchers and counts ([`Local`]) and the store that
/// shares them ([`Presence`]). Cheap to clone.
#[derive(Clone)]
pub struct Node {
    local: Arc<Local>,
    store: Arc<dyn Presence>,
    max_members: usize,
    max_info_bytes: usize,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("presence::Node")
            .field("entries", &self.local.entry_count())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// The presence of a node using `store`, with at most `max_members` per topic and
    /// `max_info_bytes` of info per user.
    pub(crate) fn new(
        store: Arc<dyn Presence>,
        max_members: usize,
        max_info_bytes: usize,
        stop: CancellationToken,
    ) -> Self {
        let local = Arc::new(Local::default());
        store.clone().start(local.clone(), stop);
        Self {
            local,
            store,
            max_members,
            max_info_bytes,
        }
    }

    /// This node's side.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn local(&self) -> &Arc<Local> {
        &self.local
    }

    /// Writes `update` without waiting for the outcome (a leave): a store that can fail
    /// keeps a failed update for a retry itself ([`Watchers::failed`]).
    pub(crate) fn send(&self, update: Update) {
        let fut = self.store.update(&*self.local, update, self.max_members);
        run_now_or_spawn(async move {
            if let Err(e) = fut.await {
                tracing::debug!(error = %e, "presence update failed");
            }
        });
    }

    /// The store's update future for `update` (a join waits for its outcome).
    pub(crate) fn update(&self, update: Update) -> BoxFuture<'static, Result<(), PresenceError>> {
        self.store.update(&*self.local, update, self.max_members)
    }

    /// Sends a fresh snapshot to every watcher: changes may have been lost (the store's link
    /// broke).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn resync(&self) {
        for (topic, pending) in self.local.rewatch_all() {
            let snapshot = self.store.snapshot(topic.clone());
            let local = self.local.clone();
            run_now_or_spawn(async move {
                let snapshot = snapshot.await;
                for (conn, ticket) in pending {
                    local.finish(&topic, conn, ticket, snapshot.as_ref().ok());
                }
            });
        }
    }

    /// Registers `conn` as a watcher of `topic` and, for [`PresenceMode::Join`], makes its
    /// user present (unless its `info` is over the configured bound). Returns what to run once
    /// the subscribe's ack is queued: the snapshot (and any refusal) must follow the ack.
    pub(crate) fn watch(
        &self,
        topic: &Topic,
        conn: ConnId,
        outbox: &Arc<Outbox>,
        mode: PresenceMode,
        user: &str,
        info: Option<&PresenceInfo>,
    ) -> Start {
        let max_info_bytes = self.max_info_bytes;
        let mut refusal = None;
        let join = match mode {
            PresenceMode::Watch => None,
            PresenceMode::Join => {
                let info = info.cloned().unwrap_or_default();
                if info.get().len() > max_info_bytes {
                    refusal = Some(WSError {
                        details: Some(format!("at most {max_info_bytes} bytes of presence info")),
                        topic: Some(topic.to_string()),
                        ..WSError::new(WSError::PRESENCE_INFO_TOO_LARGE)
                    });
                    None
                } else {
                    Some((Arc::<str>::from(user), info))
                }
            }
        };
        let joining = join.is_some();
        let (ticket, update) = self.local.watch(topic, conn, outbox, join);
        let joined = match update {
            Some(update) if joining => Some(self.update(update)),
            // From present to watching only.
            Some(update) => {
                self.send(update);
                None
            }
            None => None,
        };
        Start {
            node: self.clone(),
            topic: topic.clone(),
            conn,
            ticket,
            outbox: outbox.clone(),
            joined,
            refusal,
        }
    }

    /// `conn` no longer watches `topic` (unsubscribed, closed, no longer allowed); its user
    /// leaves if this was its last connection there.
    pub(crate) fn unwatch(&self, topic: &Topic, conn: ConnId) {
        if let Some(update) = self.local.unwatch(topic, conn) {
            self.send(update);
        }
    }

    /// Present (topic, user) entries on this node.
    pub fn entry_count(&self) -> usize {
        self.local.entry_count()
    }

    /// Watching (connection, topic) pairs on this node.
    pub fn watcher_count(&self) -> usize {
        self.local.watcher_count()
    }
}

/// The rest of a presence subscribe, run once its ack is queued ([`Node::watch`]): the outcome
/// of the join (a refusal is answered with an error; the connection stays a watcher), then the
/// snapshot and the changes held meanwhile.
#[must_use = "the watcher stays pending until the start runs"]
pub(crate) struct Start {
    node: Node,
    topic: Topic,
    conn: ConnId,
    ticket: u64,
    outbox: Arc<Outbox>,
    joined: Option<BoxFuture<'static, Result<(), PresenceError>>>,
    refusal: Option<WSError>,
}

impl Start {
    /// Runs it: at once on one node, as a task when the store must be waited for.
    pub(crate) fn run(self) {
        run_now_or_spawn(self.finish());
    }

    async fn finish(self) {
        let Start {
            node,
            topic,
            conn,
            ticket,
            outbox,
            joined,
            refusal,
        } = self;
        let mut told_unavailable = false;
        if let Some(error) = refusal {
            let _ = outbox.push(frame_of(&error));
        }
        if let Some(joined) = joined {
            if let Err(e) = joined.await {
                let (current, update) = node.local.refuse(&topic, conn, ticket);
                if let Some(update) = update {
                    node.send(update);
                }
                // Told only while that join was still in effect (not ended or replaced since).
                if current {
                    let text = match &e {
                        PresenceError::Full(_) => WSError::TOO_MANY_PRESENT,
                        PresenceError::Unavailable(_) => {
                            told_unavailable = true;
                            WSError::PRESENCE_UNAVAILABLE
                        }
                    };
                    let _ = outbox.push(frame_of(&WSError {
                        details: Some(e.to_string()),
                        topic: Some(topic.to_string()),
                        ..WSError::new(text)
                    }));
                }
            }
        }
        // Unsubscribed or subscribed again since: that subscribe's start sends the snapshot.
        if !node.local.is_current(&topic, conn, ticket) {
            return;
        }
        let snapshot = node.store.snapshot(topic.clone()).await;
        if let Err(e) = &snapshot {
            tracing::debug!(%topic, error = %e, "presence snapshot unavailable");
            if !told_unavailable && node.local.is_current(&topic, conn, ticket) {
                let _ = outbox.push(frame_of(&WSError {
                    details: Some(e.to_string()),
                    topic: Some(topic.to_string()),
                    ..WSError::new(WSError::PRESENCE_UNAVAILABLE)
                }));
            }
        }
        node.local
            .finish(&topic, conn, ticket, snapshot.as_ref().ok());
    }
}

/// The JSON text of an error reply.
fn frame_of(error: &WSError) -> axum::extract::ws::Utf8Bytes {
    match serde_json::to_string(error) {
        Ok(text) => text.into(),
        Err(_) => axum::extract::ws::Utf8Bytes::from_static(WSError::INTERNAL_ERROR_JSON),
    }
}
