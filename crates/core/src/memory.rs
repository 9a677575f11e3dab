//! In-memory backends of the store ports, for unit tests and dev mode.
//!
//! They keep the same contracts as the real backends (gap-free sequences,
//! idempotent appends, liveness that expires; checked by the contract suites
//! in `crates/testkit/tests/memory.rs`) but nothing survives the process.
//! The user message store and the route store are here; the topic backends
//! each have a file of their own:
//!
//! - [`MemoryTopicStore`] (`memory/topic_store.rs`): [`TopicStore`](crate::TopicStore);
//! - [`MemoryTopicRoutes`] (`memory/topic_routes.rs`): [`TopicRoutes`](crate::TopicRoutes);
//! - [`MemoryPresence`] (`memory/presence.rs`): [`PresenceStore`](crate::PresenceStore).

mod presence;
mod topic_routes;
mod topic_store;

pub use presence::MemoryPresence;
pub use topic_routes::MemoryTopicRoutes;
pub use topic_store::MemoryTopicStore;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::id::{ConnId, MessageId, NodeId, UserId};
use crate::message::{NewMessage, Seq, StoredMessage, now_ms};
use crate::ports::{
    Heartbeat, MessageStore, NodeDirectory, RouteError, RouteStore, StoreError, StreamPosition,
};

#[derive(Default)]
struct UserLog {
    messages: BTreeMap<Seq, StoredMessage>,
    last_seq: Seq,
    acked: Seq,
}

#[derive(Default)]
struct MessageState {
    users: HashMap<UserId, UserLog>,
    /// (source, idempotency key, user) -> seq of the stored copy.
    idempotency: HashMap<(String, String, UserId), Seq>,
}

/// A [`MessageStore`] in process memory.
#[derive(Default)]
pub struct MemoryMessageStore {
    state: Mutex<MessageState>,
}

impl MemoryMessageStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many copies are stored, over all users.
    pub fn len(&self) -> usize {
        let state = self.state.lock().expect("message store lock");
        state.users.values().map(|u| u.messages.len()).sum()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl MessageStore for MemoryMessageStore {
    async fn append(&self, msg: &NewMessage) -> Result<Vec<StoredMessage>, StoreError> {
        let id: MessageId = msg.message_id();
        let created_at_ms = now_ms();
        let mut state = self.state.lock().expect("message store lock");
        let mut out = Vec::with_capacity(msg.to.len());
        for user in &msg.to {
            if let Some(key) = &msg.idempotency_key {
                let k = (msg.source.clone(), key.clone(), user.clone());
                if let Some(seq) = state.idempotency.get(&k).copied() {
                    let existing = state.users[user].messages[&seq].clone();
                    out.push(existing);
                    continue;
                }
            }
            let log = state.users.entry(user.clone()).or_default();
            log.last_seq += 1;
            let stored = StoredMessage {
                user_id: user.clone(),
                seq: log.last_seq,
                id: id.clone(),
                data: msg.data.clone(),
                created_at_ms,
            };
            log.messages.insert(stored.seq, stored.clone());
            if let Some(key) = &msg.idempotency_key {
                state
                    .idempotency
                    .insert((msg.source.clone(), key.clone(), user.clone()), stored.seq);
            }
            out.push(stored);
        }
        Ok(out)
    }

    async fn read_after(
        &self,
        user: &UserId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let state = self.state.lock().expect("message store lock");
        Ok(state
            .users
            .get(user)
            .map(|log| {
                log.messages
                    .range(after.saturating_add(1)..)
                    .take(limit)
                    .map(|(_, m)| m.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn ack(&self, user: &UserId, seq: Seq) -> Result<Seq, StoreError> {
        let mut state = self.state.lock().expect("message store lock");
        // Nothing stored, nothing to acknowledge: no entry is made.
        let Some(log) = state.users.get_mut(user) else {
            return Ok(0);
        };
        log.acked = log.acked.max(seq.min(log.last_seq));
        Ok(log.acked)
    }

    async fn position(&self, user: &UserId) -> Result<StreamPosition, StoreError> {
        let state = self.state.lock().expect("message store lock");
        Ok(state
            .users
            .get(user)
            .map(|l| StreamPosition {
                last_seq: l.last_seq,
                acked_seq: l.acked.min(l.last_seq),
            })
            .unwrap_or_default())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[derive(Default)]
struct RouteState {
    routes: HashMap<UserId, HashMap<ConnId, NodeId>>,
    nodes: HashMap<NodeId, (String, Instant)>,
}

/// A [`RouteStore`] and [`NodeDirectory`] in process memory.
#[derive(Default)]
pub struct MemoryRouteStore {
    state: Mutex<RouteState>,
}

impl MemoryRouteStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything, as a Redis `FLUSHALL` would.
    pub fn clear(&self) {
        let mut state = self.state.lock().expect("route store lock");
        state.routes.clear();
        state.nodes.clear();
    }
}

#[async_trait]
impl RouteStore for MemoryRouteStore {
    async fn add_route(
        &self,
        user: &UserId,
        conn: &ConnId,
        node: &NodeId,
    ) -> Result<(), RouteError> {
        let mut state = self.state.lock().expect("route store lock");
        state
            .routes
            .entry(user.clone())
            .or_default()
            .insert(conn.clone(), node.clone());
        Ok(())
    }

    async fn add_routes(
        &self,
        routes: &[(UserId, ConnId)],
        node: &NodeId,
    ) -> Result<(), RouteError> {
        let mut state = self.state.lock().expect("route store lock");
        for (user, conn) in routes {
            state
                .routes
                .entry(user.clone())
                .or_default()
                .insert(conn.clone(), node.clone());
        }
        Ok(())
    }

    async fn remove_routes(&self, routes: &[(UserId, ConnId)]) -> Result<(), RouteError> {
        let mut state = self.state.lock().expect("route store lock");
        for (user, conn) in routes {
            if let Some(conns) = state.routes.get_mut(user) {
                conns.remove(conn);
                if conns.is_empty() {
                    state.routes.remove(user);
                }
            }
        }
        Ok(())
    }

    async fn routes_of(&self, users: &[UserId]) -> Result<Vec<Vec<(ConnId, NodeId)>>, RouteError> {
        let state = self.state.lock().expect("route store lock");
        Ok(users
            .iter()
            .map(|u| {
                state
                    .routes
                    .get(u)
                    .map(|conns| conns.iter().map(|(c, n)| (c.clone(), n.clone())).collect())
                    .unwrap_or_default()
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), RouteError> {
        Ok(())
    }
}

#[async_trait]
impl NodeDirectory for MemoryRouteStore {
    async fn heartbeat(
        &self,
        node: &NodeId,
        push_url: &str,
        ttl: Duration,
    ) -> Result<Heartbeat, RouteError> {
        let mut state = self.state.lock().expect("route store lock");
        let now = Instant::now();
        let was_live = state
            .nodes
            .get(node)
            .is_some_and(|(_, expires)| *expires > now);
        state
            .nodes
            .insert(node.clone(), (push_url.to_owned(), now + ttl));
        Ok(if was_live {
            Heartbeat::Refreshed
        } else {
            Heartbeat::Recreated
        })
    }

    async fn live_nodes(&self, nodes: &[NodeId]) -> Result<HashMap<NodeId, String>, RouteError> {
        let state = self.state.lock().expect("route store lock");
        let now = Instant::now();
        Ok(nodes
            .iter()
            .filter_map(|n| {
                state
                    .nodes
                    .get(n)
                    .filter(|(_, expires)| *expires > now)
                    .map(|(url, _)| (n.clone(), url.clone()))
            })
            .collect())
    }

    async fn remove_node(&self, node: &NodeId) -> Result<(), RouteError> {
        let mut state = self.state.lock().expect("route store lock");
        state.nodes.remove(node);
        Ok(())
    }
}
