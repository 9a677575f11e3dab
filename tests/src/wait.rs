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

/// How long a progress-following wait ([`until`]) may see nothing move
/// before it gives up: `EDGEPUSH_TEST_STALL_SECS`, 120 by default.
pub fn stall() -> Duration {
    std::env::var("EDGEPUSH_TEST_STALL_SECS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(120))
}

/// What one check of [`until`] found.
#[derive(Debug)]
pub enum Check<T, P> {
    /// The condition holds.
    Done(T),
    /// Not yet; `P` measures how far things got (a count of messages, of
    /// routes back, ...).
    Waiting(P),
}

/// Calls `check` until it answers [`Check::Done`], and follows progress:
/// it gives up only when the measure in [`Check::Waiting`] has not changed
/// for `stall` (see [`stall()`]), however long the whole wait takes, so a
/// slow machine that keeps making progress is never cut off. Errors from
/// `check` count as "not yet, no progress"; the last one is reported.
pub async fn until<T, P, F, Fut>(what: &str, stall: Duration, mut check: F) -> anyhow::Result<T>
where
    P: PartialEq + std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Check<T, P>>>,
{
    let started = Instant::now();
    let mut last_move = Instant::now();
    let mut seen: Option<P> = None;
    let mut last_error: Option<anyhow::Error> = None;
    loop {
        match check().await {
            Ok(Check::Done(value)) => return Ok(value),
            Ok(Check::Waiting(progress)) => {
                if seen.as_ref() != Some(&progress) {
                    seen = Some(progress);
                    last_move = Instant::now();
                }
            }
            Err(e) => last_error = Some(e),
        }
        if last_move.elapsed() >= stall {
            let text = format!(
                "gave up waiting for: {what}: nothing moved for {stall:?} (at {seen:?}, after \
                 {:?} in all)",
                started.elapsed()
            );
            return Err(match last_error {
                Some(e) => e.context(text),
                None => anyhow::anyhow!(text),
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
