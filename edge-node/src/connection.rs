//! One client connection, from the accepted socket to its last route.
//!
//! [`serve`] reads the upgrade request ([`crate::handshake`]), admits the
//! client or answers why not ([`crate::admission`]), answers `101`, runs the
//! [`Session`] until it ends, sends the close frame the ending calls for, and
//! forgets the connection: out of the hub, and out of the route store unless
//! the node is draining (the drain removes every route at once).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use edgepush_core::ConnId;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use crate::admission::{self, Admitted, Refusal};
use crate::handshake::{self, HandshakeError};
use crate::hub::Conn;
use crate::metrics::Metrics;
use crate::session::{End, Session, WRITE_TIMED_OUT, Ws};
use crate::socket::Socket;
use crate::state::NodeState;

/// How long the closing handshake may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves one accepted TCP connection until it closes.
///
/// Two phases, so that the task that lives as long as the connection holds
/// only what the session needs: the upgrade (request head, token, admission,
/// `101`) runs in a boxed future that is freed once the session starts.
/// Its locals (the request's strings, the socket before it is a WebSocket,
/// the identity) would otherwise take space in the task for its whole life,
/// because a value kept across several awaits of one async fn gets its own
/// place in the future's state, beside everything else that does.
pub(crate) async fn serve(state: Arc<NodeState>, stream: TcpStream, peer: SocketAddr) {
    let Some(Upgraded {
        ws,
        session,
        conn_id,
        conn,
    }) = Box::pin(upgrade(&state, stream, peer)).await
    else {
        return;
    };
    live(state, ws, session, conn_id, conn).await;
}

/// An upgraded connection, ready for its session.
struct Upgraded {
    ws: Ws,
    session: Session,
    conn_id: ConnId,
    conn: Arc<Conn>,
}

/// Reads the upgrade request, admits the client or answers why not, answers
/// `101`: `None` when the connection ended there.
async fn upgrade(
    state: &Arc<NodeState>,
    mut stream: TcpStream,
    peer: SocketAddr,
) -> Option<Upgraded> {
    let _ = stream.set_nodelay(true);
    let read = timeout(
        state.config.handshake_timeout,
        handshake::read_request(&mut stream),
    )
    .await;
    let (mut req, rest) = match read {
        Ok(Ok(parsed)) => parsed,
        Ok(Err(HandshakeError::Io(_))) | Err(_) => {
            Metrics::inc(&state.metrics.handshake_failed);
            return None;
        }
        Ok(Err(err)) => {
            Metrics::inc(&state.metrics.handshake_failed);
            let refusal = match err {
                HandshakeError::TooLarge => Refusal::new(
                    431,
                    "Request Header Fields Too Large",
                    "bad_request",
                    "request head too large",
                ),
                other => Refusal::new(400, "Bad Request", "bad_request", other.to_string()),
            };
            refuse(&mut stream, &refusal).await;
            return None;
        }
    };

    let Admitted {
        conn_id,
        conn,
        identity,
        after,
        server,
    } = match admission::admit(state, &req, peer).await {
        Ok(admitted) => admitted,
        Err(refusal) => {
            if refusal.status == 401 {
                Metrics::inc(&state.metrics.handshake_unauthorized);
            } else {
                Metrics::inc(&state.metrics.handshake_failed);
            }
            tracing::debug!(%peer, status = refusal.status, code = refusal.code, "upgrade refused");
            refuse(&mut stream, &refusal).await;
            return None;
        }
    };

    let key = req.ws_key.take().unwrap_or_default();
    drop(req);
    if handshake::write_switching(&mut stream, &key).await.is_err() {
        for (topic, _) in &server.topics {
            state.leave_topic(topic, &conn_id, &conn.user_id);
        }
        finish(state, &conn_id, &conn).await;
        return None;
    }
    state.metrics.connections.fetch_add(1, Ordering::Relaxed);
    Metrics::inc(&state.metrics.connections_total);
    state
        .presence
        .opened(&conn_id, &conn.user_id, edgepush_core::message::now_ms());
    tracing::debug!(%peer, conn = %conn_id, user = %conn.user_id, ?after, "connected");

    if conn.attach(stream).is_err() {
        // Cannot happen: a connection is upgraded once.
        Metrics::inc(&state.metrics.errors);
        finish(state, &conn_id, &conn).await;
        return None;
    }
    let socket = Socket::new(conn.clone());
    let ws =
        WebSocketStream::from_partially_read(socket, rest, Role::Server, Some(state.ws_config))
            .await;
    let session = Session::new(
        state.clone(),
        conn_id.clone(),
        conn.clone(),
        &identity,
        after,
        server,
    );
    Some(Upgraded {
        ws,
        session,
        conn_id,
        conn,
    })
}

/// Runs the session of an upgraded connection, closes it the way its end
/// calls for, and forgets it.
///
/// Not an `async fn`: an async fn's arguments and the bindings its body
/// uses are separate places in its future (measured: 2,744 B against 2,016
/// B for this async block, which holds each part once). The parts come as
/// separate arguments for the same reason: passing the whole [`Upgraded`]
/// and taking it apart before the block made the task 2,528 B instead of
/// 2,104 B (`alloc-count`, the task's `size_of_val`).
#[allow(clippy::manual_async_fn)]
fn live(
    state: Arc<NodeState>,
    mut ws: Ws,
    mut session: Session,
    conn_id: ConnId,
    conn: Arc<Conn>,
) -> impl Future<Output = ()> {
    async move {
        let end = session.run(&mut ws).await;
        session.leave_all();
        drop(session);
        if let End::Close(_, WRITE_TIMED_OUT) = end {
            // Queue overflows are counted by the hub when they happen.
            Metrics::inc(&state.metrics.slow_clients);
        }
        if let End::Close(code, reason) = end {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: Utf8Bytes::from_static(reason),
            };
            let _ = timeout(CLOSE_TIMEOUT, ws.close(Some(frame))).await;
        }
        state.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        state.presence.closed(&conn_id, &conn.user_id);
        finish(&state, &conn_id, &conn).await;
        tracing::debug!(conn = %conn_id, ?end, "closed");
    }
}

/// Answers `refusal` and closes.
async fn refuse(stream: &mut TcpStream, refusal: &Refusal) {
    let _ = handshake::write_error(
        stream,
        refusal.status,
        refusal.reason,
        refusal.code,
        &refusal.message,
        refusal.headers,
    )
    .await;
}

/// Forgets a connection: out of the hub, and out of the route store unless
/// the node is draining (then the drain removes every route in one go).
/// The node's broadcast membership goes with its last connection.
async fn finish(state: &NodeState, conn_id: &ConnId, conn: &Conn) {
    state.hub.remove(conn_id);
    if state.is_draining() {
        return;
    }
    if state.hub.len() == 0 {
        state
            .registrar
            .release(edgepush_core::TopicName::broadcast());
    }
    let route = [(conn.user_id.clone(), conn_id.clone())];
    if let Err(e) = state.deps.routes.remove_routes(&route).await {
        Metrics::inc(&state.metrics.errors);
        tracing::warn!(conn = %conn_id, error = %e, "could not remove route; it expires or is dropped as gone");
    }
}
