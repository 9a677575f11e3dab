//! Topics on the managed edge: the `subscribe` and `unsubscribe` frames of
//! a connection, with the edge nodes' rules.
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

use aws_lambda_events::apigw::ApiGatewayProxyResponse;
use bytes::Bytes;
use edgepush_core::protocol::{
    encode_error, encode_subscribed, encode_topic_msg, encode_unsubscribed,
};
use edgepush_core::topic::TopicPattern;
use edgepush_core::{AuthError, ConnId, Seq, TopicName};

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
                if let Err(e) = self
                    .subscriptions
                    .managed_unsubscribe(&record.node, conn, &topic)
                    .await
                {
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
                    .subscriptions
                    .managed_unsubscribe(&record.node, conn, &topic)
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
        if held.len() >= max {
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
        self.subscriptions
            .managed_subscribe(&record.node, conn, &topic)
            .await
            .map_err(unavailable)?;
        self.topic_routes
            .add_topics(&record.node, std::slice::from_ref(&topic))
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
