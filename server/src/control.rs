//! Server-side control of sessions: who is connected (by user and token id), closing a
//! user's connections, and revoked tokens.
//!
//! [`Sessions`] holds one entry per open, authenticated connection (its user, its token's
//! `jti` and its outbox), so `POST /admin/disconnect` can close every connection of a user
//! with 4006 without walking the topic table. Entries leave with their connection
//! ([`SessionGuard`]); the table is bounded by the connection limits.
//!
//! [`Revocations`] is the bounded store behind `POST /admin/revoke`: a `jti`, or a whole user,
//! refused until a time. Checked at the handshake and on every in-band refresh. An entry is
//! dropped once its time has passed; when the store holds
//! [`Config::with_max_revocations`](crate::Config::with_max_revocations) live entries a new
//! one is refused (the operator learns it, rather than an old revocation silently lapsing).
//!
//! A [`Command`] is what travels between nodes (with the Redis broker, on the
//! `tidings:control` channel): every node applies it to its own sessions and store.
//! Applying a command twice changes nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tidings_protocol::CloseCode;

use crate::auth::Claims;
use crate::outbox::Outbox;

/// Longest `sub` or `jti` a command may name, in bytes (longer ones cannot be in a token
/// anyone would issue, and would only fill the store).
pub(crate) const MAX_ID_LEN: usize = 1024;

/// A control command, applied on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(crate) enum Command {
    /// Close every connection of `sub` with 4006.
    Disconnect { sub: String },
    /// Refuse the token `jti`, or every token of `sub`, until `until` (Unix seconds), and
    /// close the connections that use it with 4006.
    Revoke {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jti: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sub: Option<String>,
        until: u64,
    },
}

impl Command {
    /// Until when (Unix seconds) the command must still reach a node that was not listening
    /// when it was sent: a revocation's `until`; a disconnect finds its connections gone.
    pub(crate) fn keep_until(&self) -> Option<u64> {
        match self {
            Self::Disconnect { .. } => None,
            Self::Revoke { until, .. } => Some(*until),
        }
    }
}

/// One open connection: its outbox (which also names its user, [`Outbox::peer`]) and its
/// token's `jti`.
struct Session {
    jti: Option<Box<str>>,
    outbox: Arc<Outbox>,
}

/// Every open, authenticated connection, by a number of its own. Closing a user's
/// connections walks the table (an admin command, rare); connecting and leaving touch one
/// entry. Flat rather than by user: the table lives as long as the connections, and a
/// per-user entry would cost a key, a list and a second copy of the user's id per connection.
#[derive(Default)]
pub(crate) struct Sessions {
    by_id: Mutex<HashMap<u64, Session>>,
    next_id: AtomicU64,
}

/// Removes its connection from [`Sessions`] when dropped.
pub(crate) struct SessionGuard {
    sessions: Arc<Sessions>,
    id: u64,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.id);
    }
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Session>> {
        // A panic while holding it cannot leave the map inconsistent (each change is one
        // call), so a poisoned lock is still usable.
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection of `claims.sub` (its outbox's peer must be that user).
    pub(crate) fn register(self: &Arc<Self>, claims: &Claims, outbox: Arc<Outbox>) -> SessionGuard {
        debug_assert_eq!(&*outbox.peer().user, claims.sub.as_str());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let jti = claims.jti.as_deref().map(Box::from);
        self.lock().insert(id, Session { jti, outbox });
        SessionGuard {
            sessions: self.clone(),
            id,
        }
    }

    /// Closes with `code` every connection of `sub` (only those using token `jti`, when
    /// given); returns how many.
    pub(crate) fn close(&self, sub: Option<&str>, jti: Option<&str>, code: CloseCode) -> usize {
        let by_id = self.lock();
        let mut closed = 0;
        for session in by_id.values() {
            if sub.is_some_and(|sub| *session.outbox.peer().user != *sub) {
                continue;
            }
            if jti.is_none_or(|j| session.jti.as_deref() == Some(j)) {
                session.outbox.close(code);
                closed += 1;
            }
        }
        closed
    }
}

/// What a revocation names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Revoked {
    Token(String),
    User(String),
}

/// Revoked tokens and users, each until a time; bounded.
pub(crate) struct Revocations {
    until: Mutex<HashMap<Revoked, u64>>,
    max: usize,
}

/// The store is full of live revocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoreFull(pub(crate) usize);

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Revocations {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            until: Mutex::new(HashMap::new()),
            max,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Revoked, u64>> {
        self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses `jti` (or, without it, every token of `sub`) until `until` (Unix seconds). A
    /// later `until` for the same name extends it; an earlier one is ignored.
    ///
    /// # Errors
    /// [`StoreFull`] when the store already holds its maximum of unexpired entries.
    pub(crate) fn revoke(
        &self,
        jti: Option<&str>,
        sub: Option<&str>,
        until: u64,
    ) -> Result<(), StoreFull> {
        let key = match (jti, sub) {
            (Some(jti), _) => Revoked::Token(jti.to_owned()),
            (None, Some(sub)) => Revoked::User(sub.to_owned()),
            (None, None) => return Ok(()),
        };
        let now = now_secs();
        if until <= now {
            return Ok(()); // already over
        }
        let mut map = self.lock();
        if !map.contains_key(&key) && map.len() >= self.max {
            map.retain(|_, t| *t > now);
            if map.len() >= self.max {
                return Err(StoreFull(self.max));
            }
        }
        let entry = map.entry(key).or_insert(until);
        *entry = (*entry).max(until);
        Ok(())
    }

    /// Whether a token with `claims` is revoked now.
    pub(crate) fn is_revoked(&self, claims: &Claims) -> bool {
        let map = self.lock();
        if map.is_empty() {
            return false;
        }
        let now = now_secs();
        let live = |key: Revoked| map.get(&key).is_some_and(|t| *t > now);
        live(Revoked::User(claims.sub.clone()))
            || claims
                .jti
                .as_ref()
                .is_some_and(|j| live(Revoked::Token(j.clone())))
    }

    /// How many entries the store holds (expired ones included until the next sweep).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The control state of one node: its sessions and its revocations.
pub(crate) struct Control {
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) revocations: Revocations,
}

impl Control {
    pub(crate) fn new(max_revocations: usize) -> Self {
        Self {
            sessions: Arc::default(),
            revocations: Revocations::new(max_revocations),
        }
    }

    /// Applies `command` to this node; returns how many local connections it closed.
    ///
    /// # Errors
    /// [`StoreFull`] for a revocation the store has no room for (its connections are still
    /// closed).
    pub(crate) fn apply(&self, command: &Command) -> Result<usize, StoreFull> {
        match command {
            Command::Disconnect { sub } => {
                Ok(self
                    .sessions
                    .close(Some(sub), None, CloseCode::Disconnected))
            }
            Command::Revoke { jti, sub, until } => {
                let stored = self
                    .revocations
                    .revoke(jti.as_deref(), sub.as_deref(), *until);
                let closed = if jti.is_none() && sub.is_none() {
                    0
                } else {
                    self.sessions
                        .close(sub.as_deref(), jti.as_deref(), CloseCode::Disconnected)
                };
                stored.map(|()| closed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, jti: Option<&str>) -> Claims {
        Claims {
            sub: sub.into(),
            exp: u64::MAX,
            scope: None,
            topics: None,
            jti: jti.map(str::to_owned),
            presence_info: None,
        }
    }

    #[test]
    fn revocations_by_token_and_by_user_expire_and_are_bounded() {
        let r = Revocations::new(2);
        let later = now_secs() + 3600;
        r.revoke(Some("t1"), None, later).unwrap();
        assert!(r.is_revoked(&claims("u1", Some("t1"))));
        assert!(!r.is_revoked(&claims("u1", Some("t2"))));
        assert!(!r.is_revoked(&claims("u1", None)));
        r.revoke(None, Some("u2"), later).unwrap();
        assert!(r.is_revoked(&claims("u2", None)));
        assert!(r.is_revoked(&claims("u2", Some("any"))));
        // Full of live entries: refused; the same name again is fine.
        assert_eq!(r.revoke(Some("t3"), None, later), Err(StoreFull(2)));
        r.revoke(Some("t1"), None, later + 1).unwrap();
        // A time already past stores nothing.
        r.revoke(Some("t4"), None, 1).unwrap();
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn commands_travel_as_json() {
        let c = Command::Revoke {
            jti: Some("a".into()),
            sub: None,
            until: 5,
        };
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(text, r#"{"op":"revoke","jti":"a","until":5}"#);
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), c);
        let d: Command = serde_json::from_str(r#"{"op":"disconnect","sub":"u"}"#).unwrap();
        assert_eq!(d, Command::Disconnect { sub: "u".into() });
    }
}
