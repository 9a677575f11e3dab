//! Per-log serialisation of appends inside one store instance (a log is a
//! user's messages or a topic's).
//!
//! Correctness never depends on it (the unique indexes decide who gets a
//! seq), but without it every concurrent append of one process to one log
//! races for the same seq: with N racers each claimed seq costs up to N
//! failed inserts. Queueing them locally leaves only the other processes to
//! race with, and lets the holder remember the last seq it stored, which
//! saves reading the counter on the next append.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use edgepush_core::Seq;
use tokio::sync::OwnedMutexGuard;

/// The state kept per busy log: the last seq this process knows is stored
/// in it, if any (a hint, never a claim).
type Slot = Arc<tokio::sync::Mutex<Option<Seq>>>;

/// The lock table. Entries live only while someone holds or awaits them.
#[derive(Default)]
pub(crate) struct KeyLocks {
    slots: Mutex<HashMap<Arc<str>, Slot>>,
}

impl KeyLocks {
    /// Waits for the lock of the log `key` (a user or a topic).
    pub(crate) async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let (key, slot) = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            match slots.get_key_value(key) {
                Some((k, slot)) => (Arc::clone(k), Arc::clone(slot)),
                None => {
                    let k: Arc<str> = Arc::from(key);
                    let slot = Slot::default();
                    slots.insert(Arc::clone(&k), Arc::clone(&slot));
                    (k, slot)
                }
            }
        };
        KeyGuard {
            locks: self,
            key,
            guard: Some(slot.lock_owned().await),
        }
    }

    /// How many users have an entry (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Holds one log's lock; gives access to the log's last known seq.
pub(crate) struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    key: Arc<str>,
    guard: Option<OwnedMutexGuard<Option<Seq>>>,
}

impl KeyGuard<'_> {
    /// The last seq this process knows is stored in the log.
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

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        // Release first, then drop the entry if nobody else holds or awaits
        // it (they would hold a clone of the Arc).
        self.guard = None;
        let mut slots = self.locks.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots
            .get(&self.key)
            .is_some_and(|slot| Arc::strong_count(slot) == 1)
        {
            slots.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_live_while_used_and_keep_the_hint() {
        let locks = Arc::new(KeyLocks::default());
        let u = "u".to_owned();
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
