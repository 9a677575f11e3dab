//! Waiting for conditions. Tests never assert how long something takes:
//! they poll a condition until it holds and then fail, if it never does,
//! with a message saying what did not happen. [`until`] follows progress
//! (it gives up only when nothing has moved for a long while), for waits
//! whose length depends on the machine's speed; [`eventually`] has a fixed
//! deadline, for the few conditions that either hold quickly or never.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often [`eventually`] checks.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Calls `check` until it returns `Ok(Some(value))`, then returns `value`.
/// `Ok(None)` and errors mean "not yet"; after `timeout` the result is an
/// error naming `what` and the last error seen.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error: Option<anyhow::Error> = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            return Err(match last_error {
                Some(e) => e.context(format!("gave up after {timeout:?} waiting for: {what}")),
                None => anyhow::anyhow!("gave up after {timeout:?} waiting for: {what}"),
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

// The progress-following wait is shared with every crate's tests.
pub use edgepush_testkit::wait::{Check, stall, until};
