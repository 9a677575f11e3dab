//! The node's presence in the route store and node directory:
//!
//! - a heartbeat that refreshes its liveness entry and, when the entry was
//!   gone (expiry, Redis flush or restart), re-registers the routes of
//!   every live connection and has them catch up from the message store;
//! - a refresh that keeps the routes of live connections from expiring:
//!   every beat it writes again the routes of the hub shards that are due,
//!   so that each route is written once per third of the route TTL, spread
//!   over time. At a million connections and the default TTL of a day that
//!   is about 35 route writes a second, in pipelines of up to 1,000. The
//!   same rotation writes again the topic memberships (through the
//!   registrar) and the presence entries of the topic index shard with the
//!   same number.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use edgepush_core::ports::Heartbeat;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::state::NodeState;

/// When each hub shard's routes were last written.
struct RouteRefresh {
    /// Per shard: when it is due next.
    due: Vec<Instant>,
    /// How often each shard is written.
    every: Duration,
}

impl RouteRefresh {
    fn new(route_ttl: Duration, heartbeat: Duration) -> Self {
        let every = (route_ttl / 3).max(heartbeat);
        let now = Instant::now();
        // Spread the shards over the period so the writes are even.
        let step = every / Hub::SHARDS as u32;
        let due = (0..Hub::SHARDS)
            .map(|i| now + step * (i as u32 + 1))
            .collect();
        Self { due, every }
    }

    /// Writes the routes of the shards that are due; a failure leaves them
    /// due for the next beat.
    async fn run_due(&mut self, state: &NodeState) {
        let now = Instant::now();
        let mut routes = Vec::new();
        let mut shards = Vec::new();
        for (shard, due) in self.due.iter().enumerate() {
            if *due <= now {
                state.hub.routes_in(shard, &mut routes);
                shards.push(shard);
            }
        }
        if shards.is_empty() {
            return;
        }
        if !routes.is_empty()
            && let Err(e) = state
                .deps
                .routes
                .add_routes(&routes, &state.config.node_id)
                .await
        {
            Metrics::inc(&state.metrics.heartbeat_failures);
            tracing::warn!(error = %e, routes = routes.len(), "refreshing routes failed; retrying next beat");
            return;
        }
        let mut topics = Vec::new();
        for &shard in &shards {
            state.topics.registered_in(shard, &mut topics);
            crate::presence::refresh_shard(&state.presence_parts(), shard).await;
        }
        state.registrar.refresh(topics);
        state
            .metrics
            .routes_refreshed
            .fetch_add(routes.len() as u64, Ordering::Relaxed);
        for shard in shards {
            self.due[shard] = now + self.every;
        }
    }
}

/// Beats every `heartbeat_interval` until `stop` is cancelled, refreshing
/// routes that are due after each beat.
pub(crate) async fn heartbeat_loop(state: Arc<NodeState>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(state.config.heartbeat_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await;
    let mut refresh = RouteRefresh::new(state.config.route_ttl, state.config.heartbeat_interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                beat(&state).await;
                if state.heartbeat_ok.load(Ordering::Acquire) && !state.is_draining() {
                    refresh.run_due(&state).await;
                }
            }
        }
    }
}

/// One heartbeat. Re-registers every route when the entry had to be
/// created again, and keeps trying on later beats until that succeeds.
pub(crate) async fn beat(state: &NodeState) {
    if state.draining.load(Ordering::Acquire) {
        return;
    }
    let cfg = &state.config;
    let result = state
        .deps
        .nodes
        .heartbeat(&cfg.node_id, &state.push_url, cfg.node_ttl)
        .await;
    let reregister = match result {
        Ok(Heartbeat::Refreshed) => !state.heartbeat_ok.load(Ordering::Acquire),
        Ok(Heartbeat::Recreated) => true,
        Err(e) => {
            Metrics::inc(&state.metrics.heartbeat_failures);
            if state.heartbeat_ok.swap(false, Ordering::AcqRel) {
                tracing::warn!(error = %e, "heartbeat failed; node not ready");
            }
            return;
        }
    };
    if reregister {
        let routes = state.hub.routes();
        if !routes.is_empty() {
            if let Err(e) = state.deps.routes.add_routes(&routes, &cfg.node_id).await {
                Metrics::inc(&state.metrics.heartbeat_failures);
                state.heartbeat_ok.store(false, Ordering::Release);
                tracing::warn!(error = %e, "re-registering routes failed; retrying next beat");
                return;
            }
            if let Err(e) = state.registrar.reregister_all().await {
                Metrics::inc(&state.metrics.heartbeat_failures);
                state.heartbeat_ok.store(false, Ordering::Release);
                tracing::warn!(error = %e, "re-registering topic memberships failed; retrying next beat");
                return;
            }
            Metrics::inc(&state.metrics.reregistrations);
            tracing::info!(
                routes = routes.len(),
                "re-registered routes and topic memberships"
            );
            // While the routes were gone, dispatch saw these users offline
            // and these topics without subscribers here: every connection
            // catches up from the stores.
            state.hub.resync_all();
        }
    }
    if !state.heartbeat_ok.swap(true, Ordering::AcqRel) {
        tracing::info!(node = %cfg.node_id, "registered in the node directory");
    }
}
