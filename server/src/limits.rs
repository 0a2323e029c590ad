//! Connection limits: how many WebSockets the server holds in total and per user (`sub`).
//!
//! An authenticated upgrade takes a [`ConnectionPermit`] before the handshake completes; the
//! permit lives as long as the connection and gives its slot back when dropped, whatever ends
//! the connection. A connection over either limit still completes the handshake (as a bad
//! token does) and is then closed with 4005 "too many connections", so a browser client sees
//! a close code rather than an opaque handshake failure.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The open connections, counted in total and per user.
#[derive(Debug)]
pub(crate) struct ConnectionLimits {
    max_total: usize,
    max_per_user: usize,
    total: AtomicUsize,
    per_user: Mutex<HashMap<Box<str>, usize>>,
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitExceeded {
    /// The server holds its maximum number of connections.
    Total,
    /// This user holds their maximum number of connections.
    PerUser,
}

/// One counted connection; dropping it releases the slot.
#[derive(Debug)]
pub(crate) struct ConnectionPermit {
    limits: Arc<ConnectionLimits>,
    user: Box<str>,
}

impl ConnectionLimits {
    pub(crate) fn new(max_total: usize, max_per_user: usize) -> Self {
        Self {
            max_total,
            max_per_user,
            total: AtomicUsize::new(0),
            per_user: Mutex::new(HashMap::new()),
        }
    }

    fn users(&self) -> MutexGuard<'_, HashMap<Box<str>, usize>> {
        // Every critical section is a single map update, so a poisoned map is consistent.
        self.per_user.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one more connection of `user`, unless a limit is reached.
    pub(crate) fn acquire(self: &Arc<Self>, user: &str) -> Result<ConnectionPermit, LimitExceeded> {
        let mut users = self.users();
        // Checked and updated under the users lock, so concurrent upgrades cannot overshoot.
        if self.total.load(Ordering::Relaxed) >= self.max_total {
            return Err(LimitExceeded::Total);
        }
        let count = users.entry(user.into()).or_insert(0);
        if *count >= self.max_per_user {
            return Err(LimitExceeded::PerUser);
        }
        *count += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(ConnectionPermit {
            limits: self.clone(),
            user: user.into(),
        })
    }

    /// How many connections hold a permit.
    #[cfg(test)]
    pub(crate) fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut users = self.limits.users();
        if let Some(count) = users.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                users.remove(&self.user);
            }
        }
        self.limits.total.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_and_total_limits_release_on_drop() {
        let limits = Arc::new(ConnectionLimits::new(3, 2));
        let a1 = limits.acquire("a").unwrap();
        let _a2 = limits.acquire("a").unwrap();
        assert_eq!(limits.acquire("a").unwrap_err(), LimitExceeded::PerUser);
        let _b1 = limits.acquire("b").unwrap();
        assert_eq!(limits.acquire("c").unwrap_err(), LimitExceeded::Total);
        drop(a1);
        assert_eq!(limits.total(), 2);
        let _a3 = limits.acquire("a").unwrap();
        drop((_a2, _a3, _b1));
        assert_eq!(limits.total(), 0);
        assert!(limits.users().is_empty());
    }
}
