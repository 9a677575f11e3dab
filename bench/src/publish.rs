//! The publisher: messages with an embedded send time, at a paced rate, to
//! edgepush or Centrifugo.
//!
//! Targets:
//! - [`Target::Collect`]: edgepush's collect API (`POST /v1/messages`), the
//!   whole path: MongoDB, dispatch, Redis, edge node; each message to all
//!   of `to`, or to the next `per_message` of them in rotation.
//! - [`Target::Batch`]: an edge node's batch push API (`POST /@batch`,
//!   SigV4-signed by [`HttpPusher`]): one message to many connections of
//!   one user, the node's fan-out path alone. Seqs increase by one per
//!   message, so requests go one at a time (a reordering would look like a
//!   gap to the node).
//! - [`Target::BatchUnicast`]: the batch push API with one item per
//!   (user, connection): what dispatch sends when many users get a message.
//! - [`Target::Topic`]: an edge node's topic push API (`POST /@topics`):
//!   one item per message, fanned out by the node to every local
//!   subscriber of the topic (what dispatch sends for a topic publish).
//!   Seqs increase by one per message, so requests go one at a time.
//! - [`Target::Centrifugo`]: Centrifugo's `/api/publish` to one channel.
//! - [`Target::CentrifugoBroadcast`]: Centrifugo's `/api/broadcast`, one
//!   publication into each of many channels (its unicast to many users).
//! - [`Target::CentrifugoSpread`]: each message to the next `per_message`
//!   of many channels in rotation (`/api/publish` for one, `/api/broadcast`
//!   for more): the peer of collect's rotation.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use edgepush_core::protocol::{PushItem, TopicPushItem};
use edgepush_core::{ConnId, MessageId, Pusher, StoredMessage, TopicMessage, TopicName, UserId};
use edgepush_delivery::sigv4::PushCredential;
use edgepush_delivery::{HttpPusher, PushClientConfig};
use futures_util::StreamExt;
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::latency::{Latency, LatencySummary};

/// Where messages go.
#[derive(Debug, Clone)]
pub enum Target {
    /// edgepush collect at `base` (`http://127.0.0.1:8080`).
    Collect {
        /// Base URL.
        base: String,
        /// The API key (`Authorization: Bearer`).
        api_key: String,
        /// The recipients.
        to: Vec<String>,
        /// Recipients per message: 0 sends every message to all of `to`;
        /// `n` sends message `k` to the `n` names from `to[k * n % len]`
        /// on (wrapping), so consecutive messages go to other users.
        per_message: usize,
    },
    /// An edge node's batch push API: each message to `conn_ids`, all of `user`.
    Batch {
        /// The node's push URL (`http://127.0.0.1:9101`).
        push_url: String,
        /// The user every connection belongs to.
        user: String,
        /// The connections.
        conn_ids: Vec<String>,
        /// The seq of the first message (the user's next seq).
        first_seq: u64,
    },
    /// An edge node's batch push API, one item per (user, connection).
    BatchUnicast {
        /// The node's push URL.
        push_url: String,
        /// (user, connection id, the user's next seq) triples.
        pairs: Vec<(String, String, u64)>,
        /// Items per request.
        chunk: usize,
    },
    /// An edge node's topic push API: each message to every subscriber of
    /// `topic` on the node.
    Topic {
        /// The node's push URL.
        push_url: String,
        /// The topic.
        topic: String,
        /// The seq of the first message (the topic's next seq).
        first_seq: u64,
    },
    /// Centrifugo's HTTP API at `base` (`http://127.0.0.1:8000`), one channel.
    Centrifugo {
        /// Base URL.
        base: String,
        /// `X-API-Key`.
        api_key: String,
        /// The channel.
        channel: String,
    },
    /// Centrifugo, each message into the next `per_message` channels.
    CentrifugoSpread {
        /// Base URL.
        base: String,
        /// `X-API-Key`.
        api_key: String,
        /// The channels.
        channels: Vec<String>,
        /// Channels per message (at least 1).
        per_message: usize,
    },
    /// Centrifugo's broadcast: each message into every channel.
    CentrifugoBroadcast {
        /// Base URL.
        base: String,
        /// `X-API-Key`.
        api_key: String,
        /// The channels.
        channels: Vec<String>,
        /// Channels per request.
        chunk: usize,
    },
}

/// How much and how fast.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PublishConfig {
    /// Messages to publish.
    pub count: u64,
    /// Messages per second; 0 publishes as fast as requests complete.
    pub rate: f64,
    /// Requests in flight at most (the batch targets always use one).
    pub concurrency: usize,
    /// Size of each message's data in bytes (`{"t":...,"p":"xx.."}`).
    pub payload_bytes: usize,
    /// Seconds after which no further message is started (0: no limit):
    /// a sustained-rate run of bounded length whatever the rate.
    pub max_secs: f64,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            count: 1,
            rate: 0.0,
            concurrency: 1,
            payload_bytes: 64,
            max_secs: 0.0,
        }
    }
}

/// The publisher could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Client(String),
    /// A batch target needs a push credential.
    #[error("the batch push API needs a push credential")]
    NoCredential,
    /// An id is not valid.
    #[error("invalid id: {0}")]
    Id(#[from] edgepush_core::IdError),
    /// A topic name is not valid.
    #[error("invalid topic: {0}")]
    Topic(String),
}

/// What a publishing run did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PublishReport {
    /// Messages the server accepted.
    pub sent: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Deliveries the edge node reported queued (batch targets only).
    pub node_delivered: u64,
    /// From the first request to the last answer, in seconds.
    pub elapsed_s: f64,
    /// Messages accepted per second.
    pub rate: f64,
    /// Time from sending a request to its answer.
    pub request_latency: LatencySummary,
    /// The first error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// Publishes to one [`Target`].
pub struct Publisher {
    target: Target,
    http: reqwest::Client,
    pusher: Option<HttpPusher>,
    /// Pre-validated ids for the batch targets.
    batch: Option<BatchIds>,
    /// Messages issued by earlier runs: a run continues the numbering
    /// (seqs of the batch targets, users of the rotating ones), so a
    /// warm-up run can precede the measured one.
    issued: AtomicU64,
}

struct BatchIds {
    conns: Vec<ConnId>,
    users: Vec<UserId>,
    /// Per item, the seq of the first message.
    first_seqs: Vec<u64>,
}

impl Publisher {
    /// A publisher for `target`; the batch targets need `credential`.
    pub fn new(target: Target, credential: Option<PushCredential>) -> Result<Self, PublishError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            .build()
            .map_err(|e| PublishError::Client(e.to_string()))?;
        let (pusher, batch) = match &target {
            Target::Batch { user, conn_ids, .. } => {
                let conns = conn_ids
                    .iter()
                    .map(ConnId::new)
                    .collect::<Result<Vec<_>, _>>()?;
                (
                    Some(()),
                    Some(BatchIds {
                        conns,
                        users: vec![UserId::new(user)?],
                        first_seqs: Vec::new(),
                    }),
                )
            }
            Target::BatchUnicast { pairs, .. } => {
                let mut conns = Vec::with_capacity(pairs.len());
                let mut users = Vec::with_capacity(pairs.len());
                let mut first_seqs = Vec::with_capacity(pairs.len());
                for (u, c, seq) in pairs {
                    users.push(UserId::new(u)?);
                    conns.push(ConnId::new(c)?);
                    first_seqs.push(*seq);
                }
                (
                    Some(()),
                    Some(BatchIds {
                        conns,
                        users,
                        first_seqs,
                    }),
                )
            }
            Target::Topic { topic, .. } => {
                TopicName::new(topic).map_err(|e| PublishError::Topic(e.to_string()))?;
                (Some(()), None)
            }
            _ => (None, None),
        };
        let pusher = match pusher {
            None => None,
            Some(()) => {
                let credential = credential.ok_or(PublishError::NoCredential)?;
                let mut cfg = PushClientConfig::new(credential);
                cfg.timeout = Duration::from_secs(60);
                Some(HttpPusher::new(cfg).map_err(|e| PublishError::Client(e.to_string()))?)
            }
        };
        Ok(Self {
            target,
            http,
            pusher,
            batch,
            issued: AtomicU64::new(0),
        })
    }

    /// Publishes `cfg.count` messages; message `k` is due at
    /// `start + k / rate`.
    pub async fn run(&self, cfg: &PublishConfig) -> PublishReport {
        let concurrency = match self.target {
            Target::Batch { .. } | Target::BatchUnicast { .. } | Target::Topic { .. } => 1,
            _ => cfg.concurrency.max(1),
        };
        let started = Instant::now();
        let sent = AtomicU64::new(0);
        let errors = AtomicU64::new(0);
        let delivered = AtomicU64::new(0);
        let latency = Latency::new();
        let first_error = std::sync::Mutex::new(None::<String>);
        let rate = cfg.rate;
        let cap = (cfg.max_secs > 0.0).then(|| started + Duration::from_secs_f64(cfg.max_secs));
        let base = self.issued.load(Ordering::Relaxed);
        let issued = AtomicU64::new(0);
        futures_util::stream::iter(0..cfg.count)
            .take_while(|_| std::future::ready(cap.is_none_or(|cap| Instant::now() < cap)))
            .map(|k| {
                let (sent, errors, delivered, latency, first_error, issued) =
                    (&sent, &errors, &delivered, &latency, &first_error, &issued);
                async move {
                    issued.fetch_add(1, Ordering::Relaxed);
                    if rate > 0.0 {
                        let due = started + Duration::from_secs_f64(k as f64 / rate);
                        tokio::time::sleep_until(due).await;
                    }
                    let t = crate::unix_nanos();
                    let data = crate::frames::payload(t, cfg.payload_bytes);
                    match self.send(base + k, data).await {
                        Ok(n) => {
                            sent.fetch_add(1, Ordering::Relaxed);
                            delivered.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            let mut f = first_error.lock().unwrap_or_else(|e| e.into_inner());
                            if f.is_none() {
                                *f = Some(e);
                            }
                        }
                    }
                    latency.record(k as usize, t, crate::unix_nanos());
                }
            })
            .buffer_unordered(concurrency)
            .for_each(|()| async {})
            .await;
        let elapsed = started.elapsed().as_secs_f64();
        self.issued
            .fetch_add(issued.load(Ordering::Relaxed), Ordering::Relaxed);
        let sent = sent.load(Ordering::Relaxed);
        PublishReport {
            sent,
            errors: errors.load(Ordering::Relaxed),
            node_delivered: delivered.load(Ordering::Relaxed),
            elapsed_s: elapsed,
            rate: sent as f64 / elapsed.max(1e-9),
            request_latency: latency.summary(),
            first_error: first_error.into_inner().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Sends message `k` with `data`; returns the deliveries the node
    /// reported (batch targets) or 0.
    async fn send(&self, k: u64, data: String) -> Result<u64, String> {
        match &self.target {
            Target::Collect {
                base,
                api_key,
                to,
                per_message,
            } => {
                let to = match (*per_message, to.is_empty()) {
                    (0, _) | (_, true) => serde_json::to_string(to),
                    (n, false) => serde_json::to_string(&spread(to, k, n)),
                }
                .map_err(|e| e.to_string())?;
                let body = format!(r#"{{"to":{to},"data":{data}}}"#);
                self.post(
                    &format!("{base}/v1/messages"),
                    ("authorization", &format!("Bearer {api_key}")),
                    body,
                )
                .await
                .map(|_| 0)
            }
            Target::Centrifugo {
                base,
                api_key,
                channel,
            } => {
                let to = Channels::One(channel);
                self.centrifugo(base, api_key, to, &data).await.map(|_| 0)
            }
            Target::CentrifugoSpread {
                base,
                api_key,
                channels,
                per_message,
            } => {
                let picked = spread(channels, k, (*per_message).max(1));
                let to = match picked.as_slice() {
                    [one] => Channels::One(one),
                    many => Channels::Many(many),
                };
                self.centrifugo(base, api_key, to, &data).await.map(|_| 0)
            }
            Target::CentrifugoBroadcast {
                base,
                api_key,
                channels,
                chunk,
            } => {
                for part in channels.chunks((*chunk).max(1)) {
                    let part: Vec<&String> = part.iter().collect();
                    self.centrifugo(base, api_key, Channels::Many(&part), &data)
                        .await?;
                }
                Ok(0)
            }
            Target::Batch {
                push_url,
                first_seq,
                ..
            } => {
                let ids = self.batch.as_ref().ok_or("no batch ids")?;
                let (pusher, data) = (self.pusher.as_ref().ok_or("no pusher")?, raw(data)?);
                let message = stored(&ids.users[0], first_seq + k, data)?;
                let item = PushItem {
                    connection_ids: ids.conns.clone(),
                    message,
                };
                let report = pusher
                    .push(push_url, std::slice::from_ref(&item))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(report.delivered)
            }
            Target::Topic {
                push_url,
                topic,
                first_seq,
            } => {
                let (pusher, data) = (self.pusher.as_ref().ok_or("no pusher")?, raw(data)?);
                let seq = first_seq + k;
                let message = TopicMessage {
                    topic: TopicName::new(topic).map_err(|e| e.to_string())?,
                    seq,
                    id: MessageId::new(format!("bench-{seq}")).map_err(|e| e.to_string())?,
                    data,
                    created_at_ms: edgepush_core::message::now_ms(),
                };
                let report = pusher
                    .push_topics(push_url, &[TopicPushItem::message(&message)])
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(report.delivered)
            }
            Target::BatchUnicast {
                push_url, chunk, ..
            } => {
                let ids = self.batch.as_ref().ok_or("no batch ids")?;
                let (pusher, data) = (self.pusher.as_ref().ok_or("no pusher")?, raw(data)?);
                let mut delivered = 0;
                let all: Vec<usize> = (0..ids.conns.len()).collect();
                for part in all.chunks((*chunk).max(1)) {
                    let mut items = Vec::with_capacity(part.len());
                    for &i in part {
                        items.push(PushItem {
                            connection_ids: vec![ids.conns[i].clone()],
                            message: stored(&ids.users[i], ids.first_seqs[i] + k, data.clone())?,
                        });
                    }
                    let report = pusher
                        .push(push_url, &items)
                        .await
                        .map_err(|e| e.to_string())?;
                    delivered += report.delivered;
                }
                Ok(delivered)
            }
        }
    }

    /// Publishes `data` to `to` through Centrifugo's HTTP API at `base`
    /// (`/api/publish` for one channel, `/api/broadcast` for several).
    async fn centrifugo(
        &self,
        base: &str,
        api_key: &str,
        to: Channels<'_>,
        data: &str,
    ) -> Result<(), String> {
        let (method, field, to) = match to {
            Channels::One(channel) => ("publish", "channel", serde_json::to_string(channel)),
            Channels::Many(channels) => ("broadcast", "channels", serde_json::to_string(channels)),
        };
        let to = to.map_err(|e| e.to_string())?;
        let body = format!(r#"{{"{field}":{to},"data":{data}}}"#);
        let answer = self
            .post(
                &format!("{base}/api/{method}"),
                ("x-api-key", api_key),
                body,
            )
            .await?;
        centrifugo_ok(&answer)
    }

    async fn post(&self, url: &str, auth: (&str, &str), body: String) -> Result<String, String> {
        let answer = self
            .http
            .post(url)
            .header(auth.0, auth.1)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = answer.status();
        let text = answer.text().await.map_err(|e| format!("{url}: {e}"))?;
        if !status.is_success() {
            let mut text = text;
            text.truncate(300);
            return Err(format!("{url}: {status}: {text}"));
        }
        Ok(text)
    }
}

/// Where a Centrifugo publication goes.
#[derive(Debug, Clone, Copy)]
enum Channels<'a> {
    /// One channel: `/api/publish`.
    One(&'a String),
    /// Several: `/api/broadcast`.
    Many(&'a [&'a String]),
}

/// The `n` names of `names` from `names[k * n % len]` on, wrapping (each
/// name at most once, however large `n`).
fn spread(names: &[String], k: u64, n: usize) -> Vec<&String> {
    let len = names.len();
    if len == 0 {
        return Vec::new();
    }
    let start = (k as usize).wrapping_mul(n) % len;
    (0..n.min(len)).map(|j| &names[(start + j) % len]).collect()
}

fn raw(data: String) -> Result<Arc<RawValue>, String> {
    RawValue::from_string(data)
        .map(Arc::from)
        .map_err(|e| format!("payload: {e}"))
}

fn stored(user: &UserId, seq: u64, data: Arc<RawValue>) -> Result<StoredMessage, String> {
    Ok(StoredMessage {
        user_id: user.clone(),
        seq,
        id: MessageId::new(format!("bench-{seq}")).map_err(|e| e.to_string())?,
        data,
        created_at_ms: edgepush_core::message::now_ms(),
    })
}

/// Centrifugo answers 200 with `{"error":...}` for refused commands.
fn centrifugo_ok(answer: &str) -> Result<(), String> {
    if answer.contains(r#""error":"#) {
        let mut text = answer.to_owned();
        text.truncate(300);
        return Err(format!("centrifugo: {text}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_targets_need_a_credential_and_valid_ids() {
        let target = Target::Batch {
            push_url: "http://127.0.0.1:1".into(),
            user: "u1".into(),
            conn_ids: vec!["c1".into()],
            first_seq: 1,
        };
        assert!(matches!(
            Publisher::new(target.clone(), None),
            Err(PublishError::NoCredential)
        ));
        let cred = PushCredential::new("a", "b", "us-east-1");
        assert!(Publisher::new(target, Some(cred.clone())).is_ok());
        let bad = Target::Batch {
            push_url: "http://127.0.0.1:1".into(),
            user: "u 1".into(),
            conn_ids: vec![],
            first_seq: 1,
        };
        assert!(matches!(
            Publisher::new(bad, Some(cred)),
            Err(PublishError::Id(_))
        ));
    }

    #[test]
    fn spread_rotates_through_the_names() {
        let names: Vec<String> = (0..5).map(|i| format!("u{i}")).collect();
        let got = |k, n| {
            spread(&names, k, n)
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(got(0, 1), ["u0"]);
        assert_eq!(got(3, 1), ["u3"]);
        assert_eq!(got(6, 1), ["u1"]);
        assert_eq!(got(1, 2), ["u2", "u3"]);
        assert_eq!(got(2, 2), ["u4", "u0"]);
        assert_eq!(got(0, 9), ["u0", "u1", "u2", "u3", "u4"]);
        assert!(spread(&[], 3, 2).is_empty());
    }

    #[test]
    fn centrifugo_errors_are_seen_in_200_answers() {
        assert!(centrifugo_ok(r#"{"result":{}}"#).is_ok());
        assert!(centrifugo_ok(r#"{"error":{"code":102,"message":"unknown channel"}}"#).is_err());
    }

    #[tokio::test]
    async fn unreachable_targets_count_errors() {
        let p = Publisher::new(
            Target::Centrifugo {
                base: "http://127.0.0.1:1".into(),
                api_key: "k".into(),
                channel: "c".into(),
            },
            None,
        )
        .unwrap();
        let report = p
            .run(&PublishConfig {
                count: 3,
                ..PublishConfig::default()
            })
            .await;
        assert_eq!((report.sent, report.errors), (0, 3));
        assert!(report.first_error.is_some());
    }
}
