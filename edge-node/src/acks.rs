//! Client acks, coalesced: at most one store write per user per interval.
//!
//! A session records each ack ([`AckWriter::record`]) into one map of
//! `user -> highest acked seq`, with no task and no store call per ack; the
//! writer task ([`run`]) takes the map every [`ack_interval`] and writes one
//! ack per user, a bounded number at a time. A flood of ack frames therefore
//! costs one map entry and one write per interval, and the map holds at most
//! one entry per user with a connection on this node.
//!
//! Acks are advisory: they move where a connection without `after` starts.
//! A failed write is kept for the next interval; a crash loses at most one
//! interval of acks, and the clients get those messages again (and drop
//! them by seq).
//!
//! [`ack_interval`]: crate::config::NodeConfig::ack_interval

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use edgepush_core::{MessageStore, Seq, UserId};
use futures_util::StreamExt as _;
use futures_util::stream;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Ack writes in flight at once.
const WRITE_CONCURRENCY: usize = 16;

/// The acks received and not yet written.
#[derive(Debug, Default)]
pub(crate) struct AckWriter {
    pending: Mutex<HashMap<UserId, Seq>>,
}

impl AckWriter {
    fn pending(&self) -> MutexGuard<'_, HashMap<UserId, Seq>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes that `user` holds everything up to `seq`, a seq this node sent
    /// to one of the user's connections (so stored): the flush records it
    /// with [`MessageStore::ack_delivered`].
    pub(crate) fn record(&self, user: &UserId, seq: Seq) {
        if seq == 0 {
            return;
        }
        let mut pending = self.pending();
        match pending.get_mut(user) {
            Some(known) => *known = (*known).max(seq),
            None => {
                pending.insert(user.clone(), seq);
            }
        }
    }

    /// How many users have an ack waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pending().len()
    }

    /// Writes every waiting ack to `store`; returns how many writes
    /// succeeded. Failed ones wait for the next flush.
    pub(crate) async fn flush(&self, store: &dyn MessageStore, metrics: &Metrics) -> u64 {
        let batch = std::mem::take(&mut *self.pending());
        if batch.is_empty() {
            return 0;
        }
        let results: Vec<_> = stream::iter(batch)
            .map(|(user, seq)| async move {
                // Sessions record only seqs they sent (see `record`).
                let result = store.ack_delivered(&user, seq).await;
                (user, seq, result)
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        let mut written = 0;
        for (user, seq, result) in results {
            match result {
                Ok(_) => written += 1,
                Err(e) => {
                    Metrics::inc(&metrics.errors);
                    tracing::warn!(%user, seq, error = %e, "could not record an ack; retrying next interval");
                    self.record(&user, seq);
                }
            }
        }
        metrics
            .ack_writes
            .fetch_add(written, std::sync::atomic::Ordering::Relaxed);
        written
    }
}

/// Flushes `writer` to `store` every `interval` until `stop`, then once
/// more.
pub(crate) async fn run(
    writer: &AckWriter,
    store: &dyn MessageStore,
    metrics: &Metrics,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                writer.flush(store, metrics).await;
            }
        }
    }
    writer.flush(store, metrics).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_coalesce_per_user() {
        let writer = AckWriter::default();
        let alice = UserId::new("alice").unwrap();
        for seq in (1..=10_000).rev() {
            writer.record(&alice, seq);
        }
        writer.record(&UserId::new("bob").unwrap(), 3);
        writer.record(&UserId::new("carol").unwrap(), 0);
        assert_eq!(writer.len(), 2);
        assert_eq!(writer.pending().get(&alice), Some(&10_000));
    }
}
