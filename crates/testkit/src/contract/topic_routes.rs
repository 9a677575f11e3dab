//! The [`TopicRoutes`] contract: memberships read back as written, one
//! answer per topic asked in order, removals of exactly what was named,
//! bulk writes, and nodes writing concurrently.

use std::collections::BTreeSet;

use anyhow::ensure;
use edgepush_core::{NodeId, TopicName, TopicRoutes};

use super::{Backend, Report, Rule};
use crate::unique;

/// Every rule of the contract, in the order of the trait's docs.
pub const RULES: &[Rule<dyn TopicRoutes>] = crate::rules![dyn TopicRoutes:
    added_memberships_are_read_back,
    nodes_of_answers_every_topic_asked_in_order,
    remove_topics_forgets_only_the_given_memberships,
    thousands_of_memberships_are_added_and_removed_in_one_call,
    memberships_added_concurrently_all_land,
];

/// Runs every rule against `backend`.
pub async fn check(backend: Backend<dyn TopicRoutes>) -> Report {
    super::check("TopicRoutes", RULES, backend).await
}

fn topic(tag: &str) -> anyhow::Result<TopicName> {
    Ok(TopicName::new(unique(tag))?)
}

fn node(tag: &str) -> anyhow::Result<NodeId> {
    Ok(NodeId::new(unique(tag))?)
}

fn set(nodes: &[NodeId]) -> BTreeSet<String> {
    nodes.iter().map(ToString::to_string).collect()
}

fn want(nodes: &[&NodeId]) -> BTreeSet<String> {
    nodes.iter().map(ToString::to_string).collect()
}

/// Memberships added ([`TopicRoutes::add_topics`]) are read back: each topic
/// lists every node that added it, once, also when a node adds it again.
async fn added_memberships_are_read_back(backend: &Backend<dyn TopicRoutes>) -> anyhow::Result<()> {
    let routes = backend.handle().await?;
    let (a, b) = (topic("read-a")?, topic("read-b")?);
    let (n1, n2) = (node("edge-1")?, node("edge-2")?);
    routes.add_topics(&n1, &[a.clone(), b.clone()]).await?;
    routes.add_topics(&n2, std::slice::from_ref(&a)).await?;
    routes.add_topics(&n2, std::slice::from_ref(&a)).await?;
    let got = routes.nodes_of(&[a, b]).await?;
    ensure!(got.len() == 2, "one answer per topic: {got:?}");
    ensure!(
        got[0].len() == 2 && set(&got[0]) == want(&[&n1, &n2]),
        "{got:?}"
    );
    ensure!(set(&got[1]) == want(&[&n1]), "{got:?}");
    Ok(())
}

/// [`TopicRoutes::nodes_of`] answers one list per topic asked, in the order
/// asked (duplicates included), empty for a topic without members, and an
/// empty list for no topics.
async fn nodes_of_answers_every_topic_asked_in_order(
    backend: &Backend<dyn TopicRoutes>,
) -> anyhow::Result<()> {
    let routes = backend.handle().await?;
    let (a, b, none) = (topic("order-a")?, topic("order-b")?, topic("order-none")?);
    let (n1, n2) = (node("edge-1")?, node("edge-2")?);
    routes.add_topics(&n1, std::slice::from_ref(&a)).await?;
    routes.add_topics(&n2, std::slice::from_ref(&b)).await?;
    let got = routes
        .nodes_of(&[b.clone(), none.clone(), a.clone(), b.clone()])
        .await?;
    let got: Vec<BTreeSet<String>> = got.iter().map(|n| set(n)).collect();
    ensure!(
        got == [want(&[&n2]), want(&[]), want(&[&n1]), want(&[&n2])],
        "answers in the order asked: {got:?}"
    );
    ensure!(routes.nodes_of(&[]).await?.is_empty(), "no topics asked");
    Ok(())
}

/// [`TopicRoutes::remove_topics`] forgets the named node's membership of
/// the named topics, and nothing else (other nodes, other topics); removing
/// what is not there is no error.
async fn remove_topics_forgets_only_the_given_memberships(
    backend: &Backend<dyn TopicRoutes>,
) -> anyhow::Result<()> {
    let routes = backend.handle().await?;
    let (a, b, none) = (topic("rm-a")?, topic("rm-b")?, topic("rm-none")?);
    let (n1, n2) = (node("edge-1")?, node("edge-2")?);
    routes.add_topics(&n1, &[a.clone(), b.clone()]).await?;
    routes.add_topics(&n2, std::slice::from_ref(&a)).await?;
    routes.remove_topics(&n1, &[a.clone(), none]).await?;
    let got = routes.nodes_of(&[a.clone(), b.clone()]).await?;
    ensure!(set(&got[0]) == want(&[&n2]), "a keeps edge-2: {got:?}");
    ensure!(set(&got[1]) == want(&[&n1]), "b keeps edge-1: {got:?}");
    routes.remove_topics(&n2, std::slice::from_ref(&a)).await?;
    ensure!(
        routes.nodes_of(&[a]).await?[0].is_empty(),
        "a has no member"
    );
    Ok(())
}

/// A node's memberships of 1,500 topics are added, read and removed in one
/// call each (a node's whole index after a route store loss).
async fn thousands_of_memberships_are_added_and_removed_in_one_call(
    backend: &Backend<dyn TopicRoutes>,
) -> anyhow::Result<()> {
    let routes = backend.handle().await?;
    let n1 = node("edge-bulk")?;
    let base = unique("bulk");
    let topics = (0..1500)
        .map(|i| TopicName::new(format!("{base}-{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    routes.add_topics(&n1, &topics).await?;
    let got = routes.nodes_of(&topics).await?;
    ensure!(got.len() == topics.len());
    ensure!(
        got.iter().all(|nodes| set(nodes) == want(&[&n1])),
        "every topic lists the node"
    );
    routes.remove_topics(&n1, &topics).await?;
    ensure!(
        routes.nodes_of(&topics).await?.iter().all(Vec::is_empty),
        "every membership removed"
    );
    Ok(())
}

/// Nodes adding memberships of one topic at once, on separate handles, all
/// land.
async fn memberships_added_concurrently_all_land(
    backend: &Backend<dyn TopicRoutes>,
) -> anyhow::Result<()> {
    let t = topic("concurrent")?;
    let nodes = (0..8)
        .map(|i| node(&format!("edge-{i}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut tasks = tokio::task::JoinSet::new();
    for (routes, n) in backend.handles(nodes.len()).await?.into_iter().zip(&nodes) {
        let (t, n) = (t.clone(), n.clone());
        tasks.spawn(async move { routes.add_topics(&n, &[t]).await });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    let got = backend.handle().await?.nodes_of(&[t]).await?;
    ensure!(
        set(&got[0]) == nodes.iter().map(ToString::to_string).collect(),
        "every node is a member: {got:?}"
    );
    Ok(())
}
