//! The node's listeners, its accept loop and its graceful drain.
//!
//! [`run`] takes two bound listeners (clients, push API) — tests bind them
//! on port 0 — the configuration, the stores, and a shutdown future. On
//! shutdown it stops accepting, closes every connection with 1012, waits
//! for them (bounded by the drain timeout), removes the node's routes and
//! liveness entry, and returns.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use edgepush_core::protocol::CLOSE_DRAINING;
use edgepush_delivery::{HttpPusher, PushClientConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::NodeConfig;
use crate::metrics::Metrics;
use crate::state::{NodeDeps, NodeState};
use crate::{acks, connection, presence, push_api, registrar, registration};

/// The node failed to start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener's address could not be read.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// A listener could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The route store (Redis) could not be reached at start-up.
    #[error("redis: {0}")]
    Routes(#[from] edgepush_core::RouteError),
    /// The message store (MongoDB) could not be reached at start-up.
    #[error("mongodb: {0}")]
    Messages(#[from] edgepush_core::StoreError),
    /// The token verifier's keys or URL are unusable.
    #[error("token verification: {0}")]
    Auth(#[from] edgepush_auth::ConfigError),
    /// No push credential to sign pushes to other nodes with (presence
    /// events, client publishes).
    #[error("a push credential is required")]
    NoPushCredential,
    /// The push client to other nodes could not be built.
    #[error("push client: {0}")]
    PushClient(#[from] edgepush_delivery::BuildError),
}

/// Runs one node on Redis and MongoDB as `config` says, until `shutdown`
/// resolves, then drains: what `edge-node serve` (and dev mode's node
/// processes) run once their configuration is parsed.
pub async fn serve(
    config: crate::ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let crate::ServeConfig { node, redis, mongo } = config;
    let routes = Arc::new(edgepush_redis::RedisRouteStore::connect(redis).await?);
    let messages = edgepush_mongo::MongoMessageStore::connect(mongo.clone()).await?;
    let topics = edgepush_mongo::MongoTopicStore::on(messages.database(), mongo).await?;
    // Presence events and client publishes go to other nodes signed with
    // the push credential every node verifies.
    let credential = node
        .push_credentials
        .first()
        .cloned()
        .ok_or(ServerError::NoPushCredential)?;
    let pusher = HttpPusher::new(PushClientConfig::new(credential))?;
    let deps = NodeDeps {
        routes: routes.clone(),
        nodes: routes.clone(),
        messages: Arc::new(messages),
        verifier: crate::verifier_for(&node.auth)?,
        topics: Arc::new(topics),
        topic_routes: routes.clone(),
        presence: routes,
        pusher: Arc::new(pusher),
    };
    let bind = |addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })
    };
    let ws = bind(node.ws_addr).await?;
    let push = bind(node.push_addr).await?;
    run(ws, push, node, deps, shutdown).await
}

/// Runs a node on `ws` (client WebSockets) and `push` (push API, health,
/// metrics) until `shutdown` resolves, then drains.
pub async fn run(
    ws: TcpListener,
    push: TcpListener,
    config: NodeConfig,
    deps: NodeDeps,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let push_url = match &config.push_url {
        Some(url) => url.clone(),
        None => format!("http://{}", push.local_addr()?),
    };
    let state = Arc::new(NodeState::new(config, deps, push_url));

    tracing::info!(
        node = %state.config.node_id,
        ws = %ws.local_addr()?,
        push = %push.local_addr()?,
        push_url = %state.push_url,
        "edge node starting"
    );
    // The registrar runs before the first beat: a beat that finds the
    // liveness entry missing re-registers topic memberships through it.
    let stop_background = CancellationToken::new();
    let registrar_task = tokio::spawn({
        let (state, stop) = (state.clone(), stop_background.clone());
        async move { registrar::run(state.registrar_parts(), stop).await }
    });
    registration::beat(&state).await;

    let heartbeat = tokio::spawn(registration::heartbeat_loop(
        state.clone(),
        stop_background.clone(),
    ));
    let push_server = tokio::spawn(push_api::serve(
        push,
        state.clone(),
        stop_background.clone(),
    ));
    // Stopped after the drain, so that acks of the last connections are
    // written before the node exits.
    let stop_acks = CancellationToken::new();
    let ack_writer = tokio::spawn({
        let (state, stop) = (state.clone(), stop_acks.clone());
        async move {
            let config = &state.config;
            acks::run(
                &state.acks,
                &*state.deps.messages,
                &state.metrics,
                config.ack_interval,
                stop,
            )
            .await;
        }
    });
    let presence_writer = tokio::spawn({
        let (state, stop) = (state.clone(), stop_acks.clone());
        async move { presence::run(state.presence_parts(), stop).await }
    });

    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = ws.accept() => match accepted {
                Ok((stream, peer)) => {
                    let task = connection::serve(state.clone(), stream, peer);
                    tracing::trace!(bytes = std::mem::size_of_val(&task), "connection task size");
                    connections.spawn(task);
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    Metrics::inc(&state.metrics.errors);
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }

    drop(ws);
    drain(&state, &connections).await;
    stop_acks.cancel();
    let _ = ack_writer.await;
    let _ = presence_writer.await;
    stop_background.cancel();
    let _ = heartbeat.await;
    let _ = push_server.await;
    let _ = registrar_task.await;
    tracing::info!(node = %state.config.node_id, "edge node stopped");
    Ok(())
}

async fn drain(state: &Arc<NodeState>, connections: &TaskTracker) {
    state.draining.store(true, Ordering::Release);
    let routes = state.hub.routes();
    tracing::info!(connections = routes.len(), "draining");
    state.hub.close_all(CLOSE_DRAINING);
    connections.close();
    if tokio::time::timeout(state.config.drain_timeout, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = state.hub.len(),
            "drain timeout; dropping the remaining connections"
        );
    }
    let node = &state.config.node_id;
    let bounded = Duration::from_secs(5);
    // Every subscriber is gone: the memberships go too (dispatch stops
    // sending topic items here).
    let topics = state.topics.all_topics(&state.hub, false);
    let mut memberships = Vec::new();
    for shard in 0..crate::topics::TopicIndex::SHARDS {
        state.topics.registered_in(shard, &mut memberships);
    }
    memberships.extend(topics);
    memberships.sort();
    memberships.dedup();
    if !memberships.is_empty() {
        match tokio::time::timeout(
            bounded,
            state.deps.topic_routes.remove_topics(node, &memberships),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not remove topic memberships; they are ignored with the node's liveness")
            }
            Err(_) => tracing::warn!(
                "removing topic memberships timed out; they are ignored with the node's liveness"
            ),
        }
    }
    match tokio::time::timeout(bounded, state.deps.routes.remove_routes(&routes)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not remove routes; they expire with the node's liveness")
        }
        Err(_) => tracing::warn!("removing routes timed out; they expire with the node's liveness"),
    }
    match tokio::time::timeout(bounded, state.deps.nodes.remove_node(node)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not remove liveness entry; it expires"),
        Err(_) => tracing::warn!("removing liveness entry timed out; it expires"),
    }
}
