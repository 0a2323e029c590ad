//! `Idempotency-Key` for `POST /publish` and `POST /publish/batch`: a retried request with the
//! same key (from the same publisher) is answered with the first one's answer, and its events
//! are not published again.
//!
//! A key is claimed before anything is published ([`Begin::New`]); a request that succeeds
//! stores its answer under the key for [`Config::with_idempotency_ttl`](crate::Config::with_idempotency_ttl);
//! one that fails releases the key, so the retry runs. A request arriving while the first is
//! still running gets [`Begin::InFlight`] (answered 409: retry later). Keys belong to their
//! publisher (the token's `sub`): two backends cannot see each other's answers.
//!
//! Bounded: at most [`Config::with_max_idempotency_keys`](crate::Config::with_max_idempotency_keys)
//! keys and about [`Config::with_max_idempotency_bytes`](crate::Config::with_max_idempotency_bytes)
//! bytes (keys and stored answers) are held. Expired ones are dropped first; when every held
//! key is still live, the oldest is forgotten (a retry of it after that would publish again).
//! Keys are at most [`MAX_KEY_LEN`] bytes of visible ASCII.
//!
//! This store serves the memory broker. With Redis the keys are claimed in Redis instead
//! (`Broker::claim_key`: `SET NX PX`), so every node sees them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Longest `Idempotency-Key` accepted, in bytes.
pub(crate) const MAX_KEY_LEN: usize = 255;

/// A stored answer: its status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) status: u16,
    pub(crate) body: String,
}

impl Stored {
    /// `status`, a newline, `body`: how a shared store (Redis) keeps it.
    pub(crate) fn encode(&self) -> String {
        format!("{}\n{}", self.status, self.body)
    }

    /// The inverse of [`Stored::encode`].
    pub(crate) fn decode(text: &str) -> Option<Self> {
        let (status, body) = text.split_once('\n')?;
        Some(Self {
            status: status.parse().ok()?,
            body: body.to_owned(),
        })
    }
}

/// What a request holding a key may do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Begin {
    /// The key is new: publish, then [`Store::finish`] or [`Store::release`].
    New,
    /// The key was used by a request that succeeded: answer this.
    Done(Stored),
    /// A request with the key is still running.
    InFlight,
}

enum Slot {
    InFlight,
    Done(Stored),
}

struct Entry {
    slot: Slot,
    expires: Instant,
}

type Key = (String, String);

struct Inner {
    entries: HashMap<Key, Entry>,
    /// Bytes held: every key's publisher and name plus every stored answer.
    bytes: usize,
    /// Keys in claim order, for expiry and eviction (a key may appear again after it was
    /// released and claimed anew; stale positions are skipped).
    order: VecDeque<(Instant, Key)>,
}

impl Inner {
    fn remove(&mut self, id: &Key) {
        if let Some(e) = self.entries.remove(id) {
            let answer = match &e.slot {
                Slot::Done(stored) => stored.body.len(),
                Slot::InFlight => 0,
            };
            self.bytes -= id.0.len() + id.1.len() + answer;
        }
    }
}

/// The keys of every publisher (see the module docs).
pub(crate) struct Store {
    inner: Mutex<Inner>,
    ttl: Duration,
    max: usize,
    max_bytes: usize,
}

impl Store {
    pub(crate) fn new(ttl: Duration, max: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                bytes: 0,
                order: VecDeque::new(),
            }),
            ttl,
            max: max.max(1),
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims `key` of `publisher` at `now`, or tells what became of it.
    pub(crate) fn begin(&self, publisher: &str, key: &str, now: Instant) -> Begin {
        let mut inner = self.lock();
        let id = (publisher.to_owned(), key.to_owned());
        match inner.entries.get(&id) {
            Some(e) if e.expires > now => {
                return match &e.slot {
                    Slot::InFlight => Begin::InFlight,
                    Slot::Done(stored) => Begin::Done(stored.clone()),
                };
            }
            _ => {}
        }
        // Expired keys first, then (all live) the oldest ones.
        while let Some((expires, old)) = inner.order.front().cloned() {
            let live = inner.entries.get(&old).map(|e| e.expires);
            if live != Some(expires) {
                inner.order.pop_front(); // released or re-claimed since
            } else if expires <= now
                || inner.entries.len() >= self.max
                || inner.bytes >= self.max_bytes
            {
                inner.order.pop_front();
                inner.remove(&old);
            } else {
                break;
            }
        }
        let expires = now + self.ttl;
        inner.bytes += id.0.len() + id.1.len();
        inner.entries.insert(
            id.clone(),
            Entry {
                slot: Slot::InFlight,
                expires,
            },
        );
        inner.order.push_back((expires, id));
        Begin::New
    }

    /// The request holding `key` succeeded: keep its answer until the key expires.
    pub(crate) fn finish(&self, publisher: &str, key: &str, stored: Stored) {
        let mut inner = self.lock();
        let added = stored.body.len();
        if let Some(e) = inner
            .entries
            .get_mut(&(publisher.to_owned(), key.to_owned()))
        {
            e.slot = Slot::Done(stored);
            inner.bytes += added;
        }
    }

    /// The request holding `key` failed: forget it, so a retry runs.
    pub(crate) fn release(&self, publisher: &str, key: &str) {
        let mut inner = self.lock();
        let id = (publisher.to_owned(), key.to_owned());
        if matches!(
            inner.entries.get(&id),
            Some(Entry {
                slot: Slot::InFlight,
                ..
            })
        ) {
            inner.remove(&id);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

/// Whether `key` is an acceptable `Idempotency-Key` (1 to [`MAX_KEY_LEN`] visible ASCII bytes).
pub(crate) fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(n: u16) -> Stored {
        Stored {
            status: n,
            body: "{}".into(),
        }
    }

    #[test]
    fn a_key_is_claimed_once_then_answers_its_first_result() {
        let s = Store::new(Duration::from_secs(60), 10, 1 << 20);
        let t = Instant::now();
        assert_eq!(s.begin("p", "k", t), Begin::New);
        assert_eq!(s.begin("p", "k", t), Begin::InFlight);
        // Another publisher's key of the same name is its own.
        assert_eq!(s.begin("q", "k", t), Begin::New);
        s.finish("p", "k", stored(202));
        assert_eq!(s.begin("p", "k", t), Begin::Done(stored(202)));
        // A failed request releases its key.
        s.release("q", "k");
        assert_eq!(s.begin("q", "k", t), Begin::New);
        // After the TTL the key is new again.
        assert_eq!(s.begin("p", "k", t + Duration::from_secs(61)), Begin::New);
    }

    #[test]
    fn the_store_is_bounded_and_forgets_the_oldest() {
        let s = Store::new(Duration::from_secs(60), 3, 1 << 20);
        let t = Instant::now();
        for k in ["a", "b", "c", "d"] {
            assert_eq!(s.begin("p", k, t), Begin::New);
            s.finish("p", k, stored(202));
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.begin("p", "a", t), Begin::New, "the oldest was forgotten");
        assert!(matches!(s.begin("p", "d", t), Begin::Done(_)));
        // Bytes are bounded too: a 100-byte cap holds one 60-byte answer at a time.
        let s = Store::new(Duration::from_secs(60), 100, 100);
        for k in ["a", "b", "c"] {
            assert_eq!(s.begin("p", k, t), Begin::New);
            s.finish(
                "p",
                k,
                Stored {
                    status: 200,
                    body: "x".repeat(60),
                },
            );
        }
        assert!(
            s.len() <= 2 && s.bytes() <= 100 + 62,
            "{} {}",
            s.len(),
            s.bytes()
        );
        assert!(matches!(s.begin("p", "c", t), Begin::Done(_)));
    }

    #[test]
    fn keys_are_short_visible_ascii() {
        assert!(valid_key("order-42/retry_1"));
        for bad in ["", "a b", "é", &"x".repeat(256)] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }
}
