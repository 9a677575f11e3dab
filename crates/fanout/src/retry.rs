//! How a failed push to a live node is retried: with backoff (full jitter)
//! while the push fails for a reason that may pass (the node cannot be
//! reached, times out, answers 5xx, 408 or 429) and the node is still live,
//! for at most [`RetryPolicy::give_up_after`].

use std::future::Future;
use std::time::Duration;

use edgepush_core::{NodeDirectory, NodeId, PushError};
use tokio::time::Instant;

/// How a failed push to a live node is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The pause before the first retry; it doubles each time (with full
    /// jitter) up to [`max_delay`](Self::max_delay).
    pub first_delay: Duration,
    /// The longest pause between two attempts.
    pub max_delay: Duration,
    /// No attempt starts this long after the first one did.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            give_up_after: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn never() -> Self {
        Self {
            give_up_after: Duration::ZERO,
            ..Self::default()
        }
    }

    /// The pause after `attempt` failed attempts (1 = the first failed).
    pub fn delay(&self, attempt: u32) -> Duration {
        let cap = self
            .first_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        // Full jitter: anywhere from nothing to the cap.
        cap.mul_f64(rand::random::<f64>())
    }
}

/// Whether a push that failed this way may succeed if tried again. A 501
/// (the pusher cannot deliver this kind of item at all) never will.
pub fn is_retryable(error: &PushError) -> bool {
    match error {
        PushError::Unreachable { .. } => true,
        PushError::Refused { status, .. } => {
            (*status >= 500 && *status != 501) || *status == 429 || *status == 408
        }
    }
}

/// How one node's push ended.
#[derive(Debug)]
pub struct Pushed<T> {
    /// The node's answer, or the last error.
    pub result: Result<T, PushError>,
    /// Attempts after the first.
    pub retries: usize,
    /// Whether the node was still live when the pushes stopped.
    pub live: bool,
}

/// Calls `attempt` (one push to `node`) until it succeeds, fails for a
/// reason a retry cannot fix, `retry` gives up, or `nodes` no longer lists
/// the node as live (its clients reconnect elsewhere and catch up from the
/// store, so a dead node gets no more tries).
pub async fn push_with_retries<T, F, Fut>(
    nodes: &dyn NodeDirectory,
    retry: &RetryPolicy,
    node: &NodeId,
    mut attempt: F,
) -> Pushed<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PushError>>,
{
    let started = Instant::now();
    let mut retries = 0usize;
    loop {
        let error = match attempt().await {
            Ok(answer) => {
                return Pushed {
                    result: Ok(answer),
                    retries,
                    live: true,
                };
            }
            Err(error) => error,
        };
        if !is_retryable(&error) || started.elapsed() >= retry.give_up_after {
            return Pushed {
                result: Err(error),
                retries,
                live: true,
            };
        }
        tokio::time::sleep(retry.delay(retries as u32 + 1)).await;
        match nodes.live_nodes(std::slice::from_ref(node)).await {
            Ok(live) if !live.contains_key(node) => {
                return Pushed {
                    result: Err(error),
                    retries,
                    live: false,
                };
            }
            // Unknown (the directory is down): keep trying, bounded.
            _ => {}
        }
        retries += 1;
        tracing::debug!(node = %node, retries, error = %error, "retrying a failed push");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_failures_are_retried() {
        let refused = |status| PushError::Refused {
            url: "u".into(),
            status,
            body: String::new(),
        };
        for status in [500, 502, 503, 429, 408] {
            assert!(is_retryable(&refused(status)), "{status}");
        }
        for status in [400, 403, 404, 413, 501] {
            assert!(!is_retryable(&refused(status)), "{status}");
        }
        assert!(is_retryable(&PushError::Unreachable {
            url: "u".into(),
            reason: "x".into()
        }));
    }

    #[test]
    fn delays_grow_to_the_cap_with_jitter() {
        let policy = RetryPolicy::default();
        for attempt in 1..20 {
            assert!(policy.delay(attempt) <= policy.max_delay);
        }
        assert!(policy.delay(1) <= policy.first_delay);
    }
}
