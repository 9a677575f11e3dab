//! The node's presence in the node directory: a heartbeat that refreshes
//! its liveness entry and, when the entry was gone (expiry, Redis flush or
//! restart), re-registers the routes of every live connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use edgepush_core::ports::Heartbeat;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::server::Shared;

/// Beats every `heartbeat_interval` until `stop` is cancelled.
pub(crate) async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(shared.config.heartbeat_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => beat(&shared).await,
        }
    }
}

/// One heartbeat. Re-registers every route when the entry had to be
/// created again, and keeps trying on later beats until that succeeds.
pub(crate) async fn beat(shared: &Shared) {
    if shared.draining.load(Ordering::Acquire) {
        return;
    }
    let cfg = &shared.config;
    let result = shared
        .deps
        .nodes
        .heartbeat(&cfg.node_id, &shared.push_url, cfg.node_ttl)
        .await;
    let reregister = match result {
        Ok(Heartbeat::Refreshed) => !shared.heartbeat_ok.load(Ordering::Acquire),
        Ok(Heartbeat::Recreated) => true,
        Err(e) => {
            Metrics::inc(&shared.metrics.heartbeat_failures);
            if shared.heartbeat_ok.swap(false, Ordering::AcqRel) {
                tracing::warn!(error = %e, "heartbeat failed; node not ready");
            }
            return;
        }
    };
    if reregister {
        let routes = shared.hub.routes();
        if !routes.is_empty() {
            if let Err(e) = shared.deps.routes.add_routes(&routes, &cfg.node_id).await {
                Metrics::inc(&shared.metrics.heartbeat_failures);
                shared.heartbeat_ok.store(false, Ordering::Release);
                tracing::warn!(error = %e, "re-registering routes failed; retrying next beat");
                return;
            }
            Metrics::inc(&shared.metrics.reregistrations);
            tracing::info!(routes = routes.len(), "re-registered routes");
            // While the routes were gone, dispatch saw these users offline:
            // every connection catches up from the message store.
            shared.hub.resync_all();
        }
    }
    if !shared.heartbeat_ok.swap(true, Ordering::AcqRel) {
        tracing::info!(node = %cfg.node_id, "registered in the node directory");
    }
}
