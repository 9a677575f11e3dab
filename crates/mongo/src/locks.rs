//! Per-user serialisation of appends inside one store instance.
//!
//! Correctness never depends on it (the unique indexes decide who gets a
//! seq), but without it every concurrent append of one process to one user
//! races for the same seq: with N racers each claimed seq costs up to N
//! failed inserts. Queueing them locally leaves only the other processes to
//! race with, and lets the holder remember the last seq it stored, which
//! saves reading the counter on the next append.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use edgepush_core::{Seq, UserId};
use tokio::sync::OwnedMutexGuard;

/// The state kept per busy user: the last seq this process knows is stored
/// for the user, if any (a hint, never a claim).
type Slot = Arc<tokio::sync::Mutex<Option<Seq>>>;

/// The lock table. Entries live only while someone holds or awaits them.
#[derive(Default)]
pub(crate) struct UserLocks {
    slots: Mutex<HashMap<UserId, Slot>>,
}

impl UserLocks {
    /// Waits for `user`'s lock.
    pub(crate) async fn lock(&self, user: &UserId) -> UserGuard<'_> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(slots.entry(user.clone()).or_default())
        };
        UserGuard {
            locks: self,
            user: user.clone(),
            guard: Some(slot.lock_owned().await),
        }
    }

    /// How many users have an entry (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Holds one user's lock; gives access to the user's last known seq.
pub(crate) struct UserGuard<'a> {
    locks: &'a UserLocks,
    user: UserId,
    guard: Option<OwnedMutexGuard<Option<Seq>>>,
}

impl UserGuard<'_> {
    /// The last seq this process knows is stored for the user.
    pub(crate) fn known_seq(&self) -> Option<Seq> {
        self.guard.as_ref().and_then(|g| **g)
    }

    /// Records the last seq known to be stored (`None`: forget it).
    pub(crate) fn set_known_seq(&mut self, seq: Option<Seq>) {
        if let Some(g) = self.guard.as_mut() {
            **g = seq;
        }
    }
}

impl Drop for UserGuard<'_> {
    fn drop(&mut self) {
        // Release first, then drop the entry if nobody else holds or awaits
        // it (they would hold a clone of the Arc).
        self.guard = None;
        let mut slots = self.locks.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots
            .get(&self.user)
            .is_some_and(|slot| Arc::strong_count(slot) == 1)
        {
            slots.remove(&self.user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_live_while_used_and_keep_the_hint() {
        let locks = Arc::new(UserLocks::default());
        let u = UserId::new("u").unwrap();
        let mut g = locks.lock(&u).await;
        assert_eq!(g.known_seq(), None);
        g.set_known_seq(Some(4));

        let waiter = {
            let locks = Arc::clone(&locks);
            let u = u.clone();
            tokio::spawn(async move { locks.lock(&u).await.known_seq() })
        };
        tokio::task::yield_now().await;
        assert_eq!(locks.len(), 1);
        drop(g);
        assert_eq!(
            waiter.await.unwrap(),
            Some(4),
            "the next holder sees the hint"
        );
        assert_eq!(locks.len(), 0, "idle entries are dropped");
    }
}
