//! [`MemoryPresence`]: presence in process memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::id::{ConnId, NodeId, UserId};
use crate::ports::{
    ConnPresence, PresenceStore, PresenceWrite, RouteError, TopicMember, TopicNodePresence,
};
use crate::topic::TopicName;

#[derive(Default)]
struct TopicState {
    /// node -> (subscriptions, distinct users).
    nodes: HashMap<NodeId, (u64, u64)>,
    /// (user, node) -> subscriptions, ordered so pages are stable.
    members: BTreeMap<(UserId, NodeId), u64>,
}

#[derive(Default)]
struct State {
    users: HashMap<UserId, HashMap<ConnId, (NodeId, i64)>>,
    topics: HashMap<TopicName, TopicState>,
}

/// A [`PresenceStore`] in process memory. Entries do not expire (nothing
/// outlives the process); readers still drop dead nodes' entries.
#[derive(Default)]
pub struct MemoryPresence {
    state: Mutex<State>,
}

impl MemoryPresence {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets everything, as a Redis `FLUSHALL` would.
    pub fn clear(&self) {
        let mut state = self.state();
        state.users.clear();
        state.topics.clear();
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn write(&self, node: &NodeId, changes: &PresenceWrite) -> Result<(), RouteError> {
        let mut state = self.state();
        for (user, conn, opened) in &changes.connections {
            match opened {
                Some(at) => {
                    state
                        .users
                        .entry(user.clone())
                        .or_default()
                        .insert(conn.clone(), (node.clone(), *at));
                }
                None => {
                    if let Some(conns) = state.users.get_mut(user) {
                        conns.remove(conn);
                        if conns.is_empty() {
                            state.users.remove(user);
                        }
                    }
                }
            }
        }
        for change in &changes.topics {
            let topic = state.topics.entry(change.topic.clone()).or_default();
            match change.totals {
                Some(totals) => {
                    topic.nodes.insert(node.clone(), totals);
                }
                None => {
                    topic.nodes.remove(node);
                }
            }
            for (user, count) in &change.members {
                let key = (user.clone(), node.clone());
                if *count == 0 {
                    topic.members.remove(&key);
                } else {
                    topic.members.insert(key, *count);
                }
            }
            if topic.nodes.is_empty() && topic.members.is_empty() {
                state.topics.remove(&change.topic);
            }
        }
        Ok(())
    }

    async fn user_connections(
        &self,
        users: &[UserId],
    ) -> Result<Vec<Vec<ConnPresence>>, RouteError> {
        let state = self.state();
        Ok(users
            .iter()
            .map(|u| {
                let mut conns: Vec<ConnPresence> = state
                    .users
                    .get(u)
                    .map(|conns| {
                        conns
                            .iter()
                            .map(|(c, (n, at))| ConnPresence {
                                conn: c.clone(),
                                node: n.clone(),
                                connected_at_ms: *at,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                conns.sort_by(|a, b| a.conn.cmp(&b.conn));
                conns
            })
            .collect())
    }

    async fn topic_nodes(&self, topic: &TopicName) -> Result<Vec<TopicNodePresence>, RouteError> {
        let state = self.state();
        let mut out: Vec<TopicNodePresence> = state
            .topics
            .get(topic)
            .map(|t| {
                t.nodes
                    .iter()
                    .map(|(n, (connections, users))| TopicNodePresence {
                        node: n.clone(),
                        connections: *connections,
                        users: *users,
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(out)
    }

    async fn topic_members(
        &self,
        topic: &TopicName,
        cursor: u64,
        count: usize,
    ) -> Result<(Vec<TopicMember>, u64), RouteError> {
        let state = self.state();
        let Some(t) = state.topics.get(topic) else {
            return Ok((Vec::new(), 0));
        };
        let start = usize::try_from(cursor).unwrap_or(usize::MAX);
        let page: Vec<TopicMember> = t
            .members
            .iter()
            .skip(start)
            .take(count.max(1))
            .map(|((user, node), connections)| TopicMember {
                user: user.clone(),
                node: node.clone(),
                connections: *connections,
            })
            .collect();
        let end = start.saturating_add(page.len());
        let next = if end >= t.members.len() {
            0
        } else {
            end as u64
        };
        Ok((page, next))
    }

    async fn forget(
        &self,
        topic: &TopicName,
        members: &[(UserId, NodeId)],
        nodes: &[NodeId],
    ) -> Result<(), RouteError> {
        let mut state = self.state();
        if let Some(t) = state.topics.get_mut(topic) {
            for key in members {
                t.members.remove(key);
            }
            for node in nodes {
                t.nodes.remove(node);
            }
            if t.nodes.is_empty() && t.members.is_empty() {
                state.topics.remove(topic);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::TopicPresenceWrite;

    #[tokio::test]
    async fn writes_are_read_back_and_paged() {
        let store = MemoryPresence::new();
        let n = NodeId::new("n").unwrap();
        let t = TopicName::new("chat:1").unwrap();
        let users: Vec<UserId> = (0..5)
            .map(|i| UserId::new(format!("u{i}")).unwrap())
            .collect();
        let write = PresenceWrite {
            connections: vec![(users[0].clone(), ConnId::new("c0").unwrap(), Some(7))],
            topics: vec![TopicPresenceWrite {
                topic: t.clone(),
                totals: Some((5, 5)),
                members: users.iter().map(|u| (u.clone(), 1)).collect(),
            }],
        };
        store.write(&n, &write).await.unwrap();
        let conns = store.user_connections(&users[..2]).await.unwrap();
        assert_eq!(conns[0].len(), 1);
        assert_eq!(conns[0][0].connected_at_ms, 7);
        assert!(conns[1].is_empty());
        assert_eq!(store.topic_nodes(&t).await.unwrap()[0].connections, 5);
        let (first, next) = store.topic_members(&t, 0, 3).await.unwrap();
        assert_eq!((first.len(), next), (3, 3));
        let (rest, next) = store.topic_members(&t, next, 3).await.unwrap();
        assert_eq!((rest.len(), next), (2, 0));
        store
            .forget(
                &t,
                &[(users[0].clone(), n.clone())],
                std::slice::from_ref(&n),
            )
            .await
            .unwrap();
        assert!(store.topic_nodes(&t).await.unwrap().is_empty());
        assert_eq!(store.topic_members(&t, 0, 10).await.unwrap().0.len(), 4);
    }
}
