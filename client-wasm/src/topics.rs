//! The client's topics: listeners per topic (reference counted) and the server subscription
//! behind each.
//!
//! Several listeners on one topic share ONE server subscription: the first listener makes the
//! client send `subscribe`, the last one leaving makes it send `unsubscribe`. While the socket
//! is down nothing is sent; when it opens, every topic with listeners is subscribed again, which
//! is the queue of "subscribe/unsubscribe while disconnected" with the cancelling pairs already
//! removed.
//!
//! Each listener comes with a `ready` handle (`R`, a promise's resolve/reject pair in the
//! browser) that is handed back when the server acknowledges the topic. Acks are matched to
//! requests in order: a `subscribed` that answers a request whose topic has since been dropped
//! is skipped, so a new listener is never told "ready" by the ack of an older request.
//!
//! Recovery: each topic remembers the stream position (`seq`, `epoch`) of the last event it
//! delivered. After a reconnect the topic is subscribed again with `since` that position; the
//! server replays what was missed before its ack, and only an ack with `recovered: false` (or
//! a topic that had no position yet) invalidates the topic's queries. An event at or below
//! the remembered `seq` of the same epoch is a duplicate and is dropped.

use std::collections::BTreeMap;

/// Identifies one listener (one `subscribe` call on the client).
pub type ListenerId = u32;

/// Where the server subscription of a topic stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Not requested on the current socket (or no socket).
    Unsent,
    /// `subscribe` sent, ack not yet received.
    Requested,
    /// Acknowledged: events flow.
    Active,
}

#[derive(Debug)]
struct Entry<L, R> {
    listeners: Vec<(ListenerId, L)>,
    waiting: Vec<(ListenerId, R)>,
    server: ServerState,
    invalidate_on_ack: bool,
    /// `seq` and `epoch` of the last event delivered on this topic.
    position: Option<(u64, String)>,
}

/// What [`TopicSet::add`] asks the caller to do.
#[derive(Debug, PartialEq)]
pub struct Added<R> {
    /// The new listener's id (for [`TopicSet::remove`]).
    pub id: ListenerId,
    /// Send `subscribe` for the topic now (first listener, socket open).
    pub send_subscribe: bool,
    /// The topic is already acknowledged: settle this ready handle now.
    pub ready_now: Option<R>,
}

/// What [`TopicSet::remove`] asks the caller to do.
#[derive(Debug, PartialEq)]
pub struct Removed<R> {
    /// The listener's topic.
    pub topic: String,
    /// Send `unsubscribe` for the topic now (last listener, socket open).
    pub send_unsubscribe: bool,
    /// The listener's ready handle, if the ack had not come yet (reject it).
    pub unsettled: Option<R>,
}

/// What a `subscribed` ack settles.
#[derive(Debug, PartialEq)]
pub struct Acked<R> {
    /// Ready handles to resolve.
    pub ready: Vec<R>,
    /// The ack ends a resubscription after a reconnect: invalidate the topic's queries once.
    pub invalidate: bool,
}

/// Topics → listeners, with the server-side state of each topic.
#[derive(Debug)]
pub struct TopicSet<L, R> {
    entries: BTreeMap<String, Entry<L, R>>,
    /// `subscribed` acks still to come for requests whose topic was dropped meanwhile (a short
    /// list: a plain Vec keeps the wasm smaller than a second map type).
    stale_acks: Vec<(String, u32)>,
    open: bool,
    next_id: ListenerId,
}

impl<L, R> Default for TopicSet<L, R> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            stale_acks: Vec::new(),
            open: false,
            next_id: 1,
        }
    }
}

impl<L, R> TopicSet<L, R> {
    /// An empty set, socket closed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a listener on `topic`.
    pub fn add(&mut self, topic: &str, listener: L, ready: R) -> Added<R> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let open = self.open;
        let mut send_subscribe = false;
        let entry = self.entries.entry(topic.to_owned()).or_insert_with(|| {
            let server = if open {
                send_subscribe = true;
                ServerState::Requested
            } else {
                ServerState::Unsent
            };
            Entry {
                listeners: Vec::new(),
                waiting: Vec::new(),
                server,
                invalidate_on_ack: false,
                position: None,
            }
        });
        entry.listeners.push((id, listener));
        let ready_now = if entry.server == ServerState::Active {
            Some(ready)
        } else {
            entry.waiting.push((id, ready));
            None
        };
        Added {
            id,
            send_subscribe,
            ready_now,
        }
    }

    /// Removes a listener; `None` if it was already removed.
    pub fn remove(&mut self, id: ListenerId) -> Option<Removed<R>> {
        // Linear in the number of topics: a page has tens of them, not thousands.
        let (topic, entry) = self
            .entries
            .iter_mut()
            .find(|(_, e)| e.listeners.iter().any(|(i, _)| *i == id))?;
        let topic = topic.clone();
        entry.listeners.retain(|(i, _)| *i != id);
        let unsettled = entry
            .waiting
            .iter()
            .position(|(i, _)| *i == id)
            .map(|pos| entry.waiting.remove(pos).1);
        let mut send_unsubscribe = false;
        if entry.listeners.is_empty() {
            let server = entry.server;
            self.entries.remove(&topic);
            if self.open && server != ServerState::Unsent {
                send_unsubscribe = true;
                if server == ServerState::Requested {
                    match self.stale_acks.iter_mut().find(|(t, _)| *t == topic) {
                        Some((_, n)) => *n += 1,
                        None => self.stale_acks.push((topic.clone(), 1)),
                    }
                }
            }
        }
        Some(Removed {
            topic,
            send_unsubscribe,
            unsettled,
        })
    }

    /// The socket opened: every topic is requested again. Returns the topics to subscribe, in
    /// name order, each with the position to resume from (`since`; only after a reconnect).
    /// `reconnect` marks them for one query invalidation unless their ack says `recovered`.
    pub fn on_open(&mut self, reconnect: bool) -> Vec<(String, Option<(u64, String)>)> {
        self.open = true;
        self.stale_acks.clear();
        self.entries
            .iter_mut()
            .map(|(topic, entry)| {
                entry.server = ServerState::Requested;
                entry.invalidate_on_ack = reconnect;
                let since = if reconnect {
                    entry.position.clone()
                } else {
                    None
                };
                (topic.clone(), since)
            })
            .collect()
    }

    /// An event arrived on `topic` with position (`seq`, `epoch`) when the server sent one.
    /// Returns whether to deliver it: `false` for a duplicate (at or below the remembered
    /// `seq` of the same epoch). A new epoch starts over.
    pub fn on_event(&mut self, topic: &str, seq: Option<u64>, epoch: Option<&str>) -> bool {
        let (Some(entry), Some(seq), Some(epoch)) = (self.entries.get_mut(topic), seq, epoch)
        else {
            return true;
        };
        if let Some((last, known)) = &entry.position {
            if known == epoch && seq <= *last {
                return false;
            }
        }
        entry.position = Some((seq, epoch.to_owned()));
        true
    }

    /// The socket is gone: nothing is subscribed on the server any more.
    pub fn on_close(&mut self) {
        self.open = false;
        self.stale_acks.clear();
        for entry in self.entries.values_mut() {
            entry.server = ServerState::Unsent;
            entry.invalidate_on_ack = false;
        }
    }

    /// The server acknowledged `subscribe` for `topic`; `recovered` is the ack's field (only
    /// present when the subscribe carried `since`).
    pub fn on_subscribed(&mut self, topic: &str, recovered: Option<bool>) -> Option<Acked<R>> {
        if let Some(pos) = self.stale_acks.iter().position(|(t, _)| t == topic) {
            let n = &mut self.stale_acks[pos].1;
            *n -= 1;
            if *n == 0 {
                self.stale_acks.swap_remove(pos);
            }
            return None;
        }
        let entry = self.entries.get_mut(topic)?;
        if entry.server != ServerState::Requested {
            return None;
        }
        entry.server = ServerState::Active;
        if recovered == Some(false) {
            // The server replayed nothing: the next event starts the position afresh.
            entry.position = None;
        }
        // Recovered: the missed events came before this ack, the queries are up to date.
        let invalidate = std::mem::take(&mut entry.invalidate_on_ack) && recovered != Some(true);
        Some(Acked {
            ready: entry.waiting.drain(..).map(|(_, r)| r).collect(),
            invalidate,
        })
    }

    /// The server refused `topic` with an error reply: returns the handles to reject.
    pub fn on_refused(&mut self, topic: &str) -> Vec<R> {
        match self.entries.get_mut(topic) {
            Some(entry) => entry.waiting.drain(..).map(|(_, r)| r).collect(),
            None => Vec::new(),
        }
    }

    /// The listeners of `topic` (none for an unknown topic).
    pub fn listeners(&self, topic: &str) -> impl Iterator<Item = &L> {
        self.entries
            .get(topic)
            .into_iter()
            .flat_map(|e| e.listeners.iter().map(|(_, l)| l))
    }

    /// The server state of `topic`, if it has listeners.
    pub fn state(&self, topic: &str) -> Option<ServerState> {
        self.entries.get(topic).map(|e| e.server)
    }

    /// The topics that have listeners, in name order.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Drops everything (the client closed); returns the unsettled ready handles.
    pub fn clear(&mut self) -> Vec<R> {
        self.stale_acks.clear();
        std::mem::take(&mut self.entries)
            .into_values()
            .flat_map(|e| e.waiting.into_iter().map(|(_, r)| r))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Set = TopicSet<&'static str, &'static str>;

    #[test]
    fn listeners_share_one_server_subscription() {
        let mut s = Set::new();
        s.on_open(false);
        let a = s.add("list:1", "a", "ra");
        assert!(a.send_subscribe);
        let b = s.add("list:1", "b", "rb");
        assert!(!b.send_subscribe, "second listener reuses the subscription");
        assert_eq!(
            s.listeners("list:1").copied().collect::<Vec<_>>(),
            ["a", "b"]
        );

        let ack = s.on_subscribed("list:1", None).unwrap();
        assert_eq!(ack.ready, ["ra", "rb"]);
        assert!(!ack.invalidate);
        // A third listener on an active topic is ready at once.
        let c = s.add("list:1", "c", "rc");
        assert_eq!(c.ready_now, Some("rc"));
        assert!(!c.send_subscribe);

        assert!(!s.remove(a.id).unwrap().send_unsubscribe);
        assert!(!s.remove(c.id).unwrap().send_unsubscribe);
        let last = s.remove(b.id).unwrap();
        assert!(last.send_unsubscribe, "last listener leaves");
        assert_eq!(last.topic, "list:1");
        assert_eq!(s.topics().count(), 0);
        assert!(s.remove(b.id).is_none(), "removing twice is a no-op");
    }

    #[test]
    fn offline_changes_are_applied_on_open() {
        let mut s = Set::new();
        let a = s.add("list:1", "a", "ra");
        let b = s.add("gifts:all", "b", "rb");
        let c = s.add("occasion:2", "c", "rc");
        assert!(!a.send_subscribe && !b.send_subscribe && !c.send_subscribe);
        let removed = s.remove(c.id).unwrap();
        assert!(!removed.send_unsubscribe, "nothing to undo on the server");
        assert_eq!(removed.unsettled, Some("rc"));
        assert_eq!(
            s.on_open(false),
            [("gifts:all".to_owned(), None), ("list:1".to_owned(), None)]
        );
        assert_eq!(s.state("list:1"), Some(ServerState::Requested));
    }

    #[test]
    fn reconnect_resubscribes_and_invalidates_once() {
        let mut s = Set::new();
        s.on_open(false);
        s.add("list:1", "a", "ra");
        s.on_subscribed("list:1", None).unwrap();
        s.on_close();
        assert_eq!(s.state("list:1"), Some(ServerState::Unsent));
        let b = s.add("list:1", "b", "rb");
        assert_eq!(b.ready_now, None, "not ready while disconnected");
        assert_eq!(s.on_open(true), [("list:1".to_owned(), None)]);
        let ack = s.on_subscribed("list:1", None).unwrap();
        assert!(ack.invalidate);
        assert_eq!(ack.ready, ["rb"]);
        assert!(
            s.on_subscribed("list:1", None).is_none(),
            "duplicate ack ignored"
        );
    }

    #[test]
    fn stale_ack_does_not_settle_a_newer_request() {
        let mut s = Set::new();
        s.on_open(false);
        let a = s.add("list:1", "a", "ra");
        assert!(s.remove(a.id).unwrap().send_unsubscribe);
        let b = s.add("list:1", "b", "rb");
        assert!(b.send_subscribe);
        // Acks arrive in request order: subscribed (for a), unsubscribed, subscribed (for b).
        assert!(s.on_subscribed("list:1", None).is_none());
        assert_eq!(s.on_subscribed("list:1", None).unwrap().ready, ["rb"]);
    }

    #[test]
    fn refusal_and_clear_hand_back_unsettled_handles() {
        let mut s = Set::new();
        s.on_open(false);
        s.add("list:1", "a", "ra");
        s.add("list:2", "b", "rb");
        assert_eq!(s.on_refused("list:1"), ["ra"]);
        assert!(s.on_refused("nope").is_empty());
        assert_eq!(s.clear(), ["rb"]);
        assert_eq!(s.topics().count(), 0);
    }

    #[test]
    fn reconnect_resumes_from_the_last_position_and_drops_duplicates() {
        let mut s = Set::new();
        s.on_open(false);
        s.add("list:1", "a", "ra");
        s.on_subscribed("list:1", None).unwrap();
        assert!(s.on_event("list:1", Some(1), Some("e")));
        assert!(s.on_event("list:1", Some(2), Some("e")));
        assert!(!s.on_event("list:1", Some(2), Some("e")), "duplicate");
        assert!(
            s.on_event("list:1", None, None),
            "a position-less event is delivered"
        );
        s.on_close();
        assert_eq!(
            s.on_open(true),
            [("list:1".to_owned(), Some((2, "e".to_owned())))]
        );
        // The replay (3) and a duplicate of it (2) before the ack: 2 is dropped.
        assert!(!s.on_event("list:1", Some(2), Some("e")));
        assert!(s.on_event("list:1", Some(3), Some("e")));
        let ack = s.on_subscribed("list:1", Some(true)).unwrap();
        assert!(!ack.invalidate, "recovered: nothing to refetch");
    }

    #[test]
    fn failed_recovery_invalidates_and_starts_over() {
        let mut s = Set::new();
        s.on_open(false);
        s.add("list:1", "a", "ra");
        s.on_subscribed("list:1", None).unwrap();
        assert!(s.on_event("list:1", Some(7), Some("old")));
        s.on_close();
        s.on_open(true);
        assert!(s.on_subscribed("list:1", Some(false)).unwrap().invalidate);
        // The new epoch numbers from 1 again and is delivered.
        assert!(s.on_event("list:1", Some(1), Some("new")));
        // A topic without a position after a reconnect invalidates (the old behaviour).
        s.add("list:2", "b", "rb");
        s.on_subscribed("list:2", None).unwrap();
        s.on_close();
        let open = s.on_open(true);
        assert_eq!(open[1], ("list:2".to_owned(), None));
        assert!(s.on_subscribed("list:2", None).unwrap().invalidate);
    }
}
