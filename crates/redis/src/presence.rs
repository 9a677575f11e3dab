//! [`PresenceStore`] on Redis: who is online, and who is subscribed.
//!
//! | key | type | content |
//! |---|---|---|
//! | `<prefix>:pu:{<user>}` | HASH | field connection id, value `"<node> <connected at ms>"` |
//! | `<prefix>:pc:{<topic>}` | HASH | field node id, value `"<subscriptions> <distinct users>"` (the node's share) |
//! | `<prefix>:pm:{<topic>}` | HASH | field `"<user>/<node>"`, value the user's subscriptions on that node |
//!
//! Every key written gets the route TTL again (`PEXPIRE`); the nodes write
//! their live entries again within a third of it. Writes go in pipelines of
//! at most [`ROUTE_CHUNK`] keys' commands (on a cluster, one per slot
//! group). Reads: one `HGETALL` per user (bounded by the per-node
//! connection cap times the nodes), one `HGETALL` per topic for the counts
//! (one field per node), `HSCAN` pages for the members.

use std::collections::HashMap;

use async_trait::async_trait;
use edgepush_core::ports::{
    ConnPresence, PresenceStore, PresenceWrite, TopicMember, TopicNodePresence,
};
use edgepush_core::{ConnId, NodeId, RouteError, TopicName, UserId};
use redis::{Cmd, Value};

use crate::keys::{topic_counts_key, topic_members_key, user_presence_key};
use crate::store::{ROUTE_CHUNK, RedisRouteStore, hash_pairs, text_of};

/// The commands of one key: fields to set and fields to delete.
#[derive(Default)]
struct KeyWrites {
    set: Vec<(String, String)>,
    delete: Vec<String>,
}

impl RedisRouteStore {
    /// `HSET`, `HDEL` and `PEXPIRE` of each key in `writes`, pipelined in
    /// chunks.
    async fn write_hashes(&self, writes: Vec<(String, KeyWrites)>) -> Result<(), RouteError> {
        let ttl = self.settings.route_ttl_ms;
        for chunk in writes.chunks(ROUTE_CHUNK) {
            let mut cmds: Vec<(String, Cmd)> = Vec::with_capacity(chunk.len() * 3);
            for (key, w) in chunk {
                if !w.set.is_empty() {
                    let mut hset = redis::cmd("HSET");
                    hset.arg(key);
                    for (field, value) in &w.set {
                        hset.arg(field).arg(value);
                    }
                    let mut pexpire = redis::cmd("PEXPIRE");
                    pexpire.arg(key).arg(ttl);
                    cmds.push((key.clone(), hset));
                    cmds.push((key.clone(), pexpire));
                }
                if !w.delete.is_empty() {
                    let mut hdel = redis::cmd("HDEL");
                    hdel.arg(key);
                    for field in &w.delete {
                        hdel.arg(field);
                    }
                    cmds.push((key.clone(), hdel));
                }
            }
            if !cmds.is_empty() {
                self.bounded("presence write", self.pipelined(cmds)).await?;
            }
        }
        Ok(())
    }

    /// `HGETALL` of each key, in one pipeline: the (field, value) texts.
    async fn read_hashes(
        &self,
        op: &'static str,
        keys: Vec<String>,
    ) -> Result<Vec<Vec<(String, String)>>, RouteError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let cmds = keys
            .into_iter()
            .map(|key| {
                let mut hgetall = redis::cmd("HGETALL");
                hgetall.arg(&key);
                (key, hgetall)
            })
            .collect();
        let replies = self.bounded(op, self.pipelined(cmds)).await?;
        replies
            .into_iter()
            .map(|reply| {
                let pairs = hash_pairs(reply).map_err(|other| {
                    RouteError::Backend(format!("{op}: unexpected reply {other:?}"))
                })?;
                Ok(pairs
                    .into_iter()
                    .filter_map(|(f, v)| Some((text_of(f)?, text_of(v)?)))
                    .collect())
            })
            .collect()
    }
}

/// `"<user>/<node>"`: a member field.
pub(crate) fn member_field(user: &UserId, node: &NodeId) -> String {
    format!("{user}/{node}")
}

/// Reads a member field back; `None` for one that is not `user/node`.
fn parse_member_field(field: &str) -> Option<(UserId, NodeId)> {
    let (user, node) = field.split_once('/')?;
    Some((UserId::new(user).ok()?, NodeId::new(node).ok()?))
}

/// Two numbers separated by a space.
fn two_numbers(text: &str) -> Option<(u64, u64)> {
    let (a, b) = text.split_once(' ')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[async_trait]
impl PresenceStore for RedisRouteStore {
    async fn write(&self, node: &NodeId, changes: &PresenceWrite) -> Result<(), RouteError> {
        let prefix = &self.settings.prefix;
        // One entry per key, in first-seen order.
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut writes: Vec<(String, KeyWrites)> = Vec::new();
        let mut at = |key: String| -> usize {
            *index.entry(key.clone()).or_insert_with(|| {
                writes.push((key, KeyWrites::default()));
                writes.len() - 1
            })
        };
        let mut slots = Vec::new();
        for (user, conn, opened) in &changes.connections {
            let i = at(user_presence_key(prefix, user));
            slots.push((i, conn.to_string(), opened.map(|ms| format!("{node} {ms}"))));
        }
        for change in &changes.topics {
            let i = at(topic_counts_key(prefix, &change.topic));
            slots.push((
                i,
                node.to_string(),
                change.totals.map(|(c, u)| format!("{c} {u}")),
            ));
            if !change.members.is_empty() {
                let i = at(topic_members_key(prefix, &change.topic));
                for (user, count) in &change.members {
                    slots.push((
                        i,
                        member_field(user, node),
                        (*count > 0).then(|| count.to_string()),
                    ));
                }
            }
        }
        for (i, field, value) in slots {
            let w = &mut writes[i].1;
            match value {
                Some(value) => w.set.push((field, value)),
                None => w.delete.push(field),
            }
        }
        self.write_hashes(writes).await
    }

    async fn user_connections(
        &self,
        users: &[UserId],
    ) -> Result<Vec<Vec<ConnPresence>>, RouteError> {
        let keys = users
            .iter()
            .map(|u| user_presence_key(&self.settings.prefix, u))
            .collect();
        let hashes = self.read_hashes("user presence", keys).await?;
        Ok(hashes
            .into_iter()
            .map(|pairs| {
                pairs
                    .into_iter()
                    .filter_map(|(conn, value)| {
                        let (node, ms) = value.split_once(' ')?;
                        Some(ConnPresence {
                            conn: ConnId::new(conn).ok()?,
                            node: NodeId::new(node).ok()?,
                            connected_at_ms: ms.parse().ok()?,
                        })
                    })
                    .collect()
            })
            .collect())
    }

    async fn topic_nodes(&self, topic: &TopicName) -> Result<Vec<TopicNodePresence>, RouteError> {
        let key = topic_counts_key(&self.settings.prefix, topic);
        let mut hashes = self.read_hashes("topic presence", vec![key]).await?;
        let pairs = hashes.pop().unwrap_or_default();
        Ok(pairs
            .into_iter()
            .filter_map(|(node, value)| {
                let (connections, users) = two_numbers(&value)?;
                Some(TopicNodePresence {
                    node: NodeId::new(node).ok()?,
                    connections,
                    users,
                })
            })
            .collect())
    }

    async fn topic_members(
        &self,
        topic: &TopicName,
        cursor: u64,
        count: usize,
    ) -> Result<(Vec<TopicMember>, u64), RouteError> {
        let key = topic_members_key(&self.settings.prefix, topic);
        let mut conn = self.conn.clone();
        let mut hscan = redis::cmd("HSCAN");
        hscan.arg(&key).arg(cursor).arg("COUNT").arg(count.max(1));
        let reply: Value = self
            .bounded("topic members", hscan.query_async(&mut conn))
            .await?;
        let bad = |what: &str| RouteError::Backend(format!("topic members: {what}"));
        let Value::Array(mut parts) = reply else {
            return Err(bad("HSCAN answered something else than [cursor, entries]"));
        };
        if parts.len() != 2 {
            return Err(bad("HSCAN answered something else than [cursor, entries]"));
        }
        let entries = parts.pop().unwrap_or(Value::Nil);
        let next = parts
            .pop()
            .and_then(text_of)
            .and_then(|c| c.parse::<u64>().ok())
            .ok_or_else(|| bad("HSCAN's cursor is not a number"))?;
        let pairs = hash_pairs(entries).map_err(|_| bad("HSCAN's entries are not pairs"))?;
        let members = pairs
            .into_iter()
            .filter_map(|(field, value)| {
                let (user, node) = parse_member_field(&text_of(field)?)?;
                let connections = text_of(value)?.parse().ok()?;
                Some(TopicMember {
                    user,
                    node,
                    connections,
                })
            })
            .collect();
        Ok((members, next))
    }

    async fn forget(
        &self,
        topic: &TopicName,
        members: &[(UserId, NodeId)],
        nodes: &[NodeId],
    ) -> Result<(), RouteError> {
        let prefix = &self.settings.prefix;
        let mut writes = Vec::new();
        if !members.is_empty() {
            writes.push((
                topic_members_key(prefix, topic),
                KeyWrites {
                    set: Vec::new(),
                    delete: members.iter().map(|(u, n)| member_field(u, n)).collect(),
                },
            ));
        }
        if !nodes.is_empty() {
            writes.push((
                topic_counts_key(prefix, topic),
                KeyWrites {
                    set: Vec::new(),
                    delete: nodes.iter().map(ToString::to_string).collect(),
                },
            ));
        }
        self.write_hashes(writes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let (u, n) = (
            UserId::new("a:b@c").unwrap(),
            NodeId::new("node-1").unwrap(),
        );
        assert_eq!(parse_member_field(&member_field(&u, &n)), Some((u, n)));
        assert_eq!(parse_member_field("no-slash"), None);
        assert_eq!(parse_member_field("bad user/n"), None);
        assert_eq!(two_numbers("3 2"), Some((3, 2)));
        assert_eq!(two_numbers("3"), None);
        assert_eq!(two_numbers("x 2"), None);
    }
}
