//! The [`PresenceStore`] contract: connections and topic shares read back
//! as nodes wrote them, closes and zero counts taking entries out, member
//! pages that together list every entry, and `forget` removing exactly what
//! it names.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::ensure;
use edgepush_core::ports::{PresenceWrite, TopicPresenceWrite};
use edgepush_core::{ConnId, NodeId, PresenceStore, TopicName, UserId};

use super::{Backend, Report, Rule};
use crate::unique;

/// Every rule of the contract, in the order of the trait's docs.
pub const RULES: &[Rule<dyn PresenceStore>] = crate::rules![dyn PresenceStore:
    written_connections_are_read_back_per_user,
    a_closed_connection_leaves_presence,
    topic_shares_are_per_node,
    member_pages_list_every_entry,
    forget_removes_only_the_named_entries,
];

/// Runs every rule against `backend`.
pub async fn check(backend: Backend<dyn PresenceStore>) -> Report {
    super::check("PresenceStore", RULES, backend).await
}

fn user(tag: &str) -> anyhow::Result<UserId> {
    Ok(UserId::new(unique(tag))?)
}

fn node(tag: &str) -> anyhow::Result<NodeId> {
    Ok(NodeId::new(unique(tag))?)
}

fn topic(tag: &str) -> anyhow::Result<TopicName> {
    Ok(TopicName::new(unique(tag))?)
}

fn conn(name: &str) -> ConnId {
    ConnId::new(name).expect("valid connection id")
}

/// Connections opened (`Some(at)`) or closed (`None`).
fn connections(list: &[(&UserId, &str, Option<i64>)]) -> PresenceWrite {
    PresenceWrite {
        connections: list
            .iter()
            .map(|(u, c, at)| ((*u).clone(), conn(c), *at))
            .collect(),
        topics: Vec::new(),
    }
}

/// One topic's change on a node.
fn share(
    topic: &TopicName,
    totals: Option<(u64, u64)>,
    members: &[(&UserId, u64)],
) -> PresenceWrite {
    PresenceWrite {
        connections: Vec::new(),
        topics: vec![TopicPresenceWrite {
            topic: topic.clone(),
            totals,
            members: members.iter().map(|(u, n)| ((*u).clone(), *n)).collect(),
        }],
    }
}

/// A user's connections as (connection, node, connected at) names.
fn conns_of(list: &[edgepush_core::ports::ConnPresence]) -> BTreeSet<(String, String, i64)> {
    list.iter()
        .map(|c| (c.conn.to_string(), c.node.to_string(), c.connected_at_ms))
        .collect()
}

/// Every member entry of `topic`, read page by page (`count` at a time)
/// until the cursor comes back 0: (user, node) -> connections.
async fn all_members(
    store: &dyn PresenceStore,
    topic: &TopicName,
    count: usize,
) -> anyhow::Result<BTreeMap<(String, String), u64>> {
    let mut out = BTreeMap::new();
    let mut cursor = 0;
    for _ in 0..10_000 {
        let (page, next) = store.topic_members(topic, cursor, count).await?;
        for m in page {
            out.insert((m.user.to_string(), m.node.to_string()), m.connections);
        }
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
    anyhow::bail!("the member pages of {topic} never ended")
}

/// [`PresenceStore::user_connections`] answers one list per user asked, in
/// order: every connection nodes wrote for that user, with its node and
/// when it opened; empty for a user with none.
async fn written_connections_are_read_back_per_user(
    backend: &Backend<dyn PresenceStore>,
) -> anyhow::Result<()> {
    let store = backend.handle().await?;
    let (alice, bob, nobody) = (user("alice")?, user("bob")?, user("nobody")?);
    let (n1, n2) = (node("edge-1")?, node("edge-2")?);
    store
        .write(
            &n1,
            &connections(&[(&alice, "a1", Some(1_000)), (&bob, "b1", Some(2_000))]),
        )
        .await?;
    store
        .write(&n2, &connections(&[(&alice, "a2", Some(3_000))]))
        .await?;
    let got = store
        .user_connections(&[bob.clone(), nobody, alice.clone()])
        .await?;
    ensure!(got.len() == 3, "one answer per user: {got:?}");
    let (n1s, n2s) = (n1.to_string(), n2.to_string());
    ensure!(
        conns_of(&got[0]) == BTreeSet::from([("b1".into(), n1s.clone(), 2_000)]),
        "bob: {got:?}"
    );
    ensure!(got[1].is_empty(), "a user without connections: {got:?}");
    ensure!(
        conns_of(&got[2]) == BTreeSet::from([("a1".into(), n1s, 1_000), ("a2".into(), n2s, 3_000)]),
        "alice, on both nodes: {got:?}"
    );
    ensure!(store.user_connections(&[]).await?.is_empty());
    Ok(())
}

/// A connection written as closed (`None`) leaves its user's presence; the
/// user's other connections stay.
async fn a_closed_connection_leaves_presence(
    backend: &Backend<dyn PresenceStore>,
) -> anyhow::Result<()> {
    let store = backend.handle().await?;
    let alice = user("alice")?;
    let n1 = node("edge-1")?;
    store
        .write(
            &n1,
            &connections(&[(&alice, "a1", Some(10)), (&alice, "a2", Some(20))]),
        )
        .await?;
    store
        .write(&n1, &connections(&[(&alice, "a1", None)]))
        .await?;
    let got = store.user_connections(std::slice::from_ref(&alice)).await?;
    ensure!(
        conns_of(&got[0]) == BTreeSet::from([("a2".into(), n1.to_string(), 20)]),
        "{got:?}"
    );
    store
        .write(&n1, &connections(&[(&alice, "a2", None)]))
        .await?;
    ensure!(store.user_connections(&[alice]).await?[0].is_empty());
    Ok(())
}

/// [`PresenceStore::topic_nodes`] lists each node's last written share of a
/// topic (subscriptions, distinct users); a share written as `None` is
/// gone, and other topics' shares are never listed.
async fn topic_shares_are_per_node(backend: &Backend<dyn PresenceStore>) -> anyhow::Result<()> {
    let store = backend.handle().await?;
    let (t, other) = (topic("shares")?, topic("shares-other")?);
    let alice = user("alice")?;
    let (n1, n2) = (node("edge-1")?, node("edge-2")?);
    store
        .write(&n1, &share(&t, Some((2, 1)), &[(&alice, 2)]))
        .await?;
    store.write(&n2, &share(&t, Some((5, 3)), &[])).await?;
    store.write(&n2, &share(&t, Some((4, 3)), &[])).await?;
    store.write(&n1, &share(&other, Some((9, 9)), &[])).await?;
    let shares = |list: Vec<edgepush_core::ports::TopicNodePresence>| {
        list.into_iter()
            .map(|s| (s.node.to_string(), s.connections, s.users))
            .collect::<BTreeSet<_>>()
    };
    let got = shares(store.topic_nodes(&t).await?);
    ensure!(
        got == BTreeSet::from([(n1.to_string(), 2, 1), (n2.to_string(), 4, 3)]),
        "the last share of each node: {got:?}"
    );
    store.write(&n2, &share(&t, None, &[])).await?;
    let got = shares(store.topic_nodes(&t).await?);
    ensure!(
        got == BTreeSet::from([(n1.to_string(), 2, 1)]),
        "edge-2's share gone: {got:?}"
    );
    ensure!(store.topic_nodes(&topic("none")?).await?.is_empty());
    Ok(())
}

/// [`PresenceStore::topic_members`] pages, followed from cursor 0 until the
/// cursor comes back 0, list every (user, node) entry with its count as last
/// written; a count written as 0 takes the entry out.
async fn member_pages_list_every_entry(backend: &Backend<dyn PresenceStore>) -> anyhow::Result<()> {
    let store = backend.handle().await?;
    let t = topic("members")?;
    let (n1, n2) = (node("edge-1")?, node("edge-2")?);
    let users = (0..25)
        .map(|i| user(&format!("m{i}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let on_n1: Vec<(&UserId, u64)> = users.iter().map(|u| (u, 1)).collect();
    store.write(&n1, &share(&t, Some((25, 25)), &on_n1)).await?;
    store
        .write(&n2, &share(&t, Some((3, 1)), &[(&users[0], 3)]))
        .await?;
    store
        .write(&n1, &share(&t, Some((24, 24)), &[(&users[1], 0)]))
        .await?;
    let mut want: BTreeMap<(String, String), u64> = users[2..]
        .iter()
        .map(|u| ((u.to_string(), n1.to_string()), 1))
        .collect();
    want.insert((users[0].to_string(), n1.to_string()), 1);
    want.insert((users[0].to_string(), n2.to_string()), 3);
    for count in [7, 100] {
        let got = all_members(&*store, &t, count).await?;
        ensure!(got == want, "pages of {count}: {got:?}");
    }
    let (page, next) = store.topic_members(&topic("none")?, 0, 10).await?;
    ensure!(page.is_empty() && next == 0, "a topic without members");
    Ok(())
}

/// [`PresenceStore::forget`] removes the named (user, node) entries and the
/// named nodes' shares of the topic, and nothing else.
async fn forget_removes_only_the_named_entries(
    backend: &Backend<dyn PresenceStore>,
) -> anyhow::Result<()> {
    let store = backend.handle().await?;
    let t = topic("forget")?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    let (dead, live) = (node("edge-dead")?, node("edge-live")?);
    store
        .write(&dead, &share(&t, Some((2, 2)), &[(&alice, 1), (&bob, 1)]))
        .await?;
    store
        .write(&live, &share(&t, Some((1, 1)), &[(&alice, 1)]))
        .await?;
    store
        .forget(
            &t,
            &[(alice.clone(), dead.clone())],
            std::slice::from_ref(&dead),
        )
        .await?;
    let members = all_members(&*store, &t, 100).await?;
    ensure!(
        members
            == BTreeMap::from([
                ((alice.to_string(), live.to_string()), 1),
                ((bob.to_string(), dead.to_string()), 1),
            ]),
        "only alice on the dead node is forgotten: {members:?}"
    );
    let nodes: Vec<String> = store
        .topic_nodes(&t)
        .await?
        .iter()
        .map(|s| s.node.to_string())
        .collect();
    ensure!(
        nodes == [live.to_string()],
        "the dead node's share: {nodes:?}"
    );
    Ok(())
}
