//! Publish-to-receive latency: a sharded HDR histogram and its summary.

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Shards, so connection tasks on different threads rarely meet on a lock.
const SHARDS: usize = 16;
/// The longest latency recorded, in microseconds (100 s); longer ones are
/// clamped to it.
const MAX_US: u64 = 100_000_000;

/// Latencies in microseconds, from 1 µs to 100 s at 3 significant digits.
pub struct Latency {
    shards: Box<[Mutex<Histogram<u64>>]>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

fn histogram() -> Histogram<u64> {
    // Constant, valid bounds: `new_with_bounds` only fails on bad bounds.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
        }
    }

    /// Records the time from `sent_nanos` (Unix nanoseconds) to `now_nanos`;
    /// `key` picks the shard (a connection index).
    pub fn record(&self, key: usize, sent_nanos: u64, now_nanos: u64) {
        let us = (now_nanos.saturating_sub(sent_nanos) / 1_000).clamp(1, MAX_US);
        let mut h = self.shards[key % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // In bounds by the clamp above.
        let _ = h.record(us);
    }

    /// Forgets everything recorded (between the phases of a run).
    pub fn reset(&self) {
        for s in self.shards.iter() {
            s.lock().unwrap_or_else(|e| e.into_inner()).reset();
        }
    }

    /// All shards merged into one histogram.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = histogram();
        for s in self.shards.iter() {
            let h = s.lock().unwrap_or_else(|e| e.into_inner());
            // Same bounds everywhere: adding cannot fail.
            let _ = all.add(&*h);
        }
        all
    }

    /// Percentiles of what was recorded.
    pub fn summary(&self) -> LatencySummary {
        LatencySummary::of(&self.merged())
    }
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest sample.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

impl LatencySummary {
    /// The summary of `h`.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_every_shard() {
        let l = Latency::new();
        for i in 0..1000u64 {
            // 1..=1000 ms, spread over the shards.
            l.record(i as usize, 0, (i + 1) * 1_000_000);
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert!((499_000..=501_000).contains(&s.p50_us), "{s:?}");
        assert!((989_000..=991_000).contains(&s.p99_us), "{s:?}");
        l.reset();
        assert_eq!(l.summary().count, 0);
    }

    #[test]
    fn clock_skew_never_goes_negative() {
        let l = Latency::new();
        l.record(0, 10, 5);
        assert_eq!(l.summary().count, 1);
        assert_eq!(l.summary().max_us, 1);
    }
}
