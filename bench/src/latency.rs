//! Publish-to-receive latency: a sharded HDR histogram and its summary,
//! and per message the first and the last delivery (where the time of a
//! message sent to many connections goes: see [`MessageSpread`]).

use std::collections::HashMap;
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
    /// Per message (keyed by its send time), its first and last delivery.
    spread: Box<[Mutex<HashMap<u64, FirstLast>>]>,
}

/// The receive times of a message's first and last delivery (Unix ns).
#[derive(Debug, Clone, Copy)]
struct FirstLast {
    first: u64,
    last: u64,
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
            spread: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
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
        drop(h);
        // The send time names the message: every copy of one message
        // carries the same one (two messages sent in the same nanosecond
        // would count as one).
        let mut spread = self.spread[(sent_nanos % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        spread
            .entry(sent_nanos)
            .and_modify(|f| {
                f.first = f.first.min(now_nanos);
                f.last = f.last.max(now_nanos);
            })
            .or_insert(FirstLast {
                first: now_nanos,
                last: now_nanos,
            });
    }

    /// Forgets everything recorded (between the phases of a run).
    pub fn reset(&self) {
        for s in self.shards.iter() {
            s.lock().unwrap_or_else(|e| e.into_inner()).reset();
        }
        for s in self.spread.iter() {
            s.lock().unwrap_or_else(|e| e.into_inner()).clear();
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

    /// Per message, the time from its send to its first and to its last
    /// delivery.
    pub fn spread(&self) -> MessageSpread {
        let (mut first, mut last) = (histogram(), histogram());
        for s in self.spread.iter() {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            for (&sent, f) in s.iter() {
                let us = |at: u64| (at.saturating_sub(sent) / 1_000).clamp(1, MAX_US);
                // In bounds by the clamp.
                let _ = first.record(us(f.first));
                let _ = last.record(us(f.last));
            }
        }
        MessageSpread {
            first: LatencySummary::of(&first),
            last: LatencySummary::of(&last),
        }
    }
}

/// Where the time of messages sent to many connections goes, one sample
/// per message: `first` is the time from its send to the first connection
/// reading it (the server's path to the first socket), `last` to the last
/// one (plus writing every other copy). Publish-to-receive latency mixes
/// both: for a message to N connections it is the spread between them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageSpread {
    /// Send to first delivery, per message.
    pub first: LatencySummary,
    /// Send to last delivery, per message.
    pub last: LatencySummary,
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
    fn each_message_has_its_first_and_last_delivery() {
        let l = Latency::new();
        // Message sent at 1 ms: read after 2, 5 and 9 ms. Message sent at
        // 2 ms: read after 3 ms only.
        for (conn, at) in [(0, 3), (1, 6), (2, 10)] {
            l.record(conn, 1_000_000, at * 1_000_000);
        }
        l.record(3, 2_000_000, 5_000_000);
        let s = l.spread();
        assert_eq!((s.first.count, s.last.count), (2, 2));
        // 3 significant digits: a sample reads back within 0.1 %.
        assert!((2_997..=3_003).contains(&s.first.max_us), "{s:?}");
        assert!((8_991..=9_009).contains(&s.last.max_us), "{s:?}");
        assert!((1_998..=2_002).contains(&s.first.p50_us), "{s:?}");
        assert!((2_997..=3_003).contains(&s.last.p50_us), "{s:?}");
        l.reset();
        assert_eq!(l.spread().first.count, 0);
    }

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
