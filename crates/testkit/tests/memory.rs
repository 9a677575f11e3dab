//! The in-memory backends of `edgepush_core::memory` against the contract
//! suites of their ports (dev mode and unit tests rely on them keeping the
//! same rules as the real backends).

use std::sync::Arc;

use edgepush_core::memory::{
    MemoryMessageStore, MemoryPresence, MemoryRouteStore, MemoryTopicRoutes, MemoryTopicStore,
};
use edgepush_testkit::contract::{
    Backend, message_store, node_directory, presence_store, route_store, topic_routes, topic_store,
};

#[tokio::test]
async fn memory_message_store_keeps_the_contract() -> anyhow::Result<()> {
    let store = Arc::new(MemoryMessageStore::new());
    message_store::check(Backend::single(store))
        .await
        .into_result()
}

#[tokio::test]
async fn memory_route_store_keeps_the_contract() -> anyhow::Result<()> {
    let routes = Arc::new(MemoryRouteStore::new());
    route_store::check(Backend::single(routes))
        .await
        .into_result()
}

#[tokio::test]
async fn memory_node_directory_keeps_the_contract() -> anyhow::Result<()> {
    let nodes = Arc::new(MemoryRouteStore::new());
    node_directory::check(Backend::single(nodes))
        .await
        .into_result()
}

#[tokio::test]
async fn memory_topic_store_keeps_the_contract() -> anyhow::Result<()> {
    let store = Arc::new(MemoryTopicStore::new());
    topic_store::check(Backend::single(store))
        .await
        .into_result()
}

#[tokio::test]
async fn memory_topic_routes_keep_the_contract() -> anyhow::Result<()> {
    let routes = Arc::new(MemoryTopicRoutes::default());
    topic_routes::check(Backend::single(routes))
        .await
        .into_result()
}

#[tokio::test]
async fn memory_presence_keeps_the_contract() -> anyhow::Result<()> {
    let presence = Arc::new(MemoryPresence::new());
    presence_store::check(Backend::single(presence))
        .await
        .into_result()
}
