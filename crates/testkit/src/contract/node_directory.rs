//! The [`NodeDirectory`] contract: heartbeats that say whether the node's
//! entry had to be created again, liveness that ends when heartbeats stop or
//! the node is removed, and `live_nodes` answering for the nodes asked.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::ensure;
use edgepush_core::NodeId;
use edgepush_core::ports::{Heartbeat, NodeDirectory};

use super::{Backend, Report, Rule};
use crate::unique;
use crate::wait::{self, stall, until};

/// Every rule of the contract, in the order of the trait's docs.
pub const RULES: &[Rule<dyn NodeDirectory>] = crate::rules![dyn NodeDirectory:
    the_first_heartbeat_creates_and_later_ones_refresh,
    live_nodes_reports_the_live_nodes_among_those_asked,
    a_silent_node_is_dead_once_its_ttl_passed,
    remove_node_marks_it_dead_now,
];

/// Runs every rule against `backend`.
pub async fn check(backend: Backend<dyn NodeDirectory>) -> Report {
    super::check("NodeDirectory", RULES, backend).await
}

/// A TTL no rule outlives: a node heartbeated with it stays alive.
const LONG: Duration = Duration::from_secs(600);

fn node(tag: &str) -> anyhow::Result<NodeId> {
    Ok(NodeId::new(unique(tag))?)
}

/// A node's first heartbeat reports [`Heartbeat::Recreated`] (it must
/// register its routes), the next ones [`Heartbeat::Refreshed`]; a
/// heartbeat with another push URL moves the node there.
async fn the_first_heartbeat_creates_and_later_ones_refresh(
    backend: &Backend<dyn NodeDirectory>,
) -> anyhow::Result<()> {
    let nodes = backend.handle().await?;
    let n = node("edge-hb")?;
    assert_eq!(
        nodes.heartbeat(&n, "http://10.0.0.1:8081", LONG).await?,
        Heartbeat::Recreated
    );
    assert_eq!(
        nodes.heartbeat(&n, "http://10.0.0.1:8081", LONG).await?,
        Heartbeat::Refreshed
    );
    assert_eq!(
        nodes.heartbeat(&n, "http://10.0.0.1:8082", LONG).await?,
        Heartbeat::Refreshed
    );
    let live = nodes.live_nodes(std::slice::from_ref(&n)).await?;
    assert_eq!(
        live,
        HashMap::from([(n.clone(), "http://10.0.0.1:8082".to_owned())])
    );
    // Another handle (another process) sees the same entry.
    let other = backend.handle().await?;
    assert_eq!(
        other.heartbeat(&n, "http://10.0.0.1:8082", LONG).await?,
        Heartbeat::Refreshed
    );
    Ok(())
}

/// [`NodeDirectory::live_nodes`] gives the push URL of every live node among
/// those asked, and nothing for nodes never seen or not asked about.
async fn live_nodes_reports_the_live_nodes_among_those_asked(
    backend: &Backend<dyn NodeDirectory>,
) -> anyhow::Result<()> {
    let nodes = backend.handle().await?;
    let all: Vec<NodeId> = (0..30)
        .map(|i| node(&format!("edge-{i}")))
        .collect::<anyhow::Result<_>>()?;
    for (i, n) in all.iter().enumerate() {
        nodes
            .heartbeat(n, &format!("http://10.0.1.{i}:8081"), LONG)
            .await?;
    }
    let mut asked = all[..20].to_vec();
    asked.push(node("never-seen")?);
    let live = nodes.live_nodes(&asked).await?;
    let want: HashMap<NodeId, String> = all[..20]
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), format!("http://10.0.1.{i}:8081")))
        .collect();
    assert_eq!(live, want);
    ensure!(
        nodes.live_nodes(&[]).await?.is_empty(),
        "nothing asked, nothing answered"
    );
    Ok(())
}

/// A node that stops heartbeating is reported dead once its TTL has passed,
/// while others stay alive; its next heartbeat reports
/// [`Heartbeat::Recreated`], so it registers its routes again.
async fn a_silent_node_is_dead_once_its_ttl_passed(
    backend: &Backend<dyn NodeDirectory>,
) -> anyhow::Result<()> {
    let nodes = backend.handle().await?;
    let (dying, steady) = (node("dying")?, node("steady")?);
    nodes.heartbeat(&steady, "http://steady", LONG).await?;
    let ttl = Duration::from_millis(300);
    assert_eq!(
        nodes.heartbeat(&dying, "http://dying", ttl).await?,
        Heartbeat::Recreated
    );
    let both = [dying.clone(), steady.clone()];
    // Nothing to measure moves while a TTL runs out: the wait gives up
    // after the stall period, which only a backend that never expires the
    // node reaches.
    until("the silent node to be reported dead", stall(), || async {
        Ok(if nodes.live_nodes(&both).await?.contains_key(&dying) {
            wait::Check::Waiting(())
        } else {
            wait::Check::Done(())
        })
    })
    .await?;
    let live = nodes.live_nodes(&both).await?;
    assert_eq!(
        live,
        HashMap::from([(steady.clone(), "http://steady".to_owned())])
    );
    assert_eq!(
        nodes.heartbeat(&dying, "http://dying", LONG).await?,
        Heartbeat::Recreated
    );
    ensure!(
        nodes.live_nodes(&both).await?.contains_key(&dying),
        "alive again"
    );
    Ok(())
}

/// [`NodeDirectory::remove_node`] reports the node dead at once (removing it
/// twice is fine), leaves other nodes alone, and the node's next heartbeat
/// reports [`Heartbeat::Recreated`].
async fn remove_node_marks_it_dead_now(backend: &Backend<dyn NodeDirectory>) -> anyhow::Result<()> {
    let nodes = backend.handle().await?;
    let (gone, kept) = (node("gone")?, node("kept")?);
    nodes.heartbeat(&gone, "http://gone", LONG).await?;
    nodes.heartbeat(&kept, "http://kept", LONG).await?;
    nodes.remove_node(&gone).await?;
    let live = nodes.live_nodes(&[gone.clone(), kept.clone()]).await?;
    assert_eq!(
        live,
        HashMap::from([(kept.clone(), "http://kept".to_owned())])
    );
    nodes.remove_node(&gone).await?;
    nodes.remove_node(&node("never-seen")?).await?;
    assert_eq!(
        nodes.heartbeat(&gone, "http://gone", LONG).await?,
        Heartbeat::Recreated
    );
    assert_eq!(
        nodes.heartbeat(&kept, "http://kept", LONG).await?,
        Heartbeat::Refreshed
    );
    Ok(())
}
