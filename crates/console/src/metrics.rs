//! Reading the figures the page shows from a node's `/metrics` text.

use serde::Serialize;

/// What the page shows of one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NodeFigures {
    /// `edgepush_connections`: open client connections.
    pub connections: u64,
    /// `edgepush_frames_written_total`: message frames written to sockets
    /// (the page turns it into a rate).
    pub frames_written_total: u64,
    /// `edgepush_deliveries_total`: frames queued to connections by pushes.
    pub deliveries_total: u64,
    /// `edgepush_acks_total`: acks received from clients.
    pub acks_total: u64,
    /// `edgepush_ack_writes_total`: coalesced ack writes to the store.
    pub ack_writes_total: u64,
}

/// The figures in a Prometheus text exposition; missing ones are 0.
pub fn parse(text: &str) -> NodeFigures {
    let mut figures = NodeFigures::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        // Counters and gauges here are whole, non-negative numbers.
        let value = if value.is_finite() && value > 0.0 {
            value as u64
        } else {
            0
        };
        match name {
            "edgepush_connections" => figures.connections = value,
            "edgepush_frames_written_total" => figures.frames_written_total = value,
            "edgepush_deliveries_total" => figures.deliveries_total = value,
            "edgepush_acks_total" => figures.acks_total = value,
            "edgepush_ack_writes_total" => figures.ack_writes_total = value,
            _ => {}
        }
    }
    figures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_node_figures() {
        let text = "# HELP edgepush_connections Open.\n# TYPE edgepush_connections gauge\n\
                    edgepush_connections{node=\"dev-1\"} 3\n\
                    edgepush_connections_total{node=\"dev-1\"} 9\n\
                    edgepush_frames_written_total{node=\"dev-1\"} 120\n\
                    edgepush_deliveries_total{node=\"dev-1\"} 121\n\
                    edgepush_acks_total{node=\"dev-1\"} 7\n\
                    edgepush_ack_writes_total{node=\"dev-1\"} 2\n";
        assert_eq!(
            parse(text),
            NodeFigures {
                connections: 3,
                frames_written_total: 120,
                deliveries_total: 121,
                acks_total: 7,
                ack_writes_total: 2,
            }
        );
    }

    #[test]
    fn odd_lines_count_as_zero() {
        let figures =
            parse("edgepush_connections{node=\"x\"} NaN\ngarbage\nedgepush_acks_total -4\n");
        assert_eq!(figures, NodeFigures::default());
    }
}
