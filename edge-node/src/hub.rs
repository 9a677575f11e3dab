//! The hub: this node's map of live connections.
//!
//! `connection id -> (user, queue, identity)`, behind sharded mutexes so
//! that pushes to different connections rarely contend; no lock is held
//! across an `.await`. Dispatch addresses connections by id (the user ->
//! connections view lives in the route store), so the hub keeps no second
//! index: less memory per connection.
//!
//! A push never waits for a client: [`Hub::deliver`] `try_send`s onto the
//! connection's bounded queue, and a full queue marks the connection too
//! slow (it is closed with 4008 and catches up from MongoDB on reconnect).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use edgepush_core::{ConnId, Seq, UserId};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;

use crate::metrics::Metrics;

const SHARDS: usize = 32;

/// One frame on its way to a connection: the user's seq (0 for frames that
/// carry none) and the serialised frame, shared with every other recipient.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The message's seq, so the connection can drop duplicates.
    pub seq: Seq,
    /// The serialised frame (text `msg` frames share their bytes).
    pub frame: Message,
}

/// How the hub tells a connection task to close.
#[derive(Debug, Default)]
pub struct Kick {
    /// The close code to send; 0 while nobody asked.
    code: AtomicU16,
    /// Wakes the connection task.
    notify: Notify,
}

impl Kick {
    /// Asks the connection to close with `code` (the first request wins).
    pub fn kick(&self, code: u16) {
        if self
            .code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.notify.notify_one();
        }
    }

    /// The close code asked for, if any.
    pub fn requested(&self) -> Option<u16> {
        match self.code.load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }

    /// Resolves once a close was asked for.
    pub async fn wait(&self) -> u16 {
        loop {
            let notified = self.notify.notified();
            if let Some(code) = self.requested() {
                return code;
            }
            notified.await;
        }
    }
}

/// What the hub keeps for one connection.
#[derive(Debug)]
pub struct ConnHandle {
    /// The user the token named.
    pub user_id: UserId,
    /// The connection's bounded send queue.
    tx: mpsc::Sender<Outbound>,
    /// Close requests (slow client, DELETE through the push API, drain).
    pub kick: Arc<Kick>,
    /// Where the client connects from (the push API's `identity.sourceIp`).
    pub peer: SocketAddr,
    /// The client's `User-Agent`, if it sent one.
    pub user_agent: Option<Box<str>>,
    /// When the connection opened.
    pub connected_at: SystemTime,
    /// Milliseconds since the epoch of the last frame from the client.
    pub last_active_ms: Arc<AtomicU64>,
}

/// What a delivery to one connection came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued.
    Queued,
    /// The connection is not on this node.
    Gone,
    /// The queue was full: the connection is being closed as too slow.
    TooSlow,
}

#[derive(Default)]
struct Shard {
    conns: HashMap<ConnId, Arc<ConnHandle>>,
}

/// The node's live connections.
pub struct Hub {
    shards: Box<[Mutex<Shard>]>,
    metrics: Arc<Metrics>,
}

fn shard_of(key: &str) -> usize {
    // FNV-1a: cheap, no allocation, good enough to spread random ids.
    let mut h: u32 = 0x811c_9dc5;
    for b in key.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as usize % SHARDS
}

impl Hub {
    /// An empty hub.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            metrics,
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        // A poisoned shard only means a panic elsewhere while holding it; the
        // maps are still consistent (every update is a single insert/remove).
        self.shards[shard_of(key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a connection; returns the receiving end of its queue.
    pub fn insert(
        &self,
        conn_id: ConnId,
        handle: ConnHandleInit,
        queue: usize,
    ) -> (Arc<ConnHandle>, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let handle = Arc::new(ConnHandle {
            user_id: handle.user_id,
            tx,
            kick: Arc::new(Kick::default()),
            peer: handle.peer,
            user_agent: handle.user_agent,
            connected_at: SystemTime::now(),
            last_active_ms: Arc::new(AtomicU64::new(edgepush_core::message::now_ms() as u64)),
        });
        self.shard(conn_id.as_str())
            .conns
            .insert(conn_id, handle.clone());
        (handle, rx)
    }

    /// Removes a connection; returns whether it was there.
    pub fn remove(&self, conn_id: &ConnId) -> bool {
        self.shard(conn_id.as_str()).conns.remove(conn_id).is_some()
    }

    /// The handle of `conn_id`, if it is on this node.
    pub fn get(&self, conn_id: &ConnId) -> Option<Arc<ConnHandle>> {
        self.shard(conn_id.as_str()).conns.get(conn_id).cloned()
    }

    /// Queues `out` for `conn_id` without waiting.
    pub fn deliver(&self, conn_id: &ConnId, out: Outbound) -> Delivery {
        let shard = self.shard(conn_id.as_str());
        let Some(handle) = shard.conns.get(conn_id) else {
            return Delivery::Gone;
        };
        match handle.tx.try_send(out) {
            Ok(()) => Delivery::Queued,
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Gone,
            Err(mpsc::error::TrySendError::Full(_)) => {
                handle.kick.kick(edgepush_core::protocol::CLOSE_TOO_SLOW);
                self.metrics.slow_clients.fetch_add(1, Ordering::Relaxed);
                Delivery::TooSlow
            }
        }
    }

    /// Every (user, connection) on this node.
    pub fn routes(&self) -> Vec<(UserId, ConnId)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            out.extend(
                shard
                    .conns
                    .iter()
                    .map(|(c, h)| (h.user_id.clone(), c.clone())),
            );
        }
        out
    }

    /// Asks every connection to close with `code`.
    pub fn kick_all(&self, code: u16) {
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for handle in shard.conns.values() {
                handle.kick.kick(code);
            }
        }
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).conns.len())
            .sum()
    }
}

/// What a new connection brings to the hub.
#[derive(Debug)]
pub struct ConnHandleInit {
    /// The user the token named.
    pub user_id: UserId,
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's `User-Agent`.
    pub user_agent: Option<Box<str>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(user: &str) -> ConnHandleInit {
        ConnHandleInit {
            user_id: UserId::new(user).unwrap(),
            peer: "127.0.0.1:1".parse().unwrap(),
            user_agent: None,
        }
    }

    fn out(seq: Seq) -> Outbound {
        Outbound {
            seq,
            frame: Message::Text("{}".into()),
        }
    }

    #[test]
    fn connections_come_and_go() {
        let hub = Hub::new(Arc::default());
        let (c1, c2) = (ConnId::new("c1").unwrap(), ConnId::new("c2").unwrap());
        let _a = hub.insert(c1.clone(), init("alice"), 4);
        let _b = hub.insert(c2.clone(), init("alice"), 4);
        assert_eq!(hub.len(), 2);
        assert!(hub.remove(&c1));
        assert!(!hub.remove(&c1));
        assert!(hub.get(&c1).is_none());
        assert_eq!(hub.routes(), vec![(UserId::new("alice").unwrap(), c2)]);
    }

    #[test]
    fn a_full_queue_kicks_the_connection_as_too_slow() {
        let hub = Hub::new(Arc::default());
        let c = ConnId::new("c").unwrap();
        let (handle, mut rx) = hub.insert(c.clone(), init("bob"), 2);
        assert_eq!(hub.deliver(&c, out(1)), Delivery::Queued);
        assert_eq!(hub.deliver(&c, out(2)), Delivery::Queued);
        assert_eq!(hub.deliver(&c, out(3)), Delivery::TooSlow);
        assert_eq!(handle.kick.requested(), Some(4008));
        assert_eq!(rx.try_recv().unwrap().seq, 1);
        assert_eq!(
            hub.deliver(&ConnId::new("nope").unwrap(), out(1)),
            Delivery::Gone
        );
        drop(rx);
        assert_eq!(hub.deliver(&c, out(4)), Delivery::Gone);
    }
}
