//! [`TopicRoutes`] on Redis: which nodes have subscribers of a topic.
//!
//! One ZSET per topic, `<prefix>:t:{<topic>}`: member a node id, score the
//! time (milliseconds since the epoch) that node's membership expires, so
//! each node's membership has a TTL of its own although they share a key.
//!
//! - `add_topics`: per topic `ZADD key <now + route TTL> <node>`, `PEXPIRE
//!   key <route TTL>` (the key outlives its freshest member only by its TTL)
//!   and `ZREMRANGEBYSCORE key -inf <now>` (expired members are collected as
//!   other nodes write), pipelined by at most [`ROUTE_CHUNK`] topics.
//! - `remove_topics`: `ZREM key <node>`, pipelined the same way.
//! - `nodes_of`: one pipeline of `ZRANGEBYSCORE key <now> +inf`: fresh
//!   members only. On a cluster, as every pipeline of the store, one per
//!   hash slot group.

use async_trait::async_trait;
use edgepush_core::message::now_ms;
use edgepush_core::{NodeId, RouteError, TopicName, TopicRoutes};
use redis::Value;

use crate::keys::topic_key;
use crate::store::{ROUTE_CHUNK, RedisRouteStore, text_of};

#[async_trait]
impl TopicRoutes for RedisRouteStore {
    async fn add_topics(&self, node: &NodeId, topics: &[TopicName]) -> Result<(), RouteError> {
        let ttl = self.settings.route_ttl_ms;
        for chunk in topics.chunks(ROUTE_CHUNK) {
            let now = u64::try_from(now_ms()).unwrap_or(0);
            let mut cmds = Vec::with_capacity(chunk.len() * 3);
            for topic in chunk {
                let key = topic_key(&self.settings.prefix, topic);
                let mut zadd = redis::cmd("ZADD");
                zadd.arg(&key)
                    .arg(now.saturating_add(ttl))
                    .arg(node.as_str());
                let mut pexpire = redis::cmd("PEXPIRE");
                pexpire.arg(&key).arg(ttl);
                let mut collect = redis::cmd("ZREMRANGEBYSCORE");
                collect.arg(&key).arg("-inf").arg(format!("({now}"));
                cmds.push((key.clone(), zadd));
                cmds.push((key.clone(), pexpire));
                cmds.push((key, collect));
            }
            self.bounded("add_topics", self.pipelined(cmds)).await?;
        }
        Ok(())
    }

    async fn remove_topics(&self, node: &NodeId, topics: &[TopicName]) -> Result<(), RouteError> {
        for chunk in topics.chunks(ROUTE_CHUNK) {
            let cmds = chunk
                .iter()
                .map(|topic| {
                    let key = topic_key(&self.settings.prefix, topic);
                    let mut zrem = redis::cmd("ZREM");
                    zrem.arg(&key).arg(node.as_str());
                    (key, zrem)
                })
                .collect();
            self.bounded("remove_topics", self.pipelined(cmds)).await?;
        }
        Ok(())
    }

    async fn nodes_of(&self, topics: &[TopicName]) -> Result<Vec<Vec<NodeId>>, RouteError> {
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let cmds = topics
            .iter()
            .map(|topic| {
                let key = topic_key(&self.settings.prefix, topic);
                let mut range = redis::cmd("ZRANGEBYSCORE");
                range.arg(&key).arg(now).arg("+inf");
                (key, range)
            })
            .collect();
        let replies = self.bounded("topic nodes_of", self.pipelined(cmds)).await?;
        topics
            .iter()
            .zip(replies)
            .map(|(topic, reply)| parse_members(topic, reply))
            .collect()
    }
}

/// The node ids in one `ZRANGEBYSCORE` reply; a member that is not a valid
/// node id is skipped with a warning.
fn parse_members(topic: &TopicName, reply: Value) -> Result<Vec<NodeId>, RouteError> {
    let items = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(items) | Value::Set(items) => items,
        other => {
            return Err(RouteError::Backend(format!(
                "topic nodes_of: unexpected reply for {topic}: {other:?}"
            )));
        }
    };
    let mut nodes = Vec::with_capacity(items.len());
    for item in items {
        match text_of(item).map(NodeId::new) {
            Some(Ok(node)) => nodes.push(node),
            other => {
                tracing::warn!(topic = %topic, member = ?other, "skipping a topic member that is not a node id")
            }
        }
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_and_bad_ones_are_skipped() {
        let t = TopicName::new("t").unwrap();
        let reply = Value::Array(vec![
            Value::BulkString(b"n1".to_vec()),
            Value::BulkString(b"bad node".to_vec()),
            Value::BulkString(b"n2".to_vec()),
        ]);
        let nodes = parse_members(&t, reply).unwrap();
        assert_eq!(
            nodes,
            vec![NodeId::new("n1").unwrap(), NodeId::new("n2").unwrap()]
        );
        assert!(parse_members(&t, Value::Nil).unwrap().is_empty());
        assert!(parse_members(&t, Value::Int(1)).is_err());
    }
}
