//! Presence reads: what a [`PresenceStore`] holds, less the entries of
//! nodes that are not live ([`NodeDirectory`]), in the shapes the collect
//! API answers with.
//!
//! Every read is bounded whatever the number of connections: a user's
//! entries (at most the per-node connection cap per node), a topic's
//! per-node shares (one per node), or one page of a topic's members.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::id::{NodeId, UserId};
use crate::ports::{NodeDirectory, PresenceStore, RouteError};
use crate::topic::TopicName;

/// Whether a user is online, on how many connections, since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPresence {
    /// The user.
    pub user_id: UserId,
    /// Whether at least one connection is open on a live node.
    pub online: bool,
    /// Open connections on live nodes.
    pub connections: u64,
    /// When the oldest of them opened (milliseconds since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
}

/// A topic's subscription counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicCounts {
    /// The topic.
    pub topic: TopicName,
    /// Subscriptions on live nodes.
    pub connections: u64,
    /// Distinct users per node, summed over live nodes (a user subscribed
    /// through connections on two nodes counts on each).
    pub users: u64,
    /// Live nodes with subscribers.
    pub nodes: u64,
}

/// One member of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The user.
    pub user_id: UserId,
    /// Their subscribed connections (on the nodes of this page's entries).
    pub connections: u64,
}

/// A page of a topic's members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersPage {
    /// The topic.
    pub topic: TopicName,
    /// Members of this page, by user.
    pub members: Vec<Member>,
    /// Where the next page starts; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The live nodes among `nodes`.
async fn live(
    directory: &dyn NodeDirectory,
    nodes: impl Iterator<Item = NodeId>,
) -> Result<HashMap<NodeId, String>, RouteError> {
    let mut ids: Vec<NodeId> = nodes.collect();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    directory.live_nodes(&ids).await
}

/// The presence of each of `users`, in order.
pub async fn users(
    store: &dyn PresenceStore,
    directory: &dyn NodeDirectory,
    users: &[UserId],
) -> Result<Vec<UserPresence>, RouteError> {
    let entries = store.user_connections(users).await?;
    let live = live(directory, entries.iter().flatten().map(|c| c.node.clone())).await?;
    Ok(users
        .iter()
        .zip(entries)
        .map(|(user, conns)| {
            let alive: Vec<_> = conns
                .iter()
                .filter(|c| live.contains_key(&c.node))
                .collect();
            UserPresence {
                user_id: user.clone(),
                online: !alive.is_empty(),
                connections: alive.len() as u64,
                since_ms: alive.iter().map(|c| c.connected_at_ms).min(),
            }
        })
        .collect())
}

/// `topic`'s counts over live nodes.
pub async fn topic_counts(
    store: &dyn PresenceStore,
    directory: &dyn NodeDirectory,
    topic: &TopicName,
) -> Result<TopicCounts, RouteError> {
    let shares = store.topic_nodes(topic).await?;
    let live = live(directory, shares.iter().map(|s| s.node.clone())).await?;
    let mut counts = TopicCounts {
        topic: topic.clone(),
        connections: 0,
        users: 0,
        nodes: 0,
    };
    let mut dead = Vec::new();
    for share in shares {
        if live.contains_key(&share.node) {
            counts.connections += share.connections;
            counts.users += share.users;
            counts.nodes += 1;
        } else {
            dead.push(share.node);
        }
    }
    if !dead.is_empty() {
        // Garbage of crashed nodes: best effort, the answer is right anyway.
        let _ = store.forget(topic, &[], &dead).await;
    }
    Ok(counts)
}

/// A page of `topic`'s members on live nodes: about `limit` entries from
/// `cursor` (`None` to start). Entries of dead nodes are left out and
/// forgotten.
pub async fn topic_members(
    store: &dyn PresenceStore,
    directory: &dyn NodeDirectory,
    topic: &TopicName,
    cursor: Option<&str>,
    limit: usize,
) -> Result<MembersPage, RouteError> {
    let cursor = match cursor {
        None | Some("") => 0,
        Some(c) => c
            .parse::<u64>()
            .map_err(|_| RouteError::Backend("the cursor is not one this API gave".into()))?,
    };
    let (entries, next) = store.topic_members(topic, cursor, limit).await?;
    let live = live(directory, entries.iter().map(|e| e.node.clone())).await?;
    let mut members: Vec<Member> = Vec::new();
    let mut index: HashMap<UserId, usize> = HashMap::new();
    let mut dead = Vec::new();
    for entry in entries {
        if !live.contains_key(&entry.node) {
            dead.push((entry.user, entry.node));
            continue;
        }
        match index.get(&entry.user) {
            Some(&i) => members[i].connections += entry.connections,
            None => {
                index.insert(entry.user.clone(), members.len());
                members.push(Member {
                    user_id: entry.user,
                    connections: entry.connections,
                });
            }
        }
    }
    if !dead.is_empty() {
        let _ = store.forget(topic, &dead, &[]).await;
    }
    Ok(MembersPage {
        topic: topic.clone(),
        members,
        next_cursor: (next != 0).then(|| next.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::id::ConnId;
    use crate::memory::{MemoryPresence, MemoryRouteStore};
    use crate::ports::{PresenceWrite, TopicPresenceWrite};

    #[tokio::test]
    async fn dead_nodes_leave_presence() {
        let store = MemoryPresence::new();
        let directory = MemoryRouteStore::new();
        let (a, b) = (NodeId::new("a").unwrap(), NodeId::new("b").unwrap());
        let ttl = Duration::from_secs(60);
        directory.heartbeat(&a, "http://a", ttl).await.unwrap();
        directory.heartbeat(&b, "http://b", ttl).await.unwrap();
        let alice = UserId::new("alice").unwrap();
        let t = TopicName::new("room").unwrap();
        for (node, conn, at) in [(&a, "c1", 10), (&b, "c2", 5)] {
            let write = PresenceWrite {
                connections: vec![(alice.clone(), ConnId::new(conn).unwrap(), Some(at))],
                topics: vec![TopicPresenceWrite {
                    topic: t.clone(),
                    totals: Some((1, 1)),
                    members: vec![(alice.clone(), 1)],
                }],
            };
            store.write(node, &write).await.unwrap();
        }
        let got = users(&store, &directory, std::slice::from_ref(&alice))
            .await
            .unwrap();
        assert_eq!(
            (got[0].online, got[0].connections, got[0].since_ms),
            (true, 2, Some(5))
        );
        let counts = topic_counts(&store, &directory, &t).await.unwrap();
        assert_eq!((counts.connections, counts.users, counts.nodes), (2, 2, 2));
        let page = topic_members(&store, &directory, &t, None, 10)
            .await
            .unwrap();
        assert_eq!(
            page.members,
            vec![Member {
                user_id: alice.clone(),
                connections: 2
            }]
        );
        assert_eq!(page.next_cursor, None);

        directory.remove_node(&b).await.unwrap();
        let got = users(&store, &directory, std::slice::from_ref(&alice))
            .await
            .unwrap();
        assert_eq!((got[0].connections, got[0].since_ms), (1, Some(10)));
        let counts = topic_counts(&store, &directory, &t).await.unwrap();
        assert_eq!((counts.connections, counts.nodes), (1, 1));
        let page = topic_members(&store, &directory, &t, None, 10)
            .await
            .unwrap();
        assert_eq!(page.members[0].connections, 1);
        assert!(
            topic_members(&store, &directory, &t, Some("x"), 10)
                .await
                .is_err()
        );
    }
}
