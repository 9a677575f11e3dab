//! Waits that follow progress. Tests never assert how long something takes,
//! and a wait never has a budget a slower machine could miss: it polls a
//! condition and gives up only when its measure of progress has not moved
//! for a long while ([`stall`]), however long the whole wait takes.
//!
//! [`until`] polls an async check; [`Progress`] is the same rule for a loop
//! of its own (one that must also restart a process, say).

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often [`until`] polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long a wait may see nothing move before it gives up:
/// `EDGEPUSH_TEST_STALL_SECS`, 120 by default.
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
    /// routes back, the size of a server's log, ...).
    Waiting(P),
}

/// A measure of progress, followed: [`observe`](Self::observe) fails once
/// it has not changed for the stall period.
#[derive(Debug)]
pub struct Progress<P> {
    stall: Duration,
    started: Instant,
    last_move: Instant,
    seen: Option<P>,
}

impl<P: PartialEq + Debug> Progress<P> {
    /// Starts following, with `stall` as the period without a move after
    /// which the wait gives up.
    pub fn new(stall: Duration) -> Self {
        let now = Instant::now();
        Self {
            stall,
            started: now,
            last_move: now,
            seen: None,
        }
    }

    /// Records the measure `now`; an error saying what was awaited and where
    /// it stuck once the measure has not changed for the stall period.
    pub fn observe(&mut self, what: &str, now: P) -> anyhow::Result<()> {
        if self.seen.as_ref() != Some(&now) {
            self.seen = Some(now);
            self.last_move = Instant::now();
        }
        self.check(what)
    }

    /// An error once nothing has moved for the stall period (without a new
    /// measure: for a check that failed).
    pub fn check(&self, what: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.last_move.elapsed() < self.stall,
            "gave up waiting for: {what}: nothing moved for {:?} (at {:?}, after {:?} in all)",
            self.stall,
            self.seen,
            self.started.elapsed()
        );
        Ok(())
    }
}

/// Calls `check` until it answers [`Check::Done`], and follows progress:
/// it gives up only when the measure in [`Check::Waiting`] has not changed
/// for `stall` (see [`stall()`]), however long the whole wait takes, so a
/// slow machine that keeps making progress is never cut off. Errors from
/// `check` count as "not yet, no progress"; the last one is reported.
pub async fn until<T, P, F, Fut>(what: &str, stall: Duration, mut check: F) -> anyhow::Result<T>
where
    P: PartialEq + Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Check<T, P>>>,
{
    let mut progress = Progress::new(stall);
    let mut last_error: Option<anyhow::Error> = None;
    loop {
        let stuck = match check().await {
            Ok(Check::Done(value)) => return Ok(value),
            Ok(Check::Waiting(now)) => progress.observe(what, now),
            Err(e) => {
                last_error = Some(e);
                progress.check(what)
            }
        };
        if let Err(stuck) = stuck {
            return Err(match last_error {
                Some(e) => e.context(format!("{stuck:#}")),
                None => stuck,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Some polls apart, and so at least a second in all, far past the
    /// stall period: each poll moves, so the wait goes on to the end.
    #[tokio::test]
    async fn a_wait_that_keeps_moving_is_never_cut_off() -> anyhow::Result<()> {
        let steps = AtomicU32::new(0);
        let done = until("20 steps", Duration::from_millis(200), || async {
            let n = steps.fetch_add(1, Ordering::Relaxed);
            Ok(if n == 20 {
                Check::Done(n)
            } else {
                Check::Waiting(n)
            })
        })
        .await?;
        assert_eq!(done, 20);
        Ok(())
    }

    #[tokio::test]
    async fn a_wait_that_stops_moving_gives_up_saying_where() {
        let err = until("nothing", Duration::from_millis(200), || async {
            Ok::<_, anyhow::Error>(Check::<(), _>::Waiting(7))
        })
        .await
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("gave up waiting for: nothing: nothing moved for 200ms (at Some(7)"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_last_error_is_reported() {
        let err = until("a server", Duration::from_millis(200), || async {
            Err::<Check<(), ()>, _>(anyhow::anyhow!("connection refused"))
        })
        .await
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("gave up waiting for: a server") && text.contains("connection refused"),
            "{text}"
        );
    }
}
