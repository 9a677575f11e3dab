//! The push API (dispatch -> node), health checks and metrics, on the
//! node's second listener.
//!
//! Compatible with the API Gateway Management API, so the same
//! `aws-sdk-apigatewaymanagement` client pushes to API Gateway and to edge
//! nodes, under any stage prefix:
//!
//! | request | answer |
//! |---|---|
//! | `POST <stage>/@connections/{id}` (raw body, at most 128 KiB) | `200`; `410` + `x-amzn-errortype: GoneException` when the connection is not here; `413` above 128 KiB |
//! | `GET <stage>/@connections/{id}` | `200 {"connectedAt","lastActiveAt","identity":{"sourceIp","userAgent"}}` |
//! | `DELETE <stage>/@connections/{id}` | `204`, the socket is closed with 1000 |
//! | `POST <stage>/@batch` (JSON [`PushBatch`](edgepush_core::protocol::PushBatch)) | `200` JSON [`PushBatchResult`] |
//! | `POST <stage>/@topics` (JSON [`TopicPushBatch`](edgepush_core::protocol::TopicPushBatch)) | `200` JSON [`TopicPushResult`]: the frame of each item is made once and queued to every local subscriber of its topic |
//! | `GET /healthz`, `GET /readyz`, `GET /metrics` | unsigned |
//!
//! Every push request must carry a valid SigV4 signature (service
//! `execute-api`) made with one of the node's push credentials: `403`
//! otherwise. Errors are mapped to answers in one place ([`ApiError`]).
//!
//! Protection of the node: the signature's headers (shape, known key,
//! date) are checked before the body is read, so an unsigned request never
//! makes the node buffer a body; a request head must arrive within
//! [`push_read_timeout`](crate::config::NodeConfig::push_read_timeout) and
//! its body within the same time again (`408` otherwise); at most
//! [`push_concurrency`](crate::config::NodeConfig::push_concurrency)
//! requests are served at once (`503` + `retry-after` beyond, which
//! dispatch retries); and a batch delivers a message only to connections of
//! the message's user (any other connection is reported gone).

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use edgepush_core::protocol::{
    self, ErrorBody, PushBatchRef, PushBatchResult, TopicPushBatchRef, TopicPushResult,
};
use edgepush_core::{ConnId, MessageId, Seq, TopicName};
use edgepush_delivery::sigv4;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use percent_encoding::percent_decode_str;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::{Conn, Delivery, Outbound};
use crate::metrics::Metrics;
use crate::session::{text_frame, text_frame_from_string};
use crate::state::NodeState;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

/// The largest `PostToConnection` body, as API Gateway allows.
pub(crate) const MAX_POST_BYTES: usize = 128 * 1024;
/// The largest batch body.
pub(crate) const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// How long open push connections get to finish after `stop`.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What every request handler sees.
#[derive(Clone)]
struct Api {
    state: Arc<NodeState>,
    /// Requests served at once, at most.
    permits: Arc<Semaphore>,
}

/// Serves the push API on `listener` until `stop` is cancelled.
pub(crate) async fn serve(listener: TcpListener, state: Arc<NodeState>, stop: CancellationToken) {
    let head_timeout = state.config.push_read_timeout;
    let api = Api {
        permits: Arc::new(Semaphore::new(state.config.push_concurrency)),
        state,
    };
    let app = axum::Router::new().fallback(handle).with_state(api);
    let connections = TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "push API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let stop = stop.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(head_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("push API connections still open after the grace period");
    }
}

/// Why a push API request failed; turned into an answer by `IntoResponse`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("forbidden: {0}")]
    Forbidden(sigv4::VerifyError),
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("the body did not arrive within {0:?}")]
    BodyTimeout(Duration),
    #[error("too many push requests at once; retry")]
    Busy,
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("connection {0} is gone")]
    Gone(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let (status, code) = match &self {
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "timeout"),
            ApiError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Gone(_) => (StatusCode::GONE, "gone"),
        };
        let mut response = if let ApiError::Gone(_) = self {
            // The shape API Gateway answers with, so the AWS SDK maps it to
            // its typed GoneException.
            (
                status,
                axum::Json(serde_json::json!({ "message": message })),
            )
                .into_response()
        } else {
            (status, axum::Json(ErrorBody::new(code, message))).into_response()
        };
        let errortype = match self {
            ApiError::Gone(_) => Some("GoneException"),
            ApiError::Forbidden(_) => Some("ForbiddenException"),
            ApiError::TooLarge(_) => Some("PayloadTooLargeException"),
            ApiError::BadRequest(_) => Some("BadRequestException"),
            _ => None,
        };
        if let Some(t) = errortype {
            response
                .headers_mut()
                .insert("x-amzn-errortype", HeaderValue::from_static(t));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// What a path names.
enum Target<'a> {
    Connection(&'a str),
    Batch,
    Topics,
    Health,
    Ready,
    Metrics,
}

fn route(path: &str) -> Option<Target<'_>> {
    match path {
        "/healthz" => return Some(Target::Health),
        "/readyz" => return Some(Target::Ready),
        "/metrics" => return Some(Target::Metrics),
        _ => {}
    }
    if path.ends_with("/@batch") {
        return Some(Target::Batch);
    }
    if path.ends_with("/@topics") {
        return Some(Target::Topics);
    }
    let at = path.find("/@connections/")?;
    let id = &path[at + "/@connections/".len()..];
    (!id.is_empty() && !id.contains('/')).then_some(Target::Connection(id))
}

async fn handle(State(api): State<Api>, req: Request) -> Response {
    let result = dispatch(&api, req).await;
    match result {
        Ok(response) => response,
        Err(err) => {
            if !matches!(err, ApiError::Gone(_)) {
                Metrics::inc(&api.state.metrics.push_refused);
            }
            err.into_response()
        }
    }
}

async fn dispatch(api: &Api, req: Request) -> Result<Response, ApiError> {
    let state = &*api.state;
    let (parts, body) = req.into_parts();
    let target = route(parts.uri.path()).ok_or(ApiError::NotFound)?;
    match target {
        Target::Health => return Ok((StatusCode::OK, "ok\n").into_response()),
        Target::Ready => {
            let ready = state.heartbeat_ok.load(Ordering::Acquire)
                && !state.draining.load(Ordering::Acquire);
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            return Ok((status, if ready { "ready\n" } else { "not ready\n" }).into_response());
        }
        Target::Metrics => {
            let mut text = state.metrics.render(state.config.node_id.as_str());
            // Gauges of the topic index, read when scraped.
            text.push_str(&format!(
                "# HELP edgepush_subscriptions Topic subscriptions of local connections (broadcast not counted).\n# TYPE edgepush_subscriptions gauge\nedgepush_subscriptions{{node=\"{}\"}} {}\n",
                state.config.node_id,
                state.topics.subscriptions()
            ));
            return Ok(
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
            );
        }
        Target::Connection(_) | Target::Batch | Target::Topics => {}
    }
    let limit = match target {
        Target::Batch | Target::Topics => MAX_BATCH_BYTES,
        _ => MAX_POST_BYTES,
    };
    // Refuse an unsigned or stale request before reading its body.
    sigv4::check_headers(&state.credentials, &parts.headers, SystemTime::now())
        .map_err(ApiError::Forbidden)?;
    let _permit = api.permits.try_acquire().map_err(|_| ApiError::Busy)?;
    let read_timeout = state.config.push_read_timeout;
    let body = tokio::time::timeout(read_timeout, read_body(body, limit))
        .await
        .map_err(|_| ApiError::BodyTimeout(read_timeout))??;
    sigv4::verify(
        &state.credentials,
        &parts.method,
        &parts.uri,
        &parts.headers,
        &body,
        SystemTime::now(),
    )
    .map_err(ApiError::Forbidden)?;

    match (target, &parts.method) {
        (Target::Batch, &Method::POST) => batch(&api.state, &body).await,
        (Target::Topics, &Method::POST) => topics(state, &body),
        (Target::Batch | Target::Topics, _) => Err(ApiError::MethodNotAllowed),
        (Target::Connection(raw), method) => {
            let decoded = percent_decode_str(raw).decode_utf8_lossy();
            let conn = ConnId::new(&*decoded).map_err(|_| ApiError::Gone(decoded.to_string()))?;
            match *method {
                Method::POST => post(state, &conn, body),
                Method::GET => get(state, &conn),
                Method::DELETE => delete(state, &conn),
                _ => Err(ApiError::MethodNotAllowed),
            }
        }
        _ => Err(ApiError::NotFound),
    }
}

async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::TooLarge(limit))
}

fn post(state: &NodeState, conn: &ConnId, body: bytes::Bytes) -> Result<Response, ApiError> {
    let frame = text_frame(body);
    match state.hub.deliver(
        conn.as_str(),
        None,
        Outbound {
            seq: 0,
            topic: None,
            frame,
            direct: false,
        },
    ) {
        Delivery::Queued => {
            Metrics::inc(&state.metrics.deliveries);
            Ok(StatusCode::OK.into_response())
        }
        Delivery::Gone | Delivery::TooSlow => {
            Metrics::inc(&state.metrics.push_gone);
            Err(ApiError::Gone(conn.to_string()))
        }
    }
}

fn get(state: &NodeState, conn: &ConnId) -> Result<Response, ApiError> {
    let handle = state
        .hub
        .get(conn)
        .ok_or_else(|| ApiError::Gone(conn.to_string()))?;
    let last_ms = handle.last_active_ms.load(Ordering::Relaxed);
    let body = serde_json::json!({
        "connectedAt": iso8601(handle.connected_at),
        "lastActiveAt": iso8601(UNIX_EPOCH + Duration::from_millis(last_ms)),
        "identity": {
            "sourceIp": handle.peer.ip().to_string(),
            "userAgent": handle.user_agent.as_deref().unwrap_or(""),
        },
    });
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

fn delete(state: &NodeState, conn: &ConnId) -> Result<Response, ApiError> {
    let handle = state
        .hub
        .get(conn)
        .ok_or_else(|| ApiError::Gone(conn.to_string()))?;
    handle.close(protocol::CLOSE_NORMAL);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn batch(state: &Arc<NodeState>, body: &[u8]) -> Result<Response, ApiError> {
    // Borrowed from the body: no allocation per connection id.
    let batch: PushBatchRef<'_> = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("batch body: {e}")))?;
    let mut result = PushBatchResult::default();
    let mut frames = FrameArena::default();
    for item in &batch.items {
        let m = &item.message;
        MessageId::validate(m.id).map_err(|e| ApiError::BadRequest(format!("message id: {e}")))?;
        // Serialise once per message, into the batch's shared buffer;
        // every connection shares the bytes.
        let frame = frames.frame(m.seq, m.id, m.data);
        let conns = item.connection_ids.len();
        let out = Outbound {
            seq: m.seq,
            topic: None,
            frame,
            direct: conns <= DIRECT_MAX,
        };
        if out.direct && conns > SPREAD_CHUNK {
            result.delivered += spread(
                state,
                item.connection_ids.iter(),
                m.user_id,
                &out,
                &mut result.gone,
            )
            .await;
            continue;
        }
        for conn in item.connection_ids.iter() {
            match state.hub.deliver(conn, Some(m.user_id), out.clone()) {
                Delivery::Queued => result.delivered += 1,
                // A malformed id cannot name a connection here, nor can a
                // connection of another user: gone too.
                Delivery::Gone => result.gone.extend(ConnId::new(conn).ok()),
                // Not gone: it is closed with 4008 and catches up from the
                // message store when it reconnects.
                Delivery::TooSlow => {}
            }
        }
    }
    state
        .metrics
        .deliveries
        .fetch_add(result.delivered, Ordering::Relaxed);
    state
        .metrics
        .push_gone
        .fetch_add(result.gone.len() as u64, Ordering::Relaxed);
    Ok((StatusCode::OK, axum::Json(result)).into_response())
}

/// Connections of one batch item beyond which its frames are only queued,
/// never written by the push path (see [`crate::socket`]). A direct write
/// saves the session's wake-up but costs a `writev` per frame; queued, the
/// frames of a large fan-out pile up behind it and each session writes
/// them several to a write. Measured (`scripts/bench --only fanout`, one
/// item to N connections, 50 times): at N = 19,000 the node used 5.31 s
/// of CPU with direct writes and 1.99 s queued; at N = 1,000, 0.17 s and
/// 0.19 s.
const DIRECT_MAX: usize = 4096;

/// Connections of one batch item beyond which its deliveries are shared
/// out. A delivery to an idle session is a socket write on the thread that
/// makes it (see [`crate::socket`]), so one message to 1,000 connections
/// would be 1,000 writes on the handler's thread: the item is cut in
/// pieces of this many, and the runtime's other workers take all but the
/// last.
const SPREAD_CHUNK: usize = 256;

/// Delivers `out` to the connections `ids` of `user` in pieces of
/// [`SPREAD_CHUNK`] on the runtime's workers; waits for every piece (so
/// that the batch's next item does not overtake this one on a
/// connection). Returns how many were delivered; gone ids go to `gone`.
async fn spread<'a>(
    state: &Arc<NodeState>,
    ids: impl Iterator<Item = &'a str>,
    user: &str,
    out: &Outbound,
    gone: &mut Vec<ConnId>,
) -> u64 {
    let mut pieces = Vec::new();
    let mut piece = Vec::with_capacity(SPREAD_CHUNK);
    for id in ids {
        match state.hub.get_of(id, Some(user)) {
            Some(conn) => piece.push(conn),
            None => gone.extend(ConnId::new(id).ok()),
        }
        if piece.len() == SPREAD_CHUNK {
            let piece = std::mem::replace(&mut piece, Vec::with_capacity(SPREAD_CHUNK));
            let (state, out) = (state.clone(), out.clone());
            pieces.push(tokio::spawn(
                async move { deliver_all(&state, &piece, &out) },
            ));
        }
    }
    let mut delivered = deliver_all(state, &piece, out);
    for handle in pieces {
        // A piece cannot panic short of a bug in the hub; its connections
        // are then counted as not delivered (they catch up on reconnect).
        delivered += handle.await.unwrap_or(0);
    }
    delivered
}

/// Delivers `out` to each of `conns`; returns how many took it.
fn deliver_all(state: &NodeState, conns: &[Arc<Conn>], out: &Outbound) -> u64 {
    let mut delivered = 0;
    for conn in conns {
        if state.hub.deliver_to(conn, out.clone()) == Delivery::Queued {
            delivered += 1;
        }
    }
    delivered
}

/// Frames of one push batch, written one after the other into shared
/// buffers of [`FRAME_ARENA`] bytes: one allocation (and one reference
/// count) serves every frame that fits, where a buffer per frame costs an
/// allocation per message of a unicast batch.
#[derive(Default)]
struct FrameArena {
    /// The current buffer's free part.
    free: bytes::BytesMut,
}

/// Size of a [`FrameArena`] buffer: ~35 frames of a 64-byte payload. A
/// frame still queued to a slow connection keeps its whole buffer alive,
/// so this bounds what one queued frame can hold (the send queue bounds
/// the frames).
const FRAME_ARENA: usize = 4096;

impl FrameArena {
    /// The `msg` frame of a stored message (`id` validated).
    fn frame(&mut self, seq: Seq, id: &str, data: &RawValue) -> Message {
        let len = protocol::msg_len_unchecked(seq, id, data);
        if self.free.capacity() - self.free.len() < len {
            self.free = bytes::BytesMut::with_capacity(FRAME_ARENA.max(len));
        }
        protocol::put_msg_unchecked(&mut self.free, seq, id, data);
        text_frame(self.free.split().freeze())
    }
}

/// A topic push: each item's frame is made once, only when the topic has
/// subscribers here, and queued to each of them (a reference-counted
/// clone); topics without any are reported `absent`.
fn topics(state: &NodeState, body: &[u8]) -> Result<Response, ApiError> {
    let batch: TopicPushBatchRef<'_> = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("topic batch body: {e}")))?;
    // Validate the whole batch first: a bad item refuses it before anything
    // is queued.
    for item in &batch.items {
        TopicName::validate_internal(item.topic)
            .map_err(|e| ApiError::BadRequest(format!("topic: {e}")))?;
        match (&item.message, &item.presence) {
            (Some(m), None) => {
                MessageId::validate(m.id)
                    .map_err(|e| ApiError::BadRequest(format!("message id: {e}")))?;
                if m.seq == 0 {
                    return Err(ApiError::BadRequest(
                        "a topic message's seq starts at 1".into(),
                    ));
                }
            }
            (None, Some(_)) => {}
            _ => {
                return Err(ApiError::BadRequest(
                    "each item carries exactly one of message and presence".into(),
                ));
            }
        }
    }
    let metrics = &state.metrics;
    let mut result = TopicPushResult::default();
    for item in &batch.items {
        Metrics::inc(&metrics.topic_items);
        let seq = item.message.as_ref().map_or(0, |m| m.seq);
        // Serialised once, and only when the topic has subscribers here.
        let encode = || match (&item.message, &item.presence) {
            (Some(m), _) => text_frame_from_string(protocol::topic_msg_text_unchecked(
                item.topic, m.seq, m.id, m.data,
            )),
            (None, Some(event)) => text_frame(protocol::encode_presence(item.topic, event)),
            (None, None) => text_frame(bytes::Bytes::new()),
        };
        let fanned = state
            .topics
            .fan_out(&state.hub, item.topic, seq, |topic| Outbound {
                seq,
                topic: Some(topic.clone()),
                frame: encode(),
                direct: false,
            });
        match fanned {
            Some(done) => {
                result.delivered += done.delivered;
            }
            None => {
                if let Ok(topic) = TopicName::parse_internal(item.topic)
                    && !result.absent.contains(&topic)
                {
                    result.absent.push(topic);
                }
            }
        }
    }
    metrics
        .topic_deliveries
        .fetch_add(result.delivered, Ordering::Relaxed);
    Ok((StatusCode::OK, axum::Json(result)).into_response())
}

/// The format of the push API's times: `2024-01-02T03:04:05.678Z` (UTC).
const ISO8601_MILLIS: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
);

/// `t` as `2024-01-02T03:04:05.678Z` (UTC).
pub(crate) fn iso8601(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(ISO8601_MILLIS)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_iso8601() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(iso8601(t), "2024-02-29T12:34:56.789Z");
    }

    #[test]
    fn routes_paths_under_any_stage() {
        assert!(matches!(
            route("/@connections/abc"),
            Some(Target::Connection("abc"))
        ));
        assert!(matches!(
            route("/prod/@connections/a%3D"),
            Some(Target::Connection("a%3D"))
        ));
        assert!(matches!(route("/prod/@batch"), Some(Target::Batch)));
        assert!(matches!(route("/prod/@topics"), Some(Target::Topics)));
        assert!(matches!(route("/@batch"), Some(Target::Batch)));
        assert!(route("/@connections/").is_none());
        assert!(route("/@connections/a/b").is_none());
        assert!(route("/other").is_none());
    }
}
