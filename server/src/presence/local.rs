//! This node's side of presence: who watches each topic here, and how many of this node's
//! connections each user has on it.
//!
//! [`Local`] is to presence what the hub is to events: it queues each change, serialized once,
//! on the outbox of every local watcher of the topic. A watcher starts *pending*: the changes
//! that arrive before its snapshot is queued are held (with their versions), and
//! [`Local::finish`] queues the snapshot, then the held changes it does not already reflect,
//! and makes the watcher live. Each registration gets a ticket, so a snapshot read for an
//! earlier subscribe of the same connection (since unsubscribed, or subscribed again) is
//! dropped. A pending watcher holds at most its outbound queue's capacity of changes; one more
//! closes it with 4003 (slow consumer), as a full queue would.
//!
//! Counts live here too: the store is told absolute counts ([`Update`]) computed under this
//! lock, so concurrent joins and leaves of one user's tabs never race each other. Nothing here
//! calls a store (the caller sends the returned updates after the lock is released), so a store
//! may call [`Watchers::changed`] while holding its own lock.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::ws::Utf8Bytes;
use tidings_protocol::{CloseCode, PresenceInfo, PresenceMember, Topic, WSReply};

use super::{Change, Snapshot, Update, Watchers};
use crate::hub::ConnId;
use crate::outbox::Outbox;

/// This node's watchers and counts (see the module docs).
#[derive(Default)]
pub struct Local {
    topics: Mutex<HashMap<Topic, TopicPresence>>,
    next_ticket: AtomicU64,
    /// Present (topic, user) entries here.
    entries: AtomicUsize,
    /// Watching (topic, connection) pairs here.
    watchers: AtomicUsize,
    /// Entries whose last update failed (the store was away): written again by the store's
    /// background work with the count of that moment.
    dirty: Mutex<HashSet<(Topic, Arc<str>)>>,
}

#[derive(Default)]
struct TopicPresence {
    watchers: Vec<Watcher>,
    users: HashMap<Arc<str>, Here>,
}

struct Watcher {
    conn: ConnId,
    outbox: Arc<Outbox>,
    ticket: u64,
    /// The user, when this connection is present (not only watching).
    joined: Option<Arc<str>>,
    /// The registration that made it present: a refusal of that join applies only while it
    /// is still the one in effect.
    join_ticket: u64,
    /// `Some`: waiting for its snapshot, with the changes that arrived meanwhile.
    held: Option<Vec<(u64, Utf8Bytes)>>,
}

/// One user's connections on one topic, on this node.
struct Here {
    count: u32,
    info: PresenceInfo,
}

impl Local {
    fn topics(&self) -> MutexGuard<'_, HashMap<Topic, TopicPresence>> {
        self.topics.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `conn` as a pending watcher of `topic` (again, with a new ticket, when it
    /// already is one: a subscribe repeated with another `presence`), present as `join`'s user
    /// when given, else only watching. Returns the ticket and the update to send, if the
    /// user's count here changed.
    pub(crate) fn watch(
        &self,
        topic: &Topic,
        conn: ConnId,
        outbox: &Arc<Outbox>,
        join: Option<(Arc<str>, PresenceInfo)>,
    ) -> (u64, Option<Update>) {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let mut topics = self.topics();
        let state = topics.entry(topic.clone()).or_default();
        let i = match state.watchers.iter().position(|w| w.conn == conn) {
            Some(i) => i,
            None => {
                self.watchers.fetch_add(1, Ordering::Relaxed);
                state.watchers.push(Watcher {
                    conn,
                    outbox: outbox.clone(),
                    ticket,
                    joined: None,
                    join_ticket: ticket,
                    held: None,
                });
                state.watchers.len() - 1
            }
        };
        let watcher = &mut state.watchers[i];
        watcher.ticket = ticket;
        watcher.held = Some(Vec::new());
        let update = match (join, watcher.joined.clone()) {
            (Some((user, info)), None) => {
                watcher.joined = Some(user.clone());
                watcher.join_ticket = ticket;
                Some(self.add(state, topic, user, info))
            }
            (None, Some(user)) => {
                watcher.joined = None;
                self.remove(state, topic, &user)
            }
            // Already present (a repeated join keeps the entry) or still only watching.
            _ => None,
        };
        (ticket, update)
    }

    /// `conn` stops watching `topic` (unsubscribed, closed). Returns the update to send when
    /// it was present.
    pub(crate) fn unwatch(&self, topic: &Topic, conn: ConnId) -> Option<Update> {
        let mut topics = self.topics();
        let state = topics.get_mut(topic.as_str())?;
        let i = state.watchers.iter().position(|w| w.conn == conn)?;
        let watcher = state.watchers.swap_remove(i);
        self.watchers.fetch_sub(1, Ordering::Relaxed);
        let update = watcher
            .joined
            .and_then(|user| self.remove(state, topic, &user));
        if state.watchers.is_empty() && state.users.is_empty() {
            topics.remove(topic.as_str());
        }
        update
    }

    /// The store refused the join `conn` made with registration `ticket` (topic full, store
    /// away): it stays a watcher, not present. Returns whether that join was still in effect
    /// (the client is then told), and the update to send.
    pub(crate) fn refuse(
        &self,
        topic: &Topic,
        conn: ConnId,
        ticket: u64,
    ) -> (bool, Option<Update>) {
        let mut topics = self.topics();
        let Some(state) = topics.get_mut(topic.as_str()) else {
            return (false, None);
        };
        // A later subscribe of the same connection may have kept this join (a repeated
        // `join`): matched by the join's ticket, not the latest registration's.
        let Some(watcher) = state
            .watchers
            .iter_mut()
            .find(|w| w.conn == conn && w.joined.is_some() && w.join_ticket == ticket)
        else {
            return (false, None);
        };
        let update = watcher
            .joined
            .take()
            .and_then(|user| self.remove(state, topic, &user));
        (true, update)
    }

    /// Whether `conn`'s registration `ticket` on `topic` is the current one.
    pub(crate) fn is_current(&self, topic: &Topic, conn: ConnId, ticket: u64) -> bool {
        self.topics().get(topic.as_str()).is_some_and(|state| {
            state
                .watchers
                .iter()
                .any(|w| w.conn == conn && w.ticket == ticket)
        })
    }

    /// Queues `snapshot` (when it could be read) for `conn`'s registration `ticket`, then the
    /// changes held for it that are newer, and makes it live. Nothing when the ticket is not
    /// current.
    pub(crate) fn finish(
        &self,
        topic: &Topic,
        conn: ConnId,
        ticket: u64,
        snapshot: Option<&Snapshot>,
    ) {
        let mut topics = self.topics();
        let Some(watcher) = topics.get_mut(topic.as_str()).and_then(|state| {
            state
                .watchers
                .iter_mut()
                .find(|w| w.conn == conn && w.ticket == ticket)
        }) else {
            return;
        };
        let Some(held) = watcher.held.take() else {
            return;
        };
        let Some(snapshot) = snapshot else {
            // No base to apply changes to: the client learns of the failure by an error,
            // and gets a snapshot again once the store is back (`Node::resync`).
            return;
        };
        let frame = super::frame(&WSReply::Presence {
            topic: topic.clone(),
            members: snapshot.members.clone(),
        });
        if watcher.outbox.push(frame).is_err() {
            return;
        }
        for (version, frame) in held {
            if version > snapshot.version && watcher.outbox.push(frame).is_err() {
                return;
            }
        }
    }

    /// Makes every watcher pending again (its changes held) with a new ticket: after changes
    /// may have been lost, each gets a fresh snapshot. Returns, per topic, the registrations
    /// to finish.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn rewatch_all(&self) -> Vec<(Topic, Vec<(ConnId, u64)>)> {
        let mut topics = self.topics();
        let mut out = Vec::with_capacity(topics.len());
        for (topic, state) in topics.iter_mut() {
            if state.watchers.is_empty() {
                continue;
            }
            let pending = state
                .watchers
                .iter_mut()
                .map(|w| {
                    w.ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
                    w.held.get_or_insert_with(Vec::new);
                    (w.conn, w.ticket)
                })
                .collect();
            out.push((topic.clone(), pending));
        }
        out
    }

    /// Remembers that the update of (`topic`, `user`) did not reach the store.
    pub(crate) fn mark_dirty(&self, topic: Topic, user: Arc<str>) {
        self.dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((topic, user));
    }

    /// The updates that did not reach the store, with the counts of now (0 for a user gone
    /// since).
    pub fn take_dirty(&self) -> Vec<Update> {
        let dirty = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(PoisonError::into_inner));
        if dirty.is_empty() {
            return Vec::new();
        }
        let topics = self.topics();
        dirty
            .into_iter()
            .map(|(topic, user)| {
                let here = topics.get(topic.as_str()).and_then(|s| s.users.get(&user));
                Update {
                    count: here.map_or(0, |h| h.count),
                    info: here.map_or_else(PresenceInfo::empty, |h| h.info.clone()),
                    topic,
                    user,
                }
            })
            .collect()
    }

    /// Present (topic, user) entries on this node.
    pub fn entry_count(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    /// Watching (topic, connection) pairs on this node.
    pub fn watcher_count(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    fn add(
        &self,
        state: &mut TopicPresence,
        topic: &Topic,
        user: Arc<str>,
        info: PresenceInfo,
    ) -> Update {
        let here = state.users.entry(user.clone()).or_insert_with(|| {
            self.entries.fetch_add(1, Ordering::Relaxed);
            Here {
                count: 0,
                info: info.clone(),
            }
        });
        here.count += 1;
        // The connection that joined last names the user.
        here.info = info;
        Update {
            topic: topic.clone(),
            user,
            count: here.count,
            info: here.info.clone(),
        }
    }

    fn remove(&self, state: &mut TopicPresence, topic: &Topic, user: &Arc<str>) -> Option<Update> {
        let here = state.users.get_mut(user)?;
        here.count = here.count.saturating_sub(1);
        let update = Update {
            topic: topic.clone(),
            user: user.clone(),
            count: here.count,
            info: here.info.clone(),
        };
        if here.count == 0 {
            state.users.remove(user);
            self.entries.fetch_sub(1, Ordering::Relaxed);
        }
        Some(update)
    }
}

impl Watchers for Local {
    fn changed(&self, topic: &Topic, version: u64, change: &Change) {
        let mut topics = self.topics();
        let Some(state) = topics.get_mut(topic.as_str()) else {
            return;
        };
        if state.watchers.is_empty() {
            return;
        }
        let topic = topic.clone();
        let frame = super::frame(&match change {
            Change::Join(member) => WSReply::PresenceJoin {
                topic,
                member: member.clone(),
            },
            Change::Leave(user_id) => WSReply::PresenceLeave {
                topic,
                user_id: user_id.clone(),
            },
        });
        for watcher in &mut state.watchers {
            match &mut watcher.held {
                // A full queue closes the connection (4003) by itself.
                None => {
                    let _ = watcher.outbox.push(frame.clone());
                }
                Some(held) if held.len() < watcher.outbox.capacity() => {
                    held.push((version, frame.clone()));
                }
                Some(_) => watcher.outbox.close(CloseCode::SlowConsumer),
            }
        }
    }

    fn entries(&self) -> Vec<Update> {
        let topics = self.topics();
        topics
            .iter()
            .flat_map(|(topic, state)| {
                state.users.iter().map(|(user, here)| Update {
                    topic: topic.clone(),
                    user: user.clone(),
                    count: here.count,
                    info: here.info.clone(),
                })
            })
            .collect()
    }

    fn take_dirty(&self) -> Vec<Update> {
        Local::take_dirty(self)
    }

    fn failed(&self, update: &Update) {
        self.mark_dirty(update.topic.clone(), update.user.clone());
    }
}

/// A member as the wire has it.
pub(crate) fn member(user: &str, count: u32, info: &PresenceInfo) -> PresenceMember {
    PresenceMember {
        user_id: user.to_owned(),
        info: info.clone(),
        connections: count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(user: &str) -> Change {
        Change::Join(member(user, 1, &PresenceInfo::empty()))
    }

    fn drain(outbox: &Outbox) -> Vec<String> {
        let mut batch = std::collections::VecDeque::new();
        let _ = outbox.take_now(&mut batch);
        batch.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_pending_watcher_gets_its_snapshot_then_only_newer_changes() {
        let local = Local::default();
        let topic = Topic::list(1);
        let outbox = Arc::new(Outbox::new(16));
        let (ticket, update) = local.watch(&topic, 7, &outbox, None);
        assert!(update.is_none(), "watching only changes no count");
        // Changes while the snapshot is read are held, not queued.
        local.changed(&topic, 1, &join("a"));
        local.changed(&topic, 2, &join("b"));
        assert!(drain(&outbox).is_empty());
        // The snapshot reflects version 1: only version 2 follows it.
        let snapshot = Snapshot {
            version: 1,
            members: vec![member("a", 1, &PresenceInfo::empty())],
        };
        // An older registration's snapshot is dropped.
        local.finish(&topic, 7, ticket + 100, Some(&snapshot));
        assert!(drain(&outbox).is_empty());
        local.finish(&topic, 7, ticket, Some(&snapshot));
        let frames = drain(&outbox);
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert!(
            frames[0].starts_with(r#"{"action":"presence","#),
            "{}",
            frames[0]
        );
        assert!(frames[1].contains(r#""user_id":"b""#), "{}", frames[1]);
        // Live now: changes go straight out.
        local.changed(&topic, 3, &Change::Leave("a".into()));
        assert_eq!(
            drain(&outbox),
            [r#"{"action":"presence_leave","topic":"list:1","user_id":"a"}"#]
        );
    }

    #[test]
    fn counts_are_per_user_and_a_full_hold_closes_the_watcher() {
        let local = Local::default();
        let topic = Topic::list(1);
        let (a, b) = (Arc::new(Outbox::new(2)), Arc::new(Outbox::new(2)));
        let user: Arc<str> = "mom".into();
        let (_, first) = local.watch(&topic, 1, &a, Some((user.clone(), PresenceInfo::empty())));
        let (_, second) = local.watch(&topic, 2, &b, Some((user.clone(), PresenceInfo::empty())));
        assert_eq!(first.map(|u| u.count), Some(1));
        assert_eq!(second.map(|u| u.count), Some(2));
        assert_eq!(local.entry_count(), 1);
        assert_eq!(local.unwatch(&topic, 1).map(|u| u.count), Some(1));
        // Three changes held for a watcher whose queue takes two: closed as a slow consumer.
        for v in 1..=3 {
            local.changed(&topic, v, &join("x"));
        }
        assert_eq!(b.close_code(), Some(CloseCode::SlowConsumer));
        assert_eq!(local.unwatch(&topic, 2).map(|u| u.count), Some(0));
        assert_eq!((local.entry_count(), local.watcher_count()), (0, 0));
    }

    #[test]
    fn a_refusal_undoes_the_join_it_refused_only() {
        let local = Local::default();
        let topic = Topic::list(1);
        let outbox = Arc::new(Outbox::new(16));
        let mom = || Some((Arc::<str>::from("mom"), PresenceInfo::empty()));
        let (first, _) = local.watch(&topic, 1, &outbox, mom());
        // The same join again (a repeated subscribe) keeps the first join in effect.
        let (second, update) = local.watch(&topic, 1, &outbox, mom());
        assert!(update.is_none());
        assert!(!local.refuse(&topic, 1, second).0);
        let (applied, update) = local.refuse(&topic, 1, first);
        assert!(applied);
        assert_eq!(update.map(|u| u.count), Some(0));
        // Joined again with a new registration: an old refusal no longer applies.
        let (_, _) = local.watch(&topic, 1, &outbox, None);
        let (third, _) = local.watch(&topic, 1, &outbox, mom());
        assert!(!local.refuse(&topic, 1, first).0);
        assert!(local.refuse(&topic, 1, third).0);
    }
}
