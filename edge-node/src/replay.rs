//! Replay and gap fill: the store reads of a session, one at a time, each
//! bounded in time and by the node's permits.
//!
//! A [`StoreRead`] is a small state machine that the session polls in its
//! `select!` ([`StoreRead::next`] is cancel-safe: the store call in flight
//! lives in the `StoreRead`, not in the polled future):
//!
//! 1. *Position* (at the start, and after a resync): one read of the user's
//!    [`StreamPosition`]. It says where the stream starts (the `after` the
//!    client asked for, clipped to the last stored seq, or the acked seq)
//!    and how far to replay (the last stored seq). A client that missed
//!    nothing costs this one cheap read and no replay read.
//! 2. *Pages*: `read_after` pages of at most [`replay_page`] messages until
//!    the target is reached or a page comes back short (the end of the log).
//!
//! A gap fill is the second step alone, up to the seq before the queued
//! frame that revealed the gap.
//!
//! Every store call waits for one of the node's [`store_reads`] permits and
//! then runs within [`store_timeout`]. Messages stored after the position
//! was read are not missed: the route was registered before, so dispatch
//! pushes them to the connection's queue.
//!
//! [`StreamPosition`]: edgepush_core::StreamPosition
//! [`replay_page`]: crate::config::NodeConfig::replay_page
//! [`store_reads`]: crate::config::NodeConfig::store_reads
//! [`store_timeout`]: crate::config::NodeConfig::store_timeout

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use edgepush_core::{Seq, StoreError, StoredMessage, StreamPosition, UserId};

use crate::state::NodeState;

/// What one step of a [`StoreRead`] came to.
#[derive(Debug)]
pub(crate) enum Read {
    /// The position is known: the stream starts after `start`.
    Started {
        /// The last seq the client is taken to hold.
        start: Seq,
    },
    /// The next messages, in seq order; write those after the last written
    /// one, then call [`StoreRead::advance`].
    Page(Vec<StoredMessage>),
    /// Nothing more to read.
    Done,
    /// The store failed or timed out.
    Failed(StoreError),
}

/// An answer of the store.
enum Answer {
    Position(StreamPosition),
    Page(Vec<StoredMessage>),
}

type StoreCall = Pin<Box<dyn Future<Output = Result<Answer, StoreError>> + Send>>;

/// Which step comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Read the position; `Some(after)` is where the client says it is.
    Position { after: Option<Seq> },
    /// Read pages after `after` up to `upto`.
    Pages,
    /// A short page ended the log.
    End,
}

/// The store reads of one catch-up; see the module docs.
pub(crate) struct StoreRead {
    state: Arc<NodeState>,
    user: UserId,
    step: Step,
    /// The last seq written to the client.
    after: Seq,
    /// Read up to this seq (inclusive).
    upto: Seq,
    /// The call in flight, kept across cancelled polls.
    call: Option<StoreCall>,
    /// How many messages the page in flight asked for.
    asked: usize,
}

impl StoreRead {
    /// The catch-up of a new session: position, then replay.
    pub(crate) fn start(state: &Arc<NodeState>, user: &UserId, after: Option<Seq>) -> Self {
        Self::new(state, user, Step::Position { after }, 0, 0)
    }

    /// A catch-up after a resync: position (for the target), then replay
    /// after `last`, the last seq written.
    pub(crate) fn resume(state: &Arc<NodeState>, user: &UserId, last: Seq) -> Self {
        Self::new(state, user, Step::Position { after: Some(last) }, last, 0)
    }

    /// A gap fill: the messages after `last` up to `upto`.
    pub(crate) fn gap(state: &Arc<NodeState>, user: &UserId, last: Seq, upto: Seq) -> Self {
        Self::new(state, user, Step::Pages, last, upto)
    }

    fn new(state: &Arc<NodeState>, user: &UserId, step: Step, after: Seq, upto: Seq) -> Self {
        Self {
            state: state.clone(),
            user: user.clone(),
            step,
            after,
            upto,
            call: None,
            asked: 0,
        }
    }

    /// The session wrote everything up to `last`.
    pub(crate) fn advance(&mut self, last: Seq) {
        self.after = self.after.max(last);
    }

    /// The next step. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Read {
        if self.call.is_none() {
            match self.step {
                Step::End => return Read::Done,
                Step::Pages if self.after >= self.upto => return Read::Done,
                _ => {}
            }
            self.call = Some(self.make_call());
        }
        let answer = match self.call.as_mut() {
            Some(call) => call.await,
            None => return Read::Done,
        };
        self.call = None;
        match answer {
            Err(e) => Read::Failed(e),
            Ok(Answer::Position(position)) => {
                let requested = match self.step {
                    Step::Position { after } => after,
                    _ => None,
                };
                let start = match requested {
                    Some(after) => after.min(position.last_seq),
                    None => position.acked_seq,
                };
                self.after = self.after.max(start);
                self.upto = position.last_seq;
                self.step = Step::Pages;
                Read::Started { start }
            }
            Ok(Answer::Page(messages)) => {
                // The store's contract: a page shorter than asked is the end
                // of the log (`MessageStore`, rule
                // `a_short_page_means_the_end_of_the_log`).
                if messages.len() < self.asked {
                    self.step = Step::End;
                }
                Read::Page(messages)
            }
        }
    }

    fn make_call(&mut self) -> StoreCall {
        let permits = self.state.store_reads.clone();
        let limit = self.state.config.store_timeout;
        let store = self.state.deps.messages.clone();
        let user = self.user.clone();
        match self.step {
            Step::Position { .. } => {
                self.asked = 0;
                Box::pin(async move {
                    let _permit = permits.acquire_owned().await;
                    bounded(limit, store.position(&user))
                        .await
                        .map(Answer::Position)
                })
            }
            Step::Pages | Step::End => {
                let want = usize::try_from(self.upto.saturating_sub(self.after))
                    .unwrap_or(usize::MAX)
                    .min(self.state.config.replay_page);
                self.asked = want;
                let after = self.after;
                Box::pin(async move {
                    let _permit = permits.acquire_owned().await;
                    bounded(limit, store.read_after(&user, after, want))
                        .await
                        .map(Answer::Page)
                })
            }
        }
    }
}

/// `fut` within `limit`, a timeout being an unavailable store.
async fn bounded<T>(
    limit: std::time::Duration,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unavailable(format!(
            "no answer within {limit:?}"
        ))),
    }
}
