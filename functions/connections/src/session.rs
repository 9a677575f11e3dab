//! `$default`: the client frames of a managed-edge connection.
//!
//! | frame | what the function does |
//! |---|---|
//! | `{"type":"resume","after":N}` | the first one starts the connection: posts `hello`, then records the route (from here on dispatch posts live messages to it); every one then replays one page of what is stored after `N` (else after the connect URL's `after`, else after the user's acked seq) and posts `resumed` |
//! | `{"type":"ping"}` | posts `pong` |
//! | `{"type":"ack","seq":N}` | records the ack, coalesced and clipped like on edge nodes |
//! | `subscribe`, `unsubscribe` | topic subscriptions with the edge nodes' rules ([`subscriptions`](crate::subscriptions)) |
//! | `publish` | refused with `400` (client publishing is an edge-node feature); the connection goes on |
//! | anything else | closes the connection with 1008, like an edge node |
//!
//! Before any of it, a connection whose token has expired is closed with
//! 4001, and one without a record (Redis lost it) with 1011, so its client
//! reconnects and is admitted again.
//!
//! # Why no message is lost or shown twice at the seam
//!
//! The route is recorded *before* the replay reads MongoDB. A message
//! stored before that read is in the replay; one stored after it is handed
//! to dispatch after it was stored, so dispatch finds the route and posts it
//! live. Both may post the same message, and a live post may overtake the
//! replay: the client drops what it has by seq and holds what comes early
//! until the gap before it is filled (see `docs/protocol.md`). The replay
//! itself is posted one message after the other, in seq order.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use bytes::Bytes;
use edgepush_core::managed::{ManagedClientFrame, ManagedServerFrame, PONG_FRAME};
use edgepush_core::protocol::{
    CLOSE_BAD_FRAME, CLOSE_BAD_TOKEN, CLOSE_INTERNAL, ClientFrame, encode_hello, encode_msg,
};
use edgepush_core::{ConnId, Seq, UserId};

use crate::handler::{Connections, Posted, Refusal, conn_id, empty_response};
use crate::records::ConnectionRecord;

/// A replay stops posting this long before the invocation's deadline, so
/// the function still answers (and posts `resumed`) in time.
const DEADLINE_MARGIN_MS: i64 = 2_000;

/// How a replay ended.
struct Replayed {
    /// The last seq posted (`after` when none).
    through: Seq,
    /// Stopped before the end of what is stored.
    more: bool,
}

impl Connections {
    /// `$default`: one client frame.
    pub(crate) async fn message(
        &self,
        event: &ApiGatewayWebsocketProxyRequest,
        deadline_ms: Option<i64>,
    ) -> Result<ApiGatewayProxyResponse, Refusal> {
        let ctx = &event.request_context;
        let conn = conn_id(ctx)?;
        let (_, endpoint) = self.virtual_node(ctx)?;
        let frame = if event.is_base64_encoded {
            Err("binary frames are not part of the protocol".to_owned())
        } else {
            ManagedClientFrame::parse(event.body.as_deref().unwrap_or_default())
                .map_err(|e| format!("unknown client frame: {e}"))
        };
        let (user, record) = self.owner_of(ctx, &conn).await?;

        if let Some(record) = &record
            && record.expired(edgepush_core::message::now_ms())
        {
            self.close(&endpoint, &conn, CLOSE_BAD_TOKEN, "token expired")
                .await;
            self.forget(&record.user, &conn, Some(record)).await?;
            return Ok(empty_response(200));
        }
        let frame = match frame {
            Ok(frame) => frame,
            Err(reason) => {
                self.close(
                    &endpoint,
                    &conn,
                    CLOSE_BAD_FRAME,
                    "frame not in the protocol",
                )
                .await;
                return Err(Refusal::BadRequest(reason));
            }
        };
        match frame {
            ManagedClientFrame::Client(ClientFrame::Ack { seq }) => {
                self.ack(&conn, user.as_ref(), seq).await
            }
            ManagedClientFrame::Client(ClientFrame::Subscribe {
                topic,
                after,
                token,
            }) => match record {
                Some(record) => {
                    self.subscribe(&endpoint, &conn, &record, &topic, after, token, deadline_ms)
                        .await
                }
                None => self.unknown(&endpoint, &conn).await,
            },
            ManagedClientFrame::Client(ClientFrame::Unsubscribe { topic }) => match record {
                Some(record) => self.unsubscribe(&endpoint, &conn, &record, &topic).await,
                None => self.unknown(&endpoint, &conn).await,
            },
            // Publishing from a client is an edge-node feature for now: a
            // publish is refused in words (the connection goes on).
            ManagedClientFrame::Client(ClientFrame::Publish { .. }) => Err(Refusal::BadRequest(
                "publishing from API Gateway connections is not available; publish through collect"
                    .into(),
            )),
            ManagedClientFrame::Ping => {
                match self
                    .post(&endpoint, &conn, Bytes::from_static(PONG_FRAME.as_bytes()))
                    .await
                {
                    Ok(_) => Ok(empty_response(200)),
                    Err(e) => Err(Refusal::Unavailable(format!("posting pong: {e}"))),
                }
            }
            ManagedClientFrame::Resume { after } => {
                let Some(record) = record else {
                    return self.unknown(&endpoint, &conn).await;
                };
                self.resume(&endpoint, &conn, &record, after, deadline_ms)
                    .await
            }
        }
    }

    /// A `resume`: start the connection if it is the first, then replay one
    /// page and say where it ended.
    async fn resume(
        &self,
        endpoint: &str,
        conn: &ConnId,
        record: &ConnectionRecord,
        after: Option<Seq>,
        deadline_ms: Option<i64>,
    ) -> Result<ApiGatewayProxyResponse, Refusal> {
        let user = &record.user;
        if self
            .records
            .start(conn)
            .await
            .map_err(Refusal::from_route)?
        {
            let hello = Bytes::from(encode_hello(conn, user));
            match self.post(endpoint, conn, hello).await {
                Ok(Posted::Sent) => {}
                Ok(Posted::Gone) => return self.gone(user, conn, record).await,
                Err(e) => return Err(Refusal::Unavailable(format!("posting hello: {e}"))),
            }
            // From here on dispatch posts to this connection; whatever is
            // stored from now is either in the replay below or posted live.
            self.routes
                .add_route(user, conn, &record.node)
                .await
                .map_err(Refusal::from_route)?;
            tracing::info!(user = %user, conn = %conn, "API Gateway connection started");
        }

        let after = match after.or(record.after) {
            Some(after) => after,
            None => match self.messages.acked(user).await {
                Ok(acked) => acked,
                Err(e) => {
                    return self
                        .store_failed(endpoint, conn, Refusal::from_store(e))
                        .await;
                }
            },
        };
        let page = match self
            .messages
            .read_after(user, after, self.settings.replay_page)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                return self
                    .store_failed(endpoint, conn, Refusal::from_store(e))
                    .await;
            }
        };
        let mut replayed = Replayed {
            through: after,
            more: page.len() >= self.settings.replay_page,
        };
        for message in &page {
            if deadline_ms.is_some_and(|deadline| {
                edgepush_core::message::now_ms() + DEADLINE_MARGIN_MS >= deadline
            }) {
                replayed.more = true;
                break;
            }
            let frame = encode_msg(message.seq, &message.id, &message.data);
            match self.post(endpoint, conn, frame).await {
                Ok(Posted::Sent) => replayed.through = message.seq,
                Ok(Posted::Gone) => return self.gone(user, conn, record).await,
                Err(e) => {
                    // The client's resume goes unanswered: it asks again,
                    // or reconnects, after its resume timeout.
                    return Err(Refusal::Unavailable(format!(
                        "posting seq {} of the replay: {e}",
                        message.seq
                    )));
                }
            }
        }
        let resumed = ManagedServerFrame::Resumed {
            after,
            through: replayed.through,
            more: replayed.more,
        };
        match self
            .post(endpoint, conn, Bytes::from(resumed.to_text()))
            .await
        {
            Ok(Posted::Sent) => {}
            Ok(Posted::Gone) => return self.gone(user, conn, record).await,
            Err(e) => return Err(Refusal::Unavailable(format!("posting resumed: {e}"))),
        }
        tracing::debug!(
            user = %user,
            conn = %conn,
            after,
            through = replayed.through,
            more = replayed.more,
            "replayed"
        );
        Ok(empty_response(200))
    }

    /// A frame of a connection Redis no longer knows (flushed, or failed
    /// over without the data): closed with 1011, so its client comes again
    /// through `$connect`.
    async fn unknown(
        &self,
        endpoint: &str,
        conn: &ConnId,
    ) -> Result<ApiGatewayProxyResponse, Refusal> {
        self.close(
            endpoint,
            conn,
            CLOSE_INTERNAL,
            "connection unknown; reconnect",
        )
        .await;
        Ok(empty_response(200))
    }

    /// The message store failed during a resume: close the connection with
    /// 1011 (the client reconnects after a backoff, as from an edge node).
    async fn store_failed(
        &self,
        endpoint: &str,
        conn: &ConnId,
        refusal: Refusal,
    ) -> Result<ApiGatewayProxyResponse, Refusal> {
        self.close(endpoint, conn, CLOSE_INTERNAL, "message store unavailable")
            .await;
        Err(refusal)
    }

    /// The connection went away while we posted to it.
    async fn gone(
        &self,
        user: &UserId,
        conn: &ConnId,
        record: &ConnectionRecord,
    ) -> Result<ApiGatewayProxyResponse, Refusal> {
        tracing::info!(user = %user, conn = %conn, "connection gone during a resume");
        self.forget(user, conn, Some(record)).await?;
        Ok(empty_response(200))
    }

    /// An ack: coalesced by the gate, clipped by the store.
    async fn ack(
        &self,
        conn: &ConnId,
        user: Option<&UserId>,
        seq: Seq,
    ) -> Result<ApiGatewayProxyResponse, Refusal> {
        let Some(user) = user else {
            tracing::warn!(conn = %conn, seq, "ack from a connection without a known owner; ignored");
            return Ok(empty_response(200));
        };
        let due = self
            .records
            .throttle_ack(conn, seq, self.settings.ack_interval)
            .await
            .map_err(Refusal::from_route)?;
        let Some(seq) = due else {
            tracing::debug!(user = %user, conn = %conn, seq, "ack coalesced");
            return Ok(empty_response(200));
        };
        let acked = self
            .messages
            .ack(user, seq)
            .await
            .map_err(Refusal::from_store)?;
        tracing::debug!(user = %user, conn = %conn, seq, acked, "ack recorded");
        Ok(empty_response(200))
    }
}
