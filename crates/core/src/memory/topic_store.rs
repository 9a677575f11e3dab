//! [`MemoryTopicStore`]: the topic log in process memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::message::{NewTopicMessage, Seq, TopicMessage, now_ms};
use crate::ports::{StoreError, TopicStore};
use crate::topic::TopicName;

#[derive(Default)]
struct TopicLog {
    messages: BTreeMap<Seq, TopicMessage>,
    last_seq: Seq,
}

#[derive(Default)]
struct State {
    topics: HashMap<TopicName, TopicLog>,
    /// (source, idempotency key, topic) -> seq of the stored copy.
    idempotency: HashMap<(String, String, TopicName), Seq>,
}

/// A [`TopicStore`] in process memory: gap-free seqs and idempotent
/// publishes like the MongoDB store; retention is not enforced (nothing
/// outlives the process anyway).
#[derive(Default)]
pub struct MemoryTopicStore {
    state: Mutex<State>,
}

impl MemoryTopicStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many copies are stored, over all topics.
    pub fn len(&self) -> usize {
        self.state().topics.values().map(|t| t.messages.len()).sum()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl TopicStore for MemoryTopicStore {
    async fn publish(&self, msg: &NewTopicMessage) -> Result<Vec<TopicMessage>, StoreError> {
        let id = msg.message_id();
        let created_at_ms = now_ms();
        let mut state = self.state();
        let mut out = Vec::with_capacity(msg.topics.len());
        for (topic, _retention) in &msg.topics {
            if let Some(key) = &msg.idempotency_key {
                let k = (msg.source.clone(), key.clone(), topic.clone());
                if let Some(seq) = state.idempotency.get(&k).copied() {
                    out.push(state.topics[topic].messages[&seq].clone());
                    continue;
                }
            }
            let log = state.topics.entry(topic.clone()).or_default();
            log.last_seq += 1;
            let stored = TopicMessage {
                topic: topic.clone(),
                seq: log.last_seq,
                id: id.clone(),
                data: msg.data.clone(),
                created_at_ms,
            };
            log.messages.insert(stored.seq, stored.clone());
            if let Some(key) = &msg.idempotency_key {
                state
                    .idempotency
                    .insert((msg.source.clone(), key.clone(), topic.clone()), stored.seq);
            }
            out.push(stored);
        }
        Ok(out)
    }

    async fn read_after(
        &self,
        topic: &TopicName,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<TopicMessage>, StoreError> {
        let state = self.state();
        Ok(state
            .topics
            .get(topic)
            .map(|log| {
                log.messages
                    .range(after.saturating_add(1)..)
                    .take(limit)
                    .map(|(_, m)| m.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn last_seq(&self, topic: &TopicName) -> Result<Seq, StoreError> {
        Ok(self.state().topics.get(topic).map_or(0, |l| l.last_seq))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::value::RawValue;

    use super::*;

    fn publish(topics: &[&str], key: Option<&str>) -> NewTopicMessage {
        NewTopicMessage {
            topics: topics
                .iter()
                .map(|t| (TopicName::new(t).unwrap(), Duration::from_secs(60)))
                .collect(),
            data: Arc::from(RawValue::from_string("1".into()).unwrap()),
            source: "s".into(),
            idempotency_key: key.map(str::to_owned),
        }
    }

    #[tokio::test]
    async fn seqs_are_per_topic_and_publishes_idempotent() {
        let store = MemoryTopicStore::new();
        let a = store
            .publish(&publish(&["x", "y"], Some("k")))
            .await
            .unwrap();
        assert_eq!(a.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 1]);
        assert_eq!(a[0].id, a[1].id);
        let again = store
            .publish(&publish(&["x", "y"], Some("k")))
            .await
            .unwrap();
        assert_eq!(a, again);
        let b = store.publish(&publish(&["x"], None)).await.unwrap();
        assert_eq!(b[0].seq, 2);
        let x = TopicName::new("x").unwrap();
        assert_eq!(store.last_seq(&x).await.unwrap(), 2);
        assert_eq!(store.read_after(&x, 1, 10).await.unwrap(), b);
        assert_eq!(store.len(), 3);
    }
}
