//! Presence: who is present on each topic the client watches, as the app sees it.
//!
//! The server sends a topic's whole list of present users (a snapshot) after each subscribe
//! that asks for presence, then one `presence_join` (a user appears, or an entry changes: an
//! upsert) or `presence_leave` per change. A [`Rosters`] keeps one list per watched topic and
//! turns each of those frames into the [`Change`] the app is told about.
//!
//! A roster outlives the socket: after a reconnect the client subscribes again with the same
//! presence value, and the new snapshot is compared with what the roster holds, so the app
//! sees joins and leaves for the difference only. A user present before and after the
//! reconnect never leaves and rejoins (no flicker), and keeps its place in the list.
//!
//! `V` is the member as handed to the app (the parsed member object in the browser); a
//! member's `key` tells two versions of one user's entry apart (in the browser, the object's
//! JSON text: a new connection count or info is a change).

/// How a subscription takes part in its topic's presence. Ordered: a topic's server
/// subscription carries the highest level of its listeners.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Presence {
    /// No presence (a plain subscription).
    #[default]
    None,
    /// See who is present without being present (`"watch"`).
    Watch,
    /// Be present, and see who else is (`"join"`).
    Join,
}

impl Presence {
    /// The `presence` field of a `subscribe` at this level (`None`: left out).
    pub fn mode(self) -> Option<tidings_protocol::PresenceMode> {
        match self {
            Presence::None => None,
            Presence::Watch => Some(tidings_protocol::PresenceMode::Watch),
            Presence::Join => Some(tidings_protocol::PresenceMode::Join),
        }
    }
}

/// One present user.
#[derive(Debug, Clone, PartialEq)]
pub struct Member<V> {
    /// The user's id: one entry per user, however many connections.
    pub user_id: String,
    /// Tells two versions of the entry apart (equal keys: nothing changed).
    pub key: String,
    /// What the app is given.
    pub value: V,
}

/// What a presence frame changed on a topic (returned only when something did).
#[derive(Debug, PartialEq)]
pub struct Change<V> {
    /// Users that were not present before, in the frame's order.
    pub joined: Vec<V>,
    /// Users that are no longer present, as they were last seen.
    pub left: Vec<V>,
}

/// The present members of one watched topic.
#[derive(Debug)]
struct Roster<V> {
    topic: String,
    /// In the order they first appeared.
    members: Vec<Member<V>>,
    /// What the caller made of `members` (the browser's frozen array), until they change.
    cached: Option<V>,
}

/// The present members of each watched topic.
#[derive(Debug)]
pub struct Rosters<V> {
    /// A page watches tens of topics: a plain Vec keeps the wasm smaller than a map type.
    rosters: Vec<Roster<V>>,
}

impl<V> Default for Rosters<V> {
    fn default() -> Self {
        Self {
            rosters: Vec::new(),
        }
    }
}

impl<V: Clone> Rosters<V> {
    /// No topic watched.
    pub fn new() -> Self {
        Self::default()
    }

    fn roster(&mut self, topic: &str) -> Option<&mut Roster<V>> {
        self.rosters.iter_mut().find(|r| r.topic == topic)
    }

    /// Starts keeping `topic`'s members (empty until its snapshot); a no-op when it is kept.
    pub fn watch(&mut self, topic: &str) {
        if !self.is_watched(topic) {
            self.rosters.push(Roster {
                topic: topic.to_owned(),
                members: Vec::new(),
                cached: None,
            });
        }
    }

    /// Whether `topic`'s members are kept.
    pub fn is_watched(&self, topic: &str) -> bool {
        self.rosters.iter().any(|r| r.topic == topic)
    }

    /// The value cached for `topic`'s members by [`Rosters::cache`], if they have not changed
    /// since.
    pub fn cached(&self, topic: &str) -> Option<&V> {
        self.rosters
            .iter()
            .find(|r| r.topic == topic)?
            .cached
            .as_ref()
    }

    /// Keeps `value` (made from `topic`'s members) until they change; a no-op when `topic`
    /// is not watched.
    pub fn cache(&mut self, topic: &str, value: V) {
        if let Some(roster) = self.rosters.iter_mut().find(|r| r.topic == topic) {
            roster.cached = Some(value);
        }
    }

    /// Stops keeping `topic`'s members (its subscription ended or no longer asks for
    /// presence): everyone it held leaves.
    pub fn unwatch(&mut self, topic: &str) -> Option<Change<V>> {
        let at = self.rosters.iter().position(|r| r.topic == topic)?;
        let members = self.rosters.swap_remove(at).members;
        if members.is_empty() {
            return None;
        }
        Some(Change {
            joined: Vec::new(),
            left: members.into_iter().map(|m| m.value).collect(),
        })
    }

    /// `topic`'s members, in the order they first appeared (none when it is not watched).
    pub fn members(&self, topic: &str) -> impl Iterator<Item = &V> {
        self.rosters
            .iter()
            .filter(move |r| r.topic == topic)
            .flat_map(|r| r.members.iter().map(|m| &m.value))
    }

    /// A snapshot of `topic`: `members` is everyone present now. Compared with what the
    /// roster holds: users missing from it leave, new ones join, the others are updated in
    /// place. `None` when `topic` is not watched or nothing changed.
    pub fn snapshot(&mut self, topic: &str, members: Vec<Member<V>>) -> Option<Change<V>> {
        let roster = self.roster(topic)?;
        let mut changed = false;
        let mut left = Vec::new();
        let mut kept = Vec::with_capacity(members.len());
        for old in roster.members.drain(..) {
            // The last entry of a user wins (a snapshot never repeats one, but be exact).
            match members.iter().rev().find(|m| m.user_id == old.user_id) {
                Some(new) => {
                    changed |= new.key != old.key;
                    kept.push(new.clone());
                }
                None => left.push(old.value),
            }
        }
        let mut joined = Vec::new();
        for new in members {
            match kept.iter().position(|m| m.user_id == new.user_id) {
                Some(_) => {}
                None => {
                    joined.push(new.value.clone());
                    kept.push(new);
                }
            }
        }
        roster.members = kept;
        if !changed && joined.is_empty() && left.is_empty() {
            return None;
        }
        roster.cached = None;
        Some(Change { joined, left })
    }

    /// `member` joined `topic`, or its entry changed (an upsert). `None` when `topic` is not
    /// watched or the entry is the same.
    pub fn join(&mut self, topic: &str, member: Member<V>) -> Option<Change<V>> {
        let roster = self.roster(topic)?;
        let mut change = Change {
            joined: Vec::new(),
            left: Vec::new(),
        };
        match roster
            .members
            .iter_mut()
            .find(|m| m.user_id == member.user_id)
        {
            Some(old) if old.key == member.key => return None,
            Some(old) => *old = member,
            None => {
                change.joined.push(member.value.clone());
                roster.members.push(member);
            }
        }
        roster.cached = None;
        Some(change)
    }

    /// `user_id` left `topic`. `None` when `topic` is not watched or the user was not there.
    pub fn leave(&mut self, topic: &str, user_id: &str) -> Option<Change<V>> {
        let roster = self.roster(topic)?;
        let at = roster.members.iter().position(|m| m.user_id == user_id)?;
        let gone = roster.members.remove(at);
        roster.cached = None;
        Some(Change {
            joined: Vec::new(),
            left: vec![gone.value],
        })
    }

    /// Forgets every topic (the client closed).
    pub fn clear(&mut self) {
        self.rosters.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member whose value is `"<user>:<connections>"` and key the same.
    fn m(user: &str, connections: u32) -> Member<String> {
        let value = format!("{user}:{connections}");
        Member {
            user_id: user.to_owned(),
            key: value.clone(),
            value,
        }
    }

    fn members(r: &Rosters<String>, topic: &str) -> Vec<String> {
        r.members(topic).cloned().collect()
    }

    fn change(joined: &[&str], left: &[&str]) -> Option<Change<String>> {
        Some(Change {
            joined: joined.iter().map(|s| (*s).to_owned()).collect(),
            left: left.iter().map(|s| (*s).to_owned()).collect(),
        })
    }

    #[test]
    fn levels_are_ordered() {
        assert!(Presence::None < Presence::Watch && Presence::Watch < Presence::Join);
        assert_eq!(
            [Presence::Watch, Presence::Join, Presence::None]
                .into_iter()
                .max(),
            Some(Presence::Join)
        );
    }

    #[test]
    fn frames_of_an_unwatched_topic_change_nothing() {
        let mut r = Rosters::new();
        assert_eq!(r.snapshot("list:1", vec![m("1", 1)]), None);
        assert_eq!(r.join("list:1", m("1", 1)), None);
        assert_eq!(r.leave("list:1", "1"), None);
        assert_eq!(members(&r, "list:1"), Vec::<String>::new());
        assert!(!r.is_watched("list:1"));
    }

    #[test]
    fn first_snapshot_joins_everyone_then_deltas_apply() {
        let mut r = Rosters::new();
        r.watch("list:1");
        r.watch("list:1");
        assert!(r.is_watched("list:1"));
        assert_eq!(r.snapshot("list:1", vec![]), None, "empty: nothing changed");
        assert_eq!(
            r.snapshot("list:1", vec![m("1", 1), m("2", 2)]),
            change(&["1:1", "2:2"], &[])
        );
        assert_eq!(r.join("list:1", m("3", 1)), change(&["3:1"], &[]));
        // An upsert of a present user: a change, but no join.
        assert_eq!(r.join("list:1", m("1", 2)), change(&[], &[]));
        assert_eq!(r.join("list:1", m("1", 2)), None, "the same entry again");
        assert_eq!(members(&r, "list:1"), ["1:2", "2:2", "3:1"]);
        assert_eq!(r.leave("list:1", "2"), change(&[], &["2:2"]));
        assert_eq!(r.leave("list:1", "2"), None, "already gone");
        assert_eq!(members(&r, "list:1"), ["1:2", "3:1"]);
        // Other topics are separate.
        assert_eq!(members(&r, "list:2"), Vec::<String>::new());
    }

    #[test]
    fn a_new_snapshot_delivers_the_difference_only() {
        let mut r = Rosters::new();
        r.watch("list:1");
        r.snapshot("list:1", vec![m("1", 1), m("2", 1), m("3", 1)]);
        // After a reconnect: 2 left meanwhile, 4 arrived, 3 has another tab, 1 is unchanged.
        let c = r.snapshot("list:1", vec![m("4", 1), m("3", 2), m("1", 1)]);
        assert_eq!(c, change(&["4:1"], &["2:1"]));
        // Present before and after: kept in place, updated.
        assert_eq!(members(&r, "list:1"), ["1:1", "3:2", "4:1"]);
        // The same snapshot again: nothing to tell.
        assert_eq!(
            r.snapshot("list:1", vec![m("1", 1), m("3", 2), m("4", 1)]),
            None
        );
        // Only a count changed: a change without joins or leaves.
        assert_eq!(
            r.snapshot("list:1", vec![m("1", 1), m("3", 1), m("4", 1)]),
            change(&[], &[])
        );
        // Everyone gone.
        assert_eq!(
            r.snapshot("list:1", vec![]),
            change(&[], &["1:1", "3:1", "4:1"])
        );
    }

    #[test]
    fn a_repeated_user_in_a_snapshot_is_one_entry() {
        let mut r = Rosters::new();
        r.watch("t");
        assert_eq!(
            r.snapshot("t", vec![m("1", 1), m("1", 2)]),
            change(&["1:1"], &[])
        );
        assert_eq!(members(&r, "t"), ["1:1"]);
        r.snapshot("t", vec![m("1", 3), m("1", 4)]);
        assert_eq!(members(&r, "t"), ["1:4"], "the last entry wins");
    }

    #[test]
    fn a_cached_value_lasts_until_the_members_change() {
        let mut r = Rosters::new();
        r.cache("t", "unwatched".to_owned());
        assert_eq!(r.cached("t"), None);
        r.watch("t");
        r.snapshot("t", vec![m("1", 1)]);
        r.cache("t", "v1".to_owned());
        assert_eq!(r.cached("t").map(String::as_str), Some("v1"));
        assert_eq!(r.join("t", m("1", 1)), None);
        assert_eq!(r.cached("t").map(String::as_str), Some("v1"), "no change");
        assert_eq!(r.snapshot("t", vec![m("1", 1)]), None);
        assert_eq!(
            r.cached("t").map(String::as_str),
            Some("v1"),
            "the same snapshot"
        );
        r.join("t", m("2", 1));
        assert_eq!(r.cached("t"), None);
        r.cache("t", "v2".to_owned());
        r.leave("t", "2");
        assert_eq!(r.cached("t"), None);
    }

    #[test]
    fn unwatching_makes_everyone_leave() {
        let mut r = Rosters::new();
        r.watch("a");
        r.watch("b");
        assert_eq!(r.unwatch("a"), None, "nobody was there");
        assert_eq!(r.unwatch("a"), None, "not watched any more");
        r.snapshot("b", vec![m("1", 1)]);
        assert_eq!(r.unwatch("b"), change(&[], &["1:1"]));
        assert!(!r.is_watched("b"));
        assert_eq!(r.join("b", m("2", 1)), None);
        r.watch("c");
        r.clear();
        assert!(!r.is_watched("c"));
    }
}
