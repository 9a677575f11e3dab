//! Topics on the managed edge: the server-side subscriptions a connection
//! starts with (the token's `topics` and `$broadcast`, at its first
//! `resume`), and the `subscribe`, `unsubscribe` and `publish` frames of a
//! connection, with the edge nodes' rules.
//!
//! | check | refusal (an `error` frame; the connection goes on) |
//! |---|---|
//! | the name | `bad_topic` |
//! | the namespace is configured (`EDGEPUSH_TOPIC_NAMESPACES`) | `unknown_namespace` |
//! | not held already; at most `EDGEPUSH_MAX_SUBSCRIPTIONS` | `already_subscribed`, `too_many_subscriptions` |
//! | a `subscribe` pattern of the connection's token matches, or a subscribe token for this user and topic came | `forbidden`, `bad_token` |
//! | MongoDB, Redis or the verifier answer | `unavailable` |
//!
//! A subscription is recorded in Redis (the connection's topics, the
//! topic's connections on the virtual node) and makes the virtual node a
//! member of the topic *before* the topic log is read, so a message
//! published meanwhile is in the replay or posted live by dispatch (both,
//! at worst: the client drops a seq it has). With `after`, everything
//! stored after it is replayed (as many pages as fit the invocation); then
//! `{"type":"subscribed","topic":...,"seq":<latest>}`.
//!
//! The server-side subscriptions are decided by the edge nodes' own rules
//! ([`edgepush_core::subscriptions::server_side`]) at the first `resume`:
//! `"op":"connect"` error frames first, then `$broadcast` and the token's
//! topics, each after its `?resume=` position.
//!
//! A `publish` is checked as on edge nodes (the namespace's
//! `client_publish`, a subscription of the connection, the idempotency
//! key), stored under `client:<user>` and fanned out with dispatch's
//! [`Dispatcher`](edgepush_dispatch::Dispatcher) before `published` is
//! posted; a store or fan-out failure is an `unavailable` error frame.
//!
//! Subscriptions in namespaces with `presence` count in the topic's
//! presence with the virtual node as their node (see
//! `edgepush_redis::managed`), until unsubscribe, `$disconnect` or the
//! sweep.

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayProxyResponse;
use bytes::Bytes;
use edgepush_core::protocol::{
    encode_error, encode_published, encode_subscribed, encode_topic_msg, encode_unsubscribed,
};
use edgepush_core::submit::Limits;
use edgepush_core::subscriptions::server_side;
use edgepush_core::topic::{ClientPublish, TopicPattern};
use edgepush_core::{AuthError, ConnId, NewTopicMessage, RouteError, Seq, TopicMessage, TopicName};
use serde_json::value::RawValue;

use crate::handler::{Connections, Posted, Refusal, empty_response};
use crate::records::ConnectionRecord;

/// A replay stops posting this long before the invocation's deadline.
const DEADLINE_MARGIN_MS: i64 = 2_000;

/// A refused topic request: the `error` frame's code and message.
type TopicRefusal = (&'static str, String);

impl Connections {
    /// `{"type":"subscribe","topic":T,"after":N,"token":...}`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn subscribe(
        &self,
        endpoint: &str,
        conn: &ConnId,
        record: &ConnectionRecord,
        raw: &str,
        after: Option<Seq>,
        token: Option<String>,
        deadline_ms: Option<i64>,
    ) -> Result<ApiGatewayProxyResponse, Refusal> {
        let topic = match self.admit_subscription(conn, record, raw, token).await {
            Ok(topic) => topic,
            Err((code, message)) => {
                return self
                    .refuse_topic(endpoint, conn, "subscribe", raw, code, &message)
                    .await;
            }
        };
        match self
            .start_subscription(endpoint, conn, record, &topic, after, deadline_ms)
            .await
        {
            Ok(Posted::Sent) => Ok(empty_response(200)),
            Ok(Posted::Gone) => {
                self.forget(&record.user, conn, Some(record)).await?;
                Ok(empty_response(200))
            }
            Err((code, message)) => {
                // Not in place: the client subscribes again later.
                if let Err(e) = self.leave(conn, record, &topic).await {
                    tracing::warn!(conn = %conn, topic = %topic, error = %e, "could not undo a failed subscription");
                }
                self.refuse_topic(endpoint, conn, "subscribe", raw, code, &message)
                    .await
            }
        }
    }

    /// `{"type":"unsubscribe","topic":T}`.
    pub(crate) async fn unsubscribe(
        &self,
        endpoint: &str,
        conn: &ConnId,
        record: &ConnectionRecord,
        raw: &str,
    ) -> Result<ApiGatewayProxyResponse, Refusal> {
        let (code, message) = match TopicName::new(raw) {
            Err(e) => ("bad_topic", e.to_string()),
            Ok(topic) => {
                let held = self
                    .leave(conn, record, &topic)
                    .await
                    .map_err(Refusal::from_route)?;
                if held {
                    return self
                        .post_text(endpoint, conn, encode_unsubscribed(&topic))
                        .await;
                }
                (
                    "not_subscribed",
                    "this connection is not subscribed to the topic".to_owned(),
                )
            }
        };
        self.refuse_topic(endpoint, conn, "unsubscribe", raw, code, &message)
            .await
    }

    /// Records `conn`'s subscriptions of `topics` (dispatch posts their
    /// messages to it from now on), counts it in the presence of those in
    /// namespaces that keep presence, and makes the virtual node a member
    /// of every topic, so topic fan-out reaches it.
    pub(crate) async fn join(
        &self,
        conn: &ConnId,
        record: &ConnectionRecord,
        topics: &[TopicName],
    ) -> Result<(), RouteError> {
        for topic in topics {
            self.subscriptions
                .managed_subscribe(&record.node, conn, topic)
                .await?;
            if self.keeps_presence(topic) {
                self.subscriptions
                    .managed_presence_join(&record.node, &record.user, conn, topic)
                    .await?;
            }
        }
        self.topic_routes.add_topics(&record.node, topics).await
    }

    /// Ends `conn`'s subscription of `topic` and its place in the topic's
    /// presence; false when it had none.
    pub(crate) async fn leave(
        &self,
        conn: &ConnId,
        record: &ConnectionRecord,
        topic: &TopicName,
    ) -> Result<bool, RouteError> {
        let held = self
            .subscriptions
            .managed_unsubscribe(&record.node, conn, topic)
            .await?;
        self.subscriptions
            .managed_presence_leave(&record.node, conn, topic)
            .await?;
        Ok(held)
    }

    /// Whether `topic`'s namespace keeps presence.
    fn keeps_presence(&self, topic: &TopicName) -> bool {
        self.settings
            .namespaces
            .options(topic)
            .is_some_and(|o| o.presence)
    }

    /// The server-side subscriptions, at the connection's first `resume`
    /// (after `hello`, before the user's replay): the `error` frames for
    /// what the token or `?resume=` named wrongly, then `$broadcast` and
    /// the token's topics, each replayed after its `?resume=` position
    /// (else started at its latest) and confirmed with `subscribed`, as
    /// an edge node starts them. `Gone` when the connection went away.
    pub(crate) async fn start_server_side(
        &self,
        endpoint: &str,
        conn: &ConnId,
        record: &ConnectionRecord,
        deadline_ms: Option<i64>,
    ) -> Result<Posted, Refusal> {
        let server = server_side(
            &record.topics,
            &record.subscribe,
            record.resume.clone(),
            &self.settings.namespaces,
            self.settings.max_subscriptions,
        );
        for notice in server.notices {
            let posted = self
                .post(endpoint, conn, Bytes::from(notice))
                .await
                .map_err(|e| Refusal::Unavailable(format!("posting a connect notice: {e}")))?;
            if let Posted::Gone = posted {
                return Ok(Posted::Gone);
            }
        }
        let mut streams = Vec::with_capacity(1 + server.topics.len());
        streams.push((TopicName::broadcast(), server.broadcast_after));
        streams.extend(server.topics);
        let topics: Vec<TopicName> = streams.iter().map(|(t, _)| t.clone()).collect();
        self.join(conn, record, &topics)
            .await
            .map_err(Refusal::from_route)?;
        for (topic, after) in streams {
            match self
                .start_subscription(endpoint, conn, record, &topic, after, deadline_ms)
                .await
            {
                Ok(Posted::Sent) => {}
                Ok(Posted::Gone) => return Ok(Posted::Gone),
                // As on an edge node: the broadcast stream cannot go
                // without, the connection closes and its client comes back.
                Err((_, message)) if topic.is_broadcast() => {
                    return Err(Refusal::Unavailable(format!(
                        "starting the broadcast stream: {message}"
                    )));
                }
                // A token topic that cannot start is refused and undone;
                // the connection goes on.
                Err((code, message)) => {
                    self.leave(conn, record, &topic)
                        .await
                        .map_err(Refusal::from_route)?;
                    self.refuse_topic(endpoint, conn, "subscribe", topic.as_str(), code, &message)
                        .await?;
                }
            }
        }
        Ok(Posted::Sent)
    }

    /// `{"type":"publish","topic":T,"data":...,"idempotency_key":K}`: as
    /// on an edge node, allowed in namespaces with `client_publish:
    /// "subscribers"` to a topic the connection is subscribed to; stored
    /// under the source `client:<user>`, fanned out to every subscriber
    /// (edge nodes and API Gateway connections), answered `published`.
    pub(crate) async fn publish(
        &self,
        endpoint: &str,
        conn: &ConnId,
        record: &ConnectionRecord,
        raw: &str,
        data: Box<RawValue>,
        idempotency_key: Option<String>,
    ) -> Result<ApiGatewayProxyResponse, Refusal> {
        match self
            .publish_checked(conn, record, raw, data, idempotency_key)
            .await
        {
            Ok(stored) => {
                tracing::debug!(user = %record.user, conn = %conn, topic = %stored.topic, seq = stored.seq, "client publish");
                self.post_text(endpoint, conn, encode_published(&stored))
                    .await
            }
            Err((code, message)) => {
                self.refuse_topic(endpoint, conn, "publish", raw, code, &message)
                    .await
            }
        }
    }

    /// The checks, the write and the fan-out of a client publish.
    async fn publish_checked(
        &self,
        conn: &ConnId,
        record: &ConnectionRecord,
        raw: &str,
        data: Box<RawValue>,
        idempotency_key: Option<String>,
    ) -> Result<TopicMessage, TopicRefusal> {
        let topic = TopicName::new(raw).map_err(|e| ("bad_topic", e.to_string()))?;
        let Some(options) = self.settings.namespaces.options(&topic) else {
            return Err((
                "unknown_namespace",
                format!("the namespace {:?} is not configured", topic.namespace()),
            ));
        };
        let subscribed = options.client_publish == ClientPublish::Subscribers
            && self
                .subscriptions
                .managed_topics(conn)
                .await
                .map_err(|e| ("unavailable", e.to_string()))?
                .contains(&topic);
        if !subscribed {
            return Err((
                "forbidden",
                "clients may publish only to topics they are subscribed to, in namespaces that allow it".into(),
            ));
        }
        let max_key = Limits::default().max_idempotency_key_len;
        if let Some(key) = &idempotency_key
            && (key.is_empty() || key.len() > max_key)
        {
            return Err((
                "bad_request",
                format!("idempotency_key must be 1 to {max_key} bytes"),
            ));
        }
        let retention = self.settings.namespaces.retention(&topic);
        let message = NewTopicMessage {
            topics: vec![(topic, retention)],
            data: Arc::from(data),
            source: format!("client:{}", record.user),
            idempotency_key,
        };
        let stored = match self.topics.publish(&message).await {
            Ok(mut stored) if stored.len() == 1 => stored.remove(0),
            Ok(_) | Err(_) => {
                return Err((
                    "unavailable",
                    "the message store is unavailable; publish again later (with the same idempotency_key)".into(),
                ));
            }
        };
        match self.fanout.dispatch_topics(std::slice::from_ref(&stored)).await {
            Ok(report) if report.undelivered.is_empty() => Ok(stored),
            Ok(_) | Err(_) => Err((
                "unavailable",
                "the message is stored but could not reach every node; publish again with the same idempotency_key".into(),
            )),
        }
    }

    /// The checks of a subscription, then its record; the topic.
    async fn admit_subscription(
        &self,
        conn: &ConnId,
        record: &ConnectionRecord,
        raw: &str,
        token: Option<String>,
    ) -> Result<TopicName, TopicRefusal> {
        let topic = TopicName::new(raw).map_err(|e| ("bad_topic", e.to_string()))?;
        if self.settings.namespaces.options(&topic).is_none() {
            return Err((
                "unknown_namespace",
                format!("the namespace {:?} is not configured", topic.namespace()),
            ));
        }
        let unavailable = |e: edgepush_core::RouteError| ("unavailable", e.to_string());
        let held = self
            .subscriptions
            .managed_topics(conn)
            .await
            .map_err(unavailable)?;
        if held.contains(&topic) {
            return Err((
                "already_subscribed",
                "this connection is subscribed to the topic already".into(),
            ));
        }
        let max = self.settings.max_subscriptions;
        if held.iter().filter(|t| !t.is_broadcast()).count() >= max {
            return Err((
                "too_many_subscriptions",
                format!("a connection may hold at most {max} subscriptions"),
            ));
        }
        let granted = record
            .subscribe
            .iter()
            .filter_map(|p| TopicPattern::new(p.as_str()).ok())
            .any(|p| p.matches(&topic));
        if !granted {
            self.check_subscribe_token(record, &topic, token).await?;
        }
        self.join(conn, record, std::slice::from_ref(&topic))
            .await
            .map_err(unavailable)?;
        Ok(topic)
    }

    /// A subscribe token for this user and topic, as edge nodes check it.
    async fn check_subscribe_token(
        &self,
        record: &ConnectionRecord,
        topic: &TopicName,
        token: Option<String>,
    ) -> Result<(), TopicRefusal> {
        let Some(token) = token else {
            return Err((
                "forbidden",
                "the connection token does not allow this topic; send a subscribe token".into(),
            ));
        };
        let Some(verifier) = &self.verifier else {
            return Err((
                "bad_token",
                "subscribe tokens are verified only where EDGEPUSH_JWT_* is configured".into(),
            ));
        };
        match verifier.verify(&token).await {
            Ok(grant) if grant.user_id != record.user => Err((
                "bad_token",
                "the subscribe token is for another user".into(),
            )),
            Ok(grant) if grant.topic.as_deref() != Some(topic.as_str()) => Err((
                "bad_token",
                "the subscribe token is not for this topic".into(),
            )),
            Ok(_) => Ok(()),
            Err(AuthError::Unavailable(_)) => Err((
                "unavailable",
                "token verification is unavailable; subscribe again later".into(),
            )),
            Err(e) => Err(("bad_token", format!("the subscribe token: {e}"))),
        }
    }

    /// The replay after `after` (when given), then `subscribed`.
    async fn start_subscription(
        &self,
        endpoint: &str,
        conn: &ConnId,
        record: &ConnectionRecord,
        topic: &TopicName,
        after: Option<Seq>,
        deadline_ms: Option<i64>,
    ) -> Result<Posted, TopicRefusal> {
        let unavailable = |e: edgepush_core::StoreError| ("unavailable", e.to_string());
        let failed = |e: edgepush_dispatch::PostToConnectionError| ("unavailable", e.to_string());
        if let Some(mut position) = after {
            loop {
                let page = self
                    .topics
                    .read_after(topic, position, self.settings.replay_page)
                    .await
                    .map_err(unavailable)?;
                for message in &page {
                    match self
                        .post(endpoint, conn, encode_topic_msg(message))
                        .await
                        .map_err(failed)?
                    {
                        Posted::Sent => position = message.seq,
                        Posted::Gone => return Ok(Posted::Gone),
                    }
                }
                let out_of_time = deadline_ms.is_some_and(|deadline| {
                    edgepush_core::message::now_ms() + DEADLINE_MARGIN_MS >= deadline
                });
                if page.len() < self.settings.replay_page || out_of_time {
                    // Out of time: the client sees the gap after `subscribed`
                    // and subscribes again after its last seq.
                    break;
                }
            }
        }
        let latest = self.topics.last_seq(topic).await.map_err(unavailable)?;
        tracing::debug!(user = %record.user, conn = %conn, topic = %topic, latest, "subscribed");
        self.post(
            endpoint,
            conn,
            Bytes::from(encode_subscribed(topic, latest)),
        )
        .await
        .map_err(failed)
    }

    /// Posts an `error` frame about a topic request; the connection goes on.
    async fn refuse_topic(
        &self,
        endpoint: &str,
        conn: &ConnId,
        op: &str,
        raw: &str,
        code: &str,
        message: &str,
    ) -> Result<ApiGatewayProxyResponse, Refusal> {
        // Only the first 200 characters of the topic as sent are echoed.
        let shown: String = raw.chars().take(200).collect();
        tracing::info!(conn = %conn, op, code, "topic request refused");
        self.post_text(endpoint, conn, encode_error(op, &shown, code, message))
            .await
    }

    /// Posts `text`; 200, or 503 when API Gateway did not take it.
    async fn post_text(
        &self,
        endpoint: &str,
        conn: &ConnId,
        text: String,
    ) -> Result<ApiGatewayProxyResponse, Refusal> {
        match self.post(endpoint, conn, Bytes::from(text)).await {
            Ok(_) => Ok(empty_response(200)),
            Err(e) => Err(Refusal::Unavailable(format!(
                "posting to the connection: {e}"
            ))),
        }
    }
}
