//! The in-memory presence store: one node, the default.
//!
//! The node's counts are the whole truth: every [`Update`] is applied under one lock and its
//! change handed to the node's [`Watchers`] before the lock is released, so changes reach the
//! watchers in version order and a snapshot taken under the same lock reflects exactly the
//! changes numbered up to its version. Versions come from one counter for every topic (a topic
//! emptied and used again never reuses a number a pending watcher may compare with).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tidings_protocol::{PresenceInfo, Topic};

use super::local::member;
use super::{Change, Presence, PresenceError, Snapshot, Update, Watchers};
use crate::broker::BoxFuture;

/// The in-memory presence store (see the module docs).
#[derive(Default)]
pub struct MemoryPresence {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    version: u64,
    /// Present users per topic, in `user_id` order (snapshots list them so).
    topics: HashMap<Topic, BTreeMap<Arc<str>, (u32, PresenceInfo)>>,
}

impl std::fmt::Debug for MemoryPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPresence").finish_non_exhaustive()
    }
}

impl MemoryPresence {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn apply(
        &self,
        local: &dyn Watchers,
        update: Update,
        max_members: usize,
    ) -> Result<(), PresenceError> {
        let mut state = self.state();
        let State { version, topics } = &mut *state;
        let users = topics.entry(update.topic.clone()).or_default();
        let change = if update.count == 0 {
            users
                .remove(&update.user)
                .map(|_| Change::Leave(update.user.to_string()))
        } else {
            let full = users.len() >= max_members;
            match users.get_mut(&update.user) {
                Some((count, info)) if *count == update.count && *info == update.info => None,
                Some(entry) => {
                    *entry = (update.count, update.info);
                    Some(Change::Join(member(&update.user, entry.0, &entry.1)))
                }
                None if full => {
                    if users.is_empty() {
                        topics.remove(update.topic.as_str());
                    }
                    return Err(PresenceError::Full(max_members));
                }
                None => {
                    let change = Change::Join(member(&update.user, update.count, &update.info));
                    users.insert(update.user, (update.count, update.info));
                    Some(change)
                }
            }
        };
        if users.is_empty() {
            topics.remove(update.topic.as_str());
        }
        if let Some(change) = change {
            *version += 1;
            local.changed(&update.topic, *version, &change);
        }
        Ok(())
    }
}

impl Presence for MemoryPresence {
    fn update(
        &self,
        local: &dyn Watchers,
        update: Update,
        max_members: usize,
    ) -> BoxFuture<'static, Result<(), PresenceError>> {
        Box::pin(std::future::ready(self.apply(local, update, max_members)))
    }

    fn snapshot(&self, topic: Topic) -> BoxFuture<'static, Result<Snapshot, PresenceError>> {
        let state = self.state();
        let members = state
            .topics
            .get(topic.as_str())
            .map(|users| {
                users
                    .iter()
                    .map(|(user, (count, info))| member(user, *count, info))
                    .collect()
            })
            .unwrap_or_default();
        let snapshot = Snapshot {
            version: state.version,
            members,
        };
        Box::pin(std::future::ready(Ok(snapshot)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Seen(Mutex<Vec<(u64, Change)>>);

    impl Watchers for Seen {
        fn changed(&self, _topic: &Topic, version: u64, change: &Change) {
            self.0.lock().unwrap().push((version, change.clone()));
        }
        fn entries(&self) -> Vec<Update> {
            Vec::new()
        }
        fn take_dirty(&self) -> Vec<Update> {
            Vec::new()
        }
        fn failed(&self, _update: &Update) {}
    }

    fn update(user: &str, count: u32) -> Update {
        Update {
            topic: Topic::list(1),
            user: user.into(),
            count,
            info: PresenceInfo::empty(),
        }
    }

    fn run<T>(f: BoxFuture<'static, T>) -> T {
        futures_util::FutureExt::now_or_never(f).expect("ready at once")
    }

    #[test]
    fn counts_upserts_leaves_and_the_member_bound() {
        let store = MemoryPresence::new();
        let seen = Seen::default();
        run(store.update(&seen, update("a", 1), 2)).unwrap();
        run(store.update(&seen, update("a", 2), 2)).unwrap();
        // Same count and info: no change announced.
        run(store.update(&seen, update("a", 2), 2)).unwrap();
        run(store.update(&seen, update("b", 1), 2)).unwrap();
        assert_eq!(
            run(store.update(&seen, update("c", 1), 2)),
            Err(PresenceError::Full(2))
        );
        // A present user is never refused.
        run(store.update(&seen, update("b", 3), 2)).unwrap();
        run(store.update(&seen, update("a", 0), 2)).unwrap();
        let snapshot = run(store.snapshot(Topic::list(1))).unwrap();
        assert_eq!(snapshot.version, 5);
        assert_eq!(snapshot.members.len(), 1);
        assert_eq!(snapshot.members[0].connections, 3);
        let seen = seen.0.into_inner().unwrap();
        assert_eq!(seen.len(), 5);
        assert_eq!(seen[4], (5, Change::Leave("a".into())));
        // Leaving twice changes nothing.
        let again = Seen::default();
        run(store.update(&again, update("a", 0), 2)).unwrap();
        assert!(again.0.into_inner().unwrap().is_empty());
    }
}
