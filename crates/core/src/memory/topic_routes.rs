//! [`MemoryTopicRoutes`]: topic -> nodes with subscribers, in process
//! memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::id::NodeId;
use crate::ports::{RouteError, TopicRoutes};
use crate::topic::TopicName;

/// A [`TopicRoutes`] in process memory: memberships expire `ttl` after
/// their last [`add_topics`](TopicRoutes::add_topics), as in Redis.
pub struct MemoryTopicRoutes {
    ttl: Duration,
    members: Mutex<HashMap<TopicName, HashMap<NodeId, Instant>>>,
}

impl Default for MemoryTopicRoutes {
    /// Memberships live a day, like routes.
    fn default() -> Self {
        Self::new(Duration::from_secs(24 * 3600))
    }
}

impl MemoryTopicRoutes {
    /// Memberships that live `ttl` after their last refresh.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            members: Mutex::new(HashMap::new()),
        }
    }

    fn members(&self) -> std::sync::MutexGuard<'_, HashMap<TopicName, HashMap<NodeId, Instant>>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets everything, as a Redis `FLUSHALL` would.
    pub fn clear(&self) {
        self.members().clear();
    }
}

#[async_trait]
impl TopicRoutes for MemoryTopicRoutes {
    async fn add_topics(&self, node: &NodeId, topics: &[TopicName]) -> Result<(), RouteError> {
        let until = Instant::now() + self.ttl;
        let mut members = self.members();
        for topic in topics {
            members
                .entry(topic.clone())
                .or_default()
                .insert(node.clone(), until);
        }
        Ok(())
    }

    async fn remove_topics(&self, node: &NodeId, topics: &[TopicName]) -> Result<(), RouteError> {
        let mut members = self.members();
        for topic in topics {
            if let Some(nodes) = members.get_mut(topic) {
                nodes.remove(node);
                if nodes.is_empty() {
                    members.remove(topic);
                }
            }
        }
        Ok(())
    }

    async fn nodes_of(&self, topics: &[TopicName]) -> Result<Vec<Vec<NodeId>>, RouteError> {
        let now = Instant::now();
        let members = self.members();
        Ok(topics
            .iter()
            .map(|t| {
                let mut nodes: Vec<NodeId> = members
                    .get(t)
                    .map(|nodes| {
                        nodes
                            .iter()
                            .filter(|(_, until)| **until > now)
                            .map(|(n, _)| n.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                nodes.sort();
                nodes
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memberships_come_go_and_expire() {
        let routes = MemoryTopicRoutes::new(Duration::from_millis(50));
        let (t, u) = (TopicName::new("t").unwrap(), TopicName::new("u").unwrap());
        let (a, b) = (NodeId::new("a").unwrap(), NodeId::new("b").unwrap());
        routes
            .add_topics(&a, &[t.clone(), u.clone()])
            .await
            .unwrap();
        routes
            .add_topics(&b, std::slice::from_ref(&t))
            .await
            .unwrap();
        let got = routes.nodes_of(&[t.clone(), u.clone()]).await.unwrap();
        assert_eq!(got, vec![vec![a.clone(), b.clone()], vec![a.clone()]]);
        routes
            .remove_topics(&a, std::slice::from_ref(&t))
            .await
            .unwrap();
        assert_eq!(
            routes.nodes_of(std::slice::from_ref(&t)).await.unwrap(),
            vec![vec![b]]
        );
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(
            routes.nodes_of(&[t, u]).await.unwrap(),
            vec![vec![], vec![]]
        );
    }
}
