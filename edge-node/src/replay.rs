//! Catch-ups and gap fills: the store work of a session, one job at a time,
//! each store call bounded in time and by the node's permits.
//!
//! A [`StoreRead`] is a small state machine over one stream of the
//! connection: the user's own messages, or one topic's (broadcast is the
//! topic `$broadcast`). The session polls it in its `select!`
//! ([`StoreRead::next`] is cancel-safe: the store call in flight lives in
//! the `StoreRead`, not in the polled future):
//!
//! 1. *Start*: where the stream starts and how far to replay.
//!    - The user's stream: one read of the user's [`StreamPosition`] (the
//!      `after` the client asked for, clipped to the last stored seq, or
//!      the acked seq; up to the last stored seq).
//!    - A topic: the subscribe token checked (when one came), the
//!      connection joined to the topic index and the node's membership
//!      registered, then the latest seq: the index's `seen` when it has one
//!      (no store read, see [`crate::topics`]), else the store's. Without
//!      `after` the stream starts there; with it, the client's `after`
//!      (clipped) and everything up to there is replayed.
//!    - A resync (after the node re-registered lost routes): the same, from
//!      the last seq written, always reading the store.
//! 2. *Pages*: `read_after` pages of at most [`replay_page`] messages until
//!    the target is reached or a page comes back short (the end of the log).
//!
//! A gap fill is the second step alone, up to the seq before the queued
//! frame that revealed the gap. A client publish is one more kind of job:
//! store the message, fan it out, answer.
//!
//! Every store call waits for one of the node's [`store_reads`] permits and
//! then runs within [`store_timeout`]. Messages stored after the start was
//! read are not missed: the route (or topic membership) was registered
//! before, so dispatch pushes them to the connection's queue.
//!
//! [`StreamPosition`]: edgepush_core::StreamPosition
//! [`replay_page`]: crate::config::NodeConfig::replay_page
//! [`store_reads`]: crate::config::NodeConfig::store_reads
//! [`store_timeout`]: crate::config::NodeConfig::store_timeout

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use edgepush_core::protocol::{self, TopicPushItem};
use edgepush_core::{
    AuthError, ConnId, NewTopicMessage, Seq, StoreError, TopicMessage, TopicName, UserId,
};
use serde_json::value::RawValue;

use crate::hub::Conn;
use crate::state::NodeState;

/// Which stream of the connection a job is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// The user's own messages.
    User,
    /// A topic (broadcast included).
    Topic(TopicName),
}

/// What one step of a [`StoreRead`] came to.
#[derive(Debug)]
pub(crate) enum Read {
    /// The start is known: the stream starts after `start`; the latest seq
    /// when it started is `latest`.
    Started {
        /// The last seq the client is taken to hold.
        start: Seq,
        /// The latest seq stored when the stream started (what `subscribed`
        /// announces).
        latest: Seq,
    },
    /// The next messages, in seq order, serialised: write those after the
    /// last written one, then call [`StoreRead::advance`].
    Page(Vec<(Seq, Bytes)>),
    /// Nothing more to do.
    Done,
    /// The store failed or timed out.
    Failed(StoreError),
    /// A subscription or publish was refused: tell the client, go on.
    Refused {
        /// The error frame's `code`.
        code: &'static str,
        /// Its `message`.
        message: String,
    },
    /// A client's publish is stored (and fanned out).
    Published(TopicMessage),
}

/// How a job starts.
pub(crate) enum Start {
    /// A new stream: read where it starts. For a topic, `after` is the
    /// client's position, `token` a subscribe token to check first, and
    /// `join` whether the connection still has to join the topic (a topic
    /// of the token joined at the admission already).
    New {
        after: Option<Seq>,
        token: Option<String>,
        join: bool,
    },
    /// A catch-up after route loss, from `last`.
    Resume { last: Seq },
    /// A gap fill after `last` up to `upto`.
    Gap { last: Seq, upto: Seq },
    /// A client publish.
    Publish {
        data: Box<RawValue>,
        idempotency_key: Option<String>,
    },
}

/// An answer of the store.
enum Answer {
    Started { start: Seq, latest: Seq },
    Page(Vec<(Seq, Bytes)>),
    Refused(&'static str, String),
    Published(TopicMessage),
}

type StoreCall = Pin<Box<dyn Future<Output = Result<Answer, StoreError>> + Send>>;

/// Which step comes next.
enum Step {
    /// The first step of a job.
    First(Start),
    /// Read pages after `after` up to `upto`.
    Pages,
    /// A short page ended the log, or the job is over.
    End,
}

/// One job of a session; see the module docs.
pub(crate) struct StoreRead {
    state: Arc<NodeState>,
    /// The connection.
    conn_id: ConnId,
    conn: Arc<Conn>,
    /// Which stream.
    pub(crate) target: Target,
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
    /// A job on `target` of the connection, starting as `start` says.
    pub(crate) fn new(
        state: &Arc<NodeState>,
        conn_id: &ConnId,
        conn: &Arc<Conn>,
        target: Target,
        start: Start,
    ) -> Self {
        let (after, upto, step) = match start {
            Start::Gap { last, upto } => (last, upto, Step::Pages),
            Start::Resume { last } => (last, 0, Step::First(Start::Resume { last })),
            other => (0, 0, Step::First(other)),
        };
        Self {
            state: state.clone(),
            conn_id: conn_id.clone(),
            conn: conn.clone(),
            target,
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
            let step = std::mem::replace(&mut self.step, Step::Pages);
            self.call = Some(self.make_call(step));
        }
        let answer = match self.call.as_mut() {
            Some(call) => call.await,
            None => return Read::Done,
        };
        self.call = None;
        match answer {
            Err(e) => {
                self.step = Step::End;
                Read::Failed(e)
            }
            Ok(Answer::Started { start, latest }) => {
                self.after = self.after.max(start);
                self.upto = latest;
                Read::Started { start, latest }
            }
            Ok(Answer::Page(frames)) => {
                // The store's contract: a page shorter than asked is the end
                // of the log (`MessageStore` and `TopicStore`, rule
                // `a_short_page_means_the_end_of_the_log`).
                if frames.len() < self.asked {
                    self.step = Step::End;
                }
                Read::Page(frames)
            }
            Ok(Answer::Refused(code, message)) => {
                self.step = Step::End;
                Read::Refused { code, message }
            }
            Ok(Answer::Published(m)) => {
                self.step = Step::End;
                Read::Published(m)
            }
        }
    }

    fn make_call(&mut self, step: Step) -> StoreCall {
        let state = self.state.clone();
        let permits = state.store_reads.clone();
        let limit = state.config.store_timeout;
        match (step, self.target.clone()) {
            (Step::First(start), target) => {
                self.asked = 0;
                let (conn_id, conn) = (self.conn_id.clone(), self.conn.clone());
                Box::pin(async move {
                    match (start, target) {
                        (Start::New { after, .. }, Target::User) => {
                            let _permit = permits.acquire_owned().await;
                            let p =
                                bounded(limit, state.deps.messages.position(&conn.user_id)).await?;
                            let start = match after {
                                Some(after) => after.min(p.last_seq),
                                None => p.acked_seq,
                            };
                            Ok(Answer::Started {
                                start,
                                latest: p.last_seq,
                            })
                        }
                        (Start::Resume { last }, Target::User) => {
                            let _permit = permits.acquire_owned().await;
                            let p =
                                bounded(limit, state.deps.messages.position(&conn.user_id)).await?;
                            Ok(Answer::Started {
                                start: last.min(p.last_seq),
                                latest: p.last_seq,
                            })
                        }
                        (Start::New { after, token, join }, Target::Topic(topic)) => {
                            start_topic(&state, &conn_id, &conn, &topic, after, token, join).await
                        }
                        (Start::Resume { last }, Target::Topic(topic)) => {
                            let _permit = permits.acquire_owned().await;
                            let latest = bounded(limit, state.deps.topics.last_seq(&topic)).await?;
                            state.topics.raise_seen(&topic, latest);
                            Ok(Answer::Started {
                                start: last.min(latest),
                                latest,
                            })
                        }
                        (
                            Start::Publish {
                                data,
                                idempotency_key,
                            },
                            Target::Topic(topic),
                        ) => publish(&state, &conn.user_id, topic, data, idempotency_key).await,
                        (Start::Gap { .. }, _) | (Start::Publish { .. }, Target::User) => {
                            // Built as `Step::Pages`, never as a first step.
                            Ok(Answer::Page(Vec::new()))
                        }
                    }
                })
            }
            (Step::Pages | Step::End, target) => {
                let want = usize::try_from(self.upto.saturating_sub(self.after))
                    .unwrap_or(usize::MAX)
                    .min(state.config.replay_page);
                self.asked = want;
                let after = self.after;
                let user = self.conn.user_id.clone();
                Box::pin(async move {
                    let _permit = permits.acquire_owned().await;
                    let frames = match target {
                        Target::User => {
                            bounded(limit, state.deps.messages.read_after(&user, after, want))
                                .await?
                                .iter()
                                .map(|m| (m.seq, protocol::encode_msg(m.seq, &m.id, &m.data)))
                                .collect()
                        }
                        Target::Topic(topic) => {
                            bounded(limit, state.deps.topics.read_after(&topic, after, want))
                                .await?
                                .iter()
                                .map(|m| (m.seq, protocol::encode_topic_msg(m)))
                                .collect()
                        }
                    };
                    Ok(Answer::Page(frames))
                })
            }
        }
    }
}

/// The start of a topic subscription; see the module docs.
async fn start_topic(
    state: &NodeState,
    conn_id: &ConnId,
    conn: &Arc<Conn>,
    topic: &TopicName,
    after: Option<Seq>,
    token: Option<String>,
    join: bool,
) -> Result<Answer, StoreError> {
    if let Some(token) = token {
        match state.deps.verifier.verify(&token).await {
            Ok(grant) if grant.user_id != conn.user_id => {
                return Ok(Answer::Refused(
                    "bad_token",
                    "the subscribe token is for another user".into(),
                ));
            }
            Ok(grant) if grant.topic.as_deref() != Some(topic.as_str()) => {
                return Ok(Answer::Refused(
                    "bad_token",
                    "the subscribe token is not for this topic".into(),
                ));
            }
            Ok(_) => {}
            Err(AuthError::Unavailable(_)) => {
                return Ok(Answer::Refused(
                    "unavailable",
                    "token verification is unavailable; subscribe again later".into(),
                ));
            }
            Err(e) => {
                return Ok(Answer::Refused(
                    "bad_token",
                    format!("the subscribe token: {e}"),
                ));
            }
        }
    }
    if join {
        state.join_topic(topic, conn_id, conn);
    }
    if let Err(e) = state
        .registrar
        .ensure(&state.topics, vec![topic.clone()])
        .await
    {
        tracing::warn!(topic = %topic, error = %e, "could not register a topic membership");
        return Ok(Answer::Refused(
            "unavailable",
            "the route store is unavailable; subscribe again later".into(),
        ));
    }
    let cached = state.topics.seen(topic);
    let latest = match (cached, after) {
        // Without `after`, or within what the node has seen: no store read.
        (Some(seen), None) => seen,
        (Some(seen), Some(a)) if a <= seen => seen,
        _ => {
            let _permit = state.store_reads.clone().acquire_owned().await;
            let stored = bounded(
                state.config.store_timeout,
                state.deps.topics.last_seq(topic),
            )
            .await?;
            state.topics.raise_seen(topic, stored);
            stored
        }
    };
    let start = after.map_or(latest, |a| a.min(latest));
    Ok(Answer::Started { start, latest })
}

/// A client publish: stored under `client:<user>`, then fanned out.
async fn publish(
    state: &NodeState,
    user: &UserId,
    topic: TopicName,
    data: Box<RawValue>,
    idempotency_key: Option<String>,
) -> Result<Answer, StoreError> {
    let retention = state.config.namespaces.retention(&topic);
    let message = NewTopicMessage {
        topics: vec![(topic, retention)],
        data: Arc::from(data),
        source: format!("client:{user}"),
        idempotency_key,
    };
    let stored = {
        let _permit = state.store_reads.clone().acquire_owned().await;
        match bounded(
            state.config.store_timeout,
            state.deps.topics.publish(&message),
        )
        .await
        {
            Ok(mut stored) if stored.len() == 1 => stored.remove(0),
            Ok(_) => {
                return Err(StoreError::Backend(
                    "the topic store answered a publish with no copy".into(),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "a client publish was not stored");
                return Ok(Answer::Refused(
                    "unavailable",
                    "the message store is unavailable; publish again later (with the same idempotency_key)".into(),
                ));
            }
        }
    };
    let item = TopicPushItem::message(&stored);
    match state.fanout.dispatch(std::slice::from_ref(&item)).await {
        Ok(report) if report.undelivered.is_empty() => Ok(Answer::Published(stored)),
        Ok(_) | Err(_) => Ok(Answer::Refused(
            "unavailable",
            "the message is stored but could not reach every node; publish again with the same idempotency_key".into(),
        )),
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
