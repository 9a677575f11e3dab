//! Counters of the node, rendered in the Prometheus text format at
//! `GET /metrics` on the push API listener.
//!
//! Plain atomics: the hot path adds with `Relaxed` ordering and never
//! allocates; rendering happens only when scraped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The node's counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open client connections (gauge).
    pub connections: AtomicI64,
    /// Client connections accepted since start.
    pub connections_total: AtomicU64,
    /// Upgrade requests refused because the token was bad.
    pub handshake_unauthorized: AtomicU64,
    /// Upgrade requests refused for any other reason (bad request, draining,
    /// route store down, timeout).
    pub handshake_failed: AtomicU64,
    /// Frames queued to connections by the push API.
    pub deliveries: AtomicU64,
    /// Frames written to sockets (after duplicate suppression).
    pub frames_written: AtomicU64,
    /// Of those, frames the push path wrote itself while the session was
    /// idle (see the `socket` module).
    pub direct_writes: AtomicU64,
    /// Pushes that named a connection not on this node.
    pub push_gone: AtomicU64,
    /// Push API requests refused (signature, size, malformed).
    pub push_refused: AtomicU64,
    /// Connections closed because their queue overflowed (4008).
    pub slow_clients: AtomicU64,
    /// Acks received from clients.
    pub acks: AtomicU64,
    /// Errors: route store and message store calls that failed, protocol
    /// violations by clients, socket errors.
    pub errors: AtomicU64,
    /// Heartbeats that failed to reach the node directory.
    pub heartbeat_failures: AtomicU64,
    /// Times this node found its liveness entry gone and re-registered.
    pub reregistrations: AtomicU64,
    /// Ack writes to the message store (coalesced: at most one per user per
    /// ack interval).
    pub ack_writes: AtomicU64,
    /// Store reads of sessions: stream positions, replay pages, gap fills.
    pub store_reads: AtomicU64,
    /// Upgrades refused by the connection caps (node or user).
    pub connections_refused: AtomicU64,
    /// Routes written again to keep them alive in the route store.
    pub routes_refreshed: AtomicU64,
    /// Topic items received by the push API (one per topic message, or
    /// presence event, and node: never one per subscriber).
    pub topic_items: AtomicU64,
    /// Topic frames queued to local subscribers.
    pub topic_deliveries: AtomicU64,
    /// Topic memberships written to the route store.
    pub topic_registrations: AtomicU64,
    /// Subscriptions started (token, broadcast and client ones).
    pub subscriptions_total: AtomicU64,
    /// Subscriptions and publishes refused with an error frame.
    pub topic_refusals: AtomicU64,
    /// Client publishes stored.
    pub client_publishes: AtomicU64,
    /// Presence writes to the presence store.
    pub presence_writes: AtomicU64,
    /// Presence events sent (one per topic and interval at most).
    pub presence_events: AtomicU64,
}

impl Metrics {
    /// Adds one to `counter`.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric, labelled with `node`.
    pub fn render(&self, node: &str) -> String {
        let mut out = String::with_capacity(2048);
        let gauges: [(&str, &str, i64); 1] = [(
            "edgepush_connections",
            "Open client WebSocket connections.",
            self.connections.load(Ordering::Relaxed),
        )];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            let _ = writeln!(out, "{name}{{node=\"{node}\"}} {value}");
        }
        let counters: [(&str, &str, &AtomicU64); 25] = [
            (
                "edgepush_connections_total",
                "Client connections accepted.",
                &self.connections_total,
            ),
            (
                "edgepush_handshake_unauthorized_total",
                "Upgrades refused for a bad token.",
                &self.handshake_unauthorized,
            ),
            (
                "edgepush_handshake_failed_total",
                "Upgrades refused for other reasons.",
                &self.handshake_failed,
            ),
            (
                "edgepush_deliveries_total",
                "Frames queued to connections by pushes.",
                &self.deliveries,
            ),
            (
                "edgepush_frames_written_total",
                "Message frames written to sockets.",
                &self.frames_written,
            ),
            (
                "edgepush_direct_writes_total",
                "Message frames the push path wrote to idle sessions' sockets itself.",
                &self.direct_writes,
            ),
            (
                "edgepush_push_gone_total",
                "Pushes to connections not on this node.",
                &self.push_gone,
            ),
            (
                "edgepush_push_refused_total",
                "Push API requests refused.",
                &self.push_refused,
            ),
            (
                "edgepush_slow_clients_total",
                "Connections closed as too slow (4008).",
                &self.slow_clients,
            ),
            (
                "edgepush_acks_total",
                "Acks received from clients.",
                &self.acks,
            ),
            (
                "edgepush_errors_total",
                "Store, socket and protocol errors.",
                &self.errors,
            ),
            (
                "edgepush_heartbeat_failures_total",
                "Failed liveness heartbeats.",
                &self.heartbeat_failures,
            ),
            (
                "edgepush_reregistrations_total",
                "Route re-registrations after a liveness loss.",
                &self.reregistrations,
            ),
            (
                "edgepush_ack_writes_total",
                "Coalesced ack writes to the message store.",
                &self.ack_writes,
            ),
            (
                "edgepush_store_reads_total",
                "Store reads of sessions (positions, replay pages, gap fills).",
                &self.store_reads,
            ),
            (
                "edgepush_connections_refused_total",
                "Upgrades refused by the node or per-user connection cap.",
                &self.connections_refused,
            ),
            (
                "edgepush_routes_refreshed_total",
                "Routes of live connections written again before they expire.",
                &self.routes_refreshed,
            ),
            (
                "edgepush_topic_items_total",
                "Topic items received (one per message and node, whatever the subscribers).",
                &self.topic_items,
            ),
            (
                "edgepush_topic_deliveries_total",
                "Topic frames queued to local subscribers.",
                &self.topic_deliveries,
            ),
            (
                "edgepush_topic_registrations_total",
                "Topic memberships written to the route store.",
                &self.topic_registrations,
            ),
            (
                "edgepush_subscriptions_total",
                "Topic subscriptions started.",
                &self.subscriptions_total,
            ),
            (
                "edgepush_topic_refusals_total",
                "Subscriptions and publishes refused with an error frame.",
                &self.topic_refusals,
            ),
            (
                "edgepush_client_publishes_total",
                "Client publishes stored.",
                &self.client_publishes,
            ),
            (
                "edgepush_presence_writes_total",
                "Presence writes (coalesced per interval).",
                &self.presence_writes,
            ),
            (
                "edgepush_presence_events_total",
                "Presence events sent (at most one per topic and interval).",
                &self.presence_events,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(
                out,
                "{name}{{node=\"{node}\"}} {}",
                value.load(Ordering::Relaxed)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.connections.store(3, Ordering::Relaxed);
        Metrics::inc(&m.deliveries);
        let text = m.render("n1");
        assert!(
            text.contains("edgepush_connections{node=\"n1\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("edgepush_deliveries_total{node=\"n1\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE edgepush_errors_total counter"));
    }
}
