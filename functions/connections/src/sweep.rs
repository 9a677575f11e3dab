//! The sweep: closes connections whose token expired while they were
//! quiet, and forgets connections whose `$disconnect` never came.
//!
//! A token that expires while connected ends the connection (close code
//! 4001 on edge nodes). On the managed edge nothing runs between a
//! connection's events, so `$default` checks the expiry on every client
//! frame, and this sweep, run on a schedule (an EventBridge rule every
//! minute, `infra/`), finds the rest: every connection is indexed by the
//! time it is due ([`crate::records::ConnectionRecord::due_ms`]): its token's `exp`, or the
//! end of API Gateway's 2-hour lifetime. For each due connection:
//!
//! - token expired: post `{"type":"close","code":4001,...}`, close it
//!   through the management API (`DELETE @connections/{id}`), forget it;
//! - lifetime over: API Gateway has closed it; close it anyway (a 410 is
//!   expected) and forget it, route and all;
//! - no record: take it out of the index.

use std::time::Duration;

use edgepush_core::protocol::CLOSE_BAD_TOKEN;
use edgepush_core::{ConnId, NodeId, RouteError};
use edgepush_dispatch::PostToConnectionError;
use serde::Serialize;

use crate::handler::Connections;

/// Connections looked at per virtual node and round.
pub const SWEEP_BATCH: usize = 500;

/// A sweep stops this long before the invocation's deadline; the next one
/// goes on where it stopped.
const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Connections closed because their token expired.
    pub expired_closed: u64,
    /// Connections forgotten after API Gateway's lifetime limit (their
    /// `$disconnect` never came).
    pub stale_forgotten: u64,
    /// Index entries without a record, dropped.
    pub unindexed: u64,
    /// Connections that could not be handled (tried again next time).
    pub failed: u64,
    /// The sweep stopped at the deadline; the next one continues.
    pub incomplete: bool,
}

/// Why a sweep could not run.
#[derive(Debug, thiserror::Error)]
#[error("sweep: {0}")]
pub struct SweepError(#[from] RouteError);

impl Connections {
    /// Sweeps every virtual node once, up to `deadline_ms` (milliseconds
    /// since the Unix epoch), at time `now_ms`.
    pub async fn sweep(
        &self,
        now_ms: i64,
        deadline_ms: Option<i64>,
    ) -> Result<SweepReport, SweepError> {
        let mut report = SweepReport::default();
        let margin = i64::try_from(DEADLINE_MARGIN.as_millis()).unwrap_or(0);
        let past_deadline =
            || deadline_ms.is_some_and(|d| edgepush_core::message::now_ms() + margin >= d);
        for node in self.records.swept_nodes().await? {
            let endpoint = self
                .nodes
                .live_nodes(std::slice::from_ref(&node))
                .await?
                .remove(&node);
            loop {
                if past_deadline() {
                    report.incomplete = true;
                    return Ok(report);
                }
                let due = self.records.due(&node, now_ms, SWEEP_BATCH).await?;
                let mut progressed = false;
                for conn in &due {
                    match self
                        .sweep_one(&node, endpoint.as_deref(), conn, now_ms, &mut report)
                        .await
                    {
                        Ok(()) => progressed = true,
                        Err(e) => {
                            report.failed += 1;
                            tracing::warn!(node = %node, conn = %conn, error = %e, "sweep failed for a connection");
                        }
                    }
                }
                if due.len() < SWEEP_BATCH || !progressed {
                    break;
                }
            }
        }
        if report != SweepReport::default() {
            tracing::info!(?report, "sweep done");
        }
        Ok(report)
    }

    /// One due connection of `node`.
    async fn sweep_one(
        &self,
        node: &NodeId,
        endpoint: Option<&str>,
        conn: &ConnId,
        now_ms: i64,
        report: &mut SweepReport,
    ) -> Result<(), String> {
        let Some(record) = self.records.record(conn).await.map_err(|e| e.to_string())? else {
            self.records
                .unindex(node, conn)
                .await
                .map_err(|e| e.to_string())?;
            report.unindexed += 1;
            return Ok(());
        };
        if record.expired(now_ms) {
            match endpoint {
                Some(endpoint) => {
                    self.close(endpoint, conn, CLOSE_BAD_TOKEN, "token expired")
                        .await
                }
                // The virtual node's entry outlives every connection: no
                // entry, no live connection.
                None => tracing::info!(conn = %conn, "no endpoint for an expired connection"),
            }
            report.expired_closed += 1;
        } else {
            if let Some(endpoint) = endpoint {
                match self.poster.delete_connection(endpoint, conn).await {
                    Ok(()) | Err(PostToConnectionError::Gone) => {}
                    Err(e) => return Err(format!("closing a connection past its lifetime: {e}")),
                }
            }
            report.stale_forgotten += 1;
        }
        self.forget(&record.user, conn, Some(&record))
            .await
            .map_err(|e| e.to_string())
    }
}
