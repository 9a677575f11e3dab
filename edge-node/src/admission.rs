//! Admission: everything that can refuse a client before the upgrade.
//!
//! In order: the path, the method, the upgrade headers, a draining node,
//! a malformed `after`, the token, the connection caps, and the route store.
//! A refusal is an HTTP answer with a JSON error body ([`Refusal`]); nothing
//! stays registered for a refused client. On success the connection is in
//! the hub and its route in the route store, so a message stored from now on
//! reaches it live; where its stream starts is decided by the session (it
//! reads the user's position from the message store, which admission leaves
//! alone so that a slow store never holds up an upgrade).

use std::net::SocketAddr;
use std::sync::Arc;

use edgepush_core::topic::parse_resume;
use edgepush_core::{AuthError, ConnId, Identity, Seq, TopicName};

use crate::handshake::UpgradeRequest;
use crate::hub::{CapExceeded, Caps, Conn, ConnInit};
use crate::metrics::Metrics;
use crate::session::ServerSide;
use crate::state::NodeState;

/// A refusal answered before the upgrade.
#[derive(Debug)]
pub(crate) struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// Its reason phrase.
    pub reason: &'static str,
    /// The machine-readable `error.code`.
    pub code: &'static str,
    /// The human-readable `error.message`.
    pub message: String,
    /// Extra headers (`www-authenticate`, `retry-after`, ...).
    pub headers: &'static [(&'static str, &'static str)],
}

impl Refusal {
    pub(crate) fn new(
        status: u16,
        reason: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            reason,
            code,
            message: message.into(),
            headers: &[],
        }
    }

    fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            headers: &[("retry-after", "1")],
            ..Self::new(503, "Service Unavailable", code, message)
        }
    }

    fn from_auth(err: &AuthError) -> Self {
        let unauthorized = |code, msg: String| Refusal {
            headers: &[("www-authenticate", "Bearer")],
            ..Refusal::new(401, "Unauthorized", code, msg)
        };
        match err {
            AuthError::Missing => unauthorized("missing_token", err.to_string()),
            AuthError::Expired => unauthorized("token_expired", err.to_string()),
            AuthError::NotYetValid => unauthorized("token_not_yet_valid", err.to_string()),
            AuthError::Invalid(_) => unauthorized("invalid_token", err.to_string()),
            AuthError::Unavailable(_) => {
                Refusal::unavailable("unavailable", "token verification is unavailable; retry")
            }
        }
    }

    fn from_cap(cap: CapExceeded) -> Self {
        match cap {
            CapExceeded::Node(n) => Refusal::unavailable(
                "node_full",
                format!("this node holds its most connections ({n}); connect to another node"),
            ),
            CapExceeded::User(n) => Refusal {
                headers: &[("retry-after", "5")],
                ..Refusal::new(
                    429,
                    "Too Many Requests",
                    "too_many_connections",
                    format!("this user holds its most connections on this node ({n})"),
                )
            },
        }
    }
}

/// An admitted client.
pub(crate) struct Admitted {
    /// Its connection id (the push API's, and the `hello` frame's).
    pub conn_id: ConnId,
    /// Its place in the hub.
    pub conn: Arc<Conn>,
    /// Who its token speaks for, and until when.
    pub identity: Identity,
    /// The `after` it asked for; `None` starts from the user's acked seq.
    pub after: Option<Seq>,
    /// Its server-side subscriptions (joined and registered).
    pub server: ServerSide,
}

/// Admits the client of `req`, or says why not.
pub(crate) async fn admit(
    state: &Arc<NodeState>,
    req: &UpgradeRequest,
    peer: SocketAddr,
) -> Result<Admitted, Refusal> {
    if req.path != "/ws" {
        return Err(Refusal::new(
            404,
            "Not Found",
            "not_found",
            "the WebSocket endpoint is /ws",
        ));
    }
    if req.method != "GET" {
        return Err(Refusal::new(
            405,
            "Method Not Allowed",
            "method_not_allowed",
            "use GET",
        ));
    }
    if !req.is_websocket_upgrade() || req.ws_version.as_deref() != Some("13") {
        return Err(Refusal {
            headers: &[("upgrade", "websocket"), ("sec-websocket-version", "13")],
            ..Refusal::new(
                426,
                "Upgrade Required",
                "upgrade_required",
                "a WebSocket (version 13) upgrade is required",
            )
        });
    }
    if state.is_draining() {
        return Err(Refusal::unavailable(
            "draining",
            "node is draining; connect to another node",
        ));
    }
    let after = match req.query_after.as_deref() {
        None => None,
        Some(raw) => Some(raw.parse::<Seq>().map_err(|_| {
            Refusal::new(
                400,
                "Bad Request",
                "bad_request",
                "after must be an integer from 0 to 18446744073709551615",
            )
        })?),
    };
    let resume = match req.query_resume.as_deref() {
        None => Vec::new(),
        Some(raw) => parse_resume(raw).map_err(|e| {
            Refusal::new(
                400,
                "Bad Request",
                "bad_request",
                format!("resume must be topic~seq entries separated by commas: {e}"),
            )
        })?,
    };
    let token = req
        .token()
        .ok_or_else(|| Refusal::from_auth(&AuthError::Missing))?;
    let identity = state
        .deps
        .verifier
        .verify(token)
        .await
        .map_err(|e| Refusal::from_auth(&e))?;
    if identity.topic.is_some() {
        return Err(Refusal::from_auth(&AuthError::Invalid(
            "a subscribe token cannot open a connection".into(),
        )));
    }
    let mut server = server_side(state, &identity, resume);

    let conn_id = state.next_conn_id();
    let caps = Caps {
        node: state.config.max_connections,
        user: state.config.max_connections_per_user,
        queue: state.config.send_queue,
    };
    let init = ConnInit {
        user_id: identity.user_id.clone(),
        peer,
        user_agent: req.user_agent.as_deref().map(Box::from),
    };
    let conn = state
        .hub
        .insert(conn_id.clone(), init, caps)
        .map_err(|cap| {
            Metrics::inc(&state.metrics.connections_refused);
            Refusal::from_cap(cap)
        })?;
    // The token's topics join the index before their memberships (and the
    // route) are registered: from then on every message reaches the queue.
    for (topic, _) in &server.topics {
        state.join_topic(topic, &conn_id, &conn);
    }
    let mut registering: Vec<TopicName> = server.topics.iter().map(|(t, _)| t.clone()).collect();
    registering.push(TopicName::broadcast());
    let registered = match state.registrar.ensure(&state.topics, registering).await {
        Ok(()) => {
            state
                .deps
                .routes
                .add_route(&identity.user_id, &conn_id, &state.config.node_id)
                .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = registered {
        for (topic, _) in server.topics.drain(..) {
            state.leave_topic(&topic, &conn_id, &conn.user_id);
        }
        state.hub.remove(&conn_id);
        if state.hub.len() == 0 {
            state.registrar.release(TopicName::broadcast());
        }
        Metrics::inc(&state.metrics.errors);
        tracing::warn!(error = %e, "route store unavailable at connect");
        return Err(Refusal::unavailable(
            "unavailable",
            "route store unavailable; retry",
        ));
    }
    Ok(Admitted {
        conn_id,
        conn,
        identity,
        after,
        server,
    })
}

/// The server-side subscriptions of a connection (the rules are shared
/// with the managed edge: [`edgepush_core::subscriptions::server_side`]).
fn server_side(
    state: &NodeState,
    identity: &Identity,
    resume: Vec<(TopicName, Seq)>,
) -> ServerSide {
    edgepush_core::subscriptions::server_side(
        &identity.topics,
        &identity.subscribe,
        resume,
        &state.config.namespaces,
        state.config.max_subscriptions,
    )
}
