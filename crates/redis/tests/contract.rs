//! The Redis route store against the `RouteStore`, `NodeDirectory`,
//! `TopicRoutes` and `PresenceStore` contract suites
//! (`edgepush_testkit::contract`), on one real Redis
//! (`EDGEPUSH_TEST_REDIS_URL`, under a key prefix of each test's own) and on
//! a private three-primary Redis Cluster, where every rule's keys spread
//! over the primaries' slots. Each handle the suites ask for is a store
//! with a connection of its own.

use std::sync::Arc;
use std::time::Duration;

use edgepush_core::{NodeDirectory, PresenceStore, RouteStore, TopicRoutes};
use edgepush_redis::{RedisConfig, RedisRouteStore};
use edgepush_testkit::contract::{
    self, Backend, node_directory, presence_store, route_store, topic_routes,
};
use edgepush_testkit::{RedisCluster, delete_prefix, redis_url, unique_prefix};

/// Handles on `config`, seen as port `P`.
fn backend<P: ?Sized + Send + Sync + 'static>(
    config: RedisConfig,
    port: fn(Arc<RedisRouteStore>) -> Arc<P>,
) -> Backend<P> {
    Backend::new(move || {
        let config = config.clone();
        async move { Ok(port(Arc::new(RedisRouteStore::connect(config).await?))) }
    })
}

fn routes(store: Arc<RedisRouteStore>) -> Arc<dyn RouteStore> {
    store
}

fn nodes(store: Arc<RedisRouteStore>) -> Arc<dyn NodeDirectory> {
    store
}

fn memberships(store: Arc<RedisRouteStore>) -> Arc<dyn TopicRoutes> {
    store
}

fn presence(store: Arc<RedisRouteStore>) -> Arc<dyn PresenceStore> {
    store
}

/// A config for the shared Redis under a prefix of its own; route hashes
/// expire by themselves should a failed run leave them behind.
fn shared_config(tag: &str) -> anyhow::Result<RedisConfig> {
    Ok(RedisConfig {
        key_prefix: unique_prefix(tag),
        route_ttl: Duration::from_secs(600),
        ..RedisConfig::new(redis_url()?)
    })
}

#[tokio::test]
async fn redis_route_store_keeps_the_contract() -> anyhow::Result<()> {
    let config = shared_config("contract-routes")?;
    let report = route_store::check(backend(config.clone(), routes)).await;
    delete_prefix(&config.url, &config.key_prefix).await?;
    report.into_result()
}

#[tokio::test]
async fn redis_node_directory_keeps_the_contract() -> anyhow::Result<()> {
    let config = shared_config("contract-nodes")?;
    let report = node_directory::check(backend(config.clone(), nodes)).await;
    delete_prefix(&config.url, &config.key_prefix).await?;
    report.into_result()
}

#[tokio::test]
async fn redis_topic_routes_keep_the_contract() -> anyhow::Result<()> {
    let config = shared_config("contract-topics")?;
    let report = topic_routes::check(backend(config.clone(), memberships)).await;
    delete_prefix(&config.url, &config.key_prefix).await?;
    report.into_result()
}

#[tokio::test]
async fn redis_presence_keeps_the_contract() -> anyhow::Result<()> {
    let config = shared_config("contract-presence")?;
    let report = presence_store::check(backend(config.clone(), presence)).await;
    delete_prefix(&config.url, &config.key_prefix).await?;
    report.into_result()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_keeps_the_route_store_node_directory_topic_and_presence_contracts()
-> anyhow::Result<()> {
    let cluster = RedisCluster::start().await?;
    let config = RedisConfig {
        key_prefix: unique_prefix("contract-cluster"),
        // Only the first node as seed: the rest is discovered.
        ..RedisConfig::cluster([cluster.url(cluster.ports()[0])])
    };
    contract::all([
        route_store::check(backend(config.clone(), routes)).await,
        node_directory::check(backend(config.clone(), nodes)).await,
        topic_routes::check(backend(config.clone(), memberships)).await,
        presence_store::check(backend(config, presence)).await,
    ])
}
