//! The handlers of an API Gateway WebSocket API's routes.
//!
//! | route | does | answers |
//! |---|---|---|
//! | `$connect` | identifies the user (authorizer context `userId`, else the token in `Authorization: Bearer` or `?token=`), refreshes the API's virtual node, records the route | `200`; `401` bad or missing token; `403` bad authorizer context; `400` malformed event; `503`/`500` store failure |
//! | `$disconnect` | removes the route | `200` (API Gateway ignores the answer) |
//! | `$default` (any message) | `{"type":"ack","seq":N}` records the ack when a message store is configured: coalesced (at most one write per connection per [`Settings::ack_interval`], the last one at `$disconnect`) and clipped by the store to the user's last stored seq | `200`; `400` for anything else |
//!
//! API Gateway refuses the WebSocket upgrade unless `$connect` answers 2xx,
//! so nothing is registered for a refused client.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::apigw::{
    ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest,
    ApiGatewayWebsocketProxyRequestContext,
};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::HeaderValue;
use aws_lambda_events::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use edgepush_core::protocol::{ClientFrame, ErrorBody};
use edgepush_core::{
    AuthError, ConnId, IdError, MessageStore, NodeDirectory, NodeId, RouteError, RouteStore,
    StoreError, TokenVerifier, UserId,
};
use lambda_runtime::LambdaEvent;

use crate::owners::{ConnectionOwners, DEFAULT_OWNER_TTL};

/// The key of the user id in the context a REQUEST authorizer returns
/// (`{"principalId": ..., "context": {"userId": "<user id>"}}`); API
/// Gateway passes it on as `requestContext.authorizer.userId` in every
/// event of the connection.
pub const AUTHORIZER_USER_ID_KEY: &str = "userId";

/// Node ids of API Gateway virtual nodes start with this.
pub const VIRTUAL_NODE_PREFIX: &str = "apigw-";

/// How long a virtual node's directory entry lives after the last
/// `$connect` by default. It must outlive every connection of the API (API
/// Gateway closes them after at most 2 hours), or dispatch would skip the
/// routes of live connections as routes of a dead node.
pub const DEFAULT_NODE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The shortest node TTL accepted: API Gateway's connection lifetime limit.
pub const MIN_NODE_TTL: Duration = Duration::from_secs(2 * 60 * 60);

/// Tunables of the handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Lifetime of a virtual node's directory entry, refreshed on every
    /// `$connect`; see [`DEFAULT_NODE_TTL`].
    pub node_ttl: Duration,
    /// Lifetime of a remembered connection owner; see
    /// [`crate::owners::DEFAULT_OWNER_TTL`].
    pub owner_ttl: Duration,
    /// The AWS region of the API (`AWS_REGION` in Lambda): needed to name the
    /// management endpoint when clients connect through a custom domain.
    pub region: Option<String>,
    /// At most one ack write per connection per this interval; the acks in
    /// between are coalesced (the highest wins), and the last one is written
    /// at `$disconnect`.
    pub ack_interval: Duration,
}

/// Default of [`Settings::ack_interval`].
pub const DEFAULT_ACK_INTERVAL: Duration = Duration::from_secs(1);

impl Default for Settings {
    fn default() -> Self {
        Self {
            node_ttl: DEFAULT_NODE_TTL,
            owner_ttl: DEFAULT_OWNER_TTL,
            region: None,
            ack_interval: DEFAULT_ACK_INTERVAL,
        }
    }
}

/// The handlers and what they run on (ports, so tests can choose the
/// backends).
#[derive(Clone)]
pub struct Connections {
    /// user -> connection -> node: where `$connect` records the route.
    pub routes: Arc<dyn RouteStore>,
    /// Where the API's virtual node says which management endpoint dispatch
    /// posts to.
    pub nodes: Arc<dyn NodeDirectory>,
    /// Connection -> user, for connections admitted without an authorizer.
    pub owners: Arc<dyn ConnectionOwners>,
    /// Verifies tokens in process when an event carries no authorizer
    /// context; `None` when only the authorizer admits clients.
    pub verifier: Option<Arc<dyn TokenVerifier>>,
    /// Records acks; `None` ignores them (they are advisory).
    pub messages: Option<Arc<dyn MessageStore>>,
    /// Tunables.
    pub settings: Settings,
}

/// A request the handlers refuse, with the answer it gets.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("{0}")]
    BadRequest(String),
    #[error("{1}")]
    Unauthorized(&'static str, String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl Refusal {
    fn from_auth(err: AuthError) -> Self {
        let message = err.to_string();
        match err {
            AuthError::Missing => Self::Unauthorized("missing_token", message),
            AuthError::Expired => Self::Unauthorized("token_expired", message),
            AuthError::NotYetValid => Self::Unauthorized("token_not_yet_valid", message),
            AuthError::Invalid(_) => Self::Unauthorized("invalid_token", message),
            AuthError::Unavailable(_) => Self::Unavailable(message),
        }
    }

    fn from_route(err: RouteError) -> Self {
        match err {
            RouteError::Unavailable(m) => Self::Unavailable(format!("route store: {m}")),
            RouteError::Backend(m) => Self::Internal(format!("route store: {m}")),
        }
    }

    fn from_store(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(m) | StoreError::Contention(m) => {
                Self::Unavailable(format!("message store: {m}"))
            }
            StoreError::Backend(m) => Self::Internal(format!("message store: {m}")),
        }
    }

    fn into_response(self) -> ApiGatewayProxyResponse {
        let (status, code) = match &self {
            Self::BadRequest(_) => (400, "bad_request"),
            Self::Unauthorized(code, _) => (401, *code),
            Self::Forbidden(_) => (403, "forbidden"),
            Self::Unavailable(_) => (503, "unavailable"),
            Self::Internal(_) => (500, "internal"),
        };
        // Internal details stay in the logs.
        let message = match &self {
            Self::Unavailable(_) => "temporarily unavailable; retry".to_owned(),
            Self::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        let mut response = json_response(status, &ErrorBody::new(code, message));
        if let Self::Unauthorized(..) = self {
            response
                .headers
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A response with `status` and no body.
fn empty_response(status: i64) -> ApiGatewayProxyResponse {
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = status;
    response
}

/// A response with `status` and `body` as JSON.
fn json_response(status: i64, body: &ErrorBody) -> ApiGatewayProxyResponse {
    let mut response = empty_response(status);
    // An ErrorBody is two strings: it always serialises.
    response.body = serde_json::to_string(body).ok().map(Body::Text);
    response
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Which handler an event is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Connect,
    Disconnect,
    Message,
}

fn route_of(ctx: &ApiGatewayWebsocketProxyRequestContext) -> Route {
    match (ctx.route_key.as_deref(), ctx.event_type.as_deref()) {
        (Some("$connect"), _) | (None, Some("CONNECT")) => Route::Connect,
        (Some("$disconnect"), _) | (None, Some("DISCONNECT")) => Route::Disconnect,
        // `$default` and any custom route: client messages.
        _ => Route::Message,
    }
}

/// The id of the virtual node standing for the stage `stage` of API
/// `api_id`: `apigw-<apiId>-<stage>`, or `apigw-<apiId>-<hash of stage>`
/// when that would be too long for a node id.
pub fn virtual_node_id(api_id: &str, stage: &str) -> Result<NodeId, IdError> {
    match NodeId::new(format!("{VIRTUAL_NODE_PREFIX}{api_id}-{stage}")) {
        Err(IdError::TooLong { .. }) => NodeId::new(format!(
            "{VIRTUAL_NODE_PREFIX}{api_id}-{:016x}",
            fnv1a(stage)
        )),
        other => other,
    }
}

/// FNV-1a, 64 bits: stable across builds and processes (unlike std's
/// hasher), so every instance names a long stage the same way.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The management API endpoint dispatch posts to for connections of this
/// API and stage: `https://<domainName>/<stage>` when clients connect to the
/// API's own `execute-api` domain, else (a custom domain) the `execute-api`
/// domain built from the API id and `region`. `None` when neither works.
pub fn management_endpoint(
    domain_name: Option<&str>,
    api_id: &str,
    stage: &str,
    region: Option<&str>,
) -> Option<String> {
    if let Some(domain) = domain_name.filter(|d| d.to_ascii_lowercase().contains(".execute-api.")) {
        return Some(format!("https://{domain}/{stage}"));
    }
    let region = region.filter(|r| !r.is_empty())?;
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    Some(format!(
        "https://{api_id}.execute-api.{region}.{suffix}/{stage}"
    ))
}

/// The user named by the authorizer context, if there is one.
fn authorizer_user(
    ctx: &ApiGatewayWebsocketProxyRequestContext,
) -> Result<Option<UserId>, Refusal> {
    match ctx.authorizer.fields.get(AUTHORIZER_USER_ID_KEY) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => UserId::new(s).map(Some).map_err(|e| {
            Refusal::Forbidden(format!(
                "authorizer context {AUTHORIZER_USER_ID_KEY} is not a valid user id: {e}"
            ))
        }),
        Some(_) => Err(Refusal::Forbidden(format!(
            "authorizer context {AUTHORIZER_USER_ID_KEY} is not a string"
        ))),
    }
}

/// The token of a `$connect` request: `Authorization: Bearer <jwt>`, else
/// `?token=<jwt>`.
fn token_of(event: &ApiGatewayWebsocketProxyRequest) -> Option<String> {
    let from_header = event
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(edgepush_core::bearer::bearer_token)
        .map(str::to_owned);
    from_header.or_else(|| {
        event
            .query_string_parameters
            .first("token")
            .map(str::to_owned)
            .filter(|t| !t.is_empty())
    })
}

fn conn_id(ctx: &ApiGatewayWebsocketProxyRequestContext) -> Result<ConnId, Refusal> {
    let raw = ctx
        .connection_id
        .as_deref()
        .ok_or_else(|| Refusal::BadRequest("the event has no connectionId".into()))?;
    ConnId::new(raw).map_err(|e| Refusal::BadRequest(format!("connectionId {raw:?}: {e}")))
}

impl Connections {
    /// Handles one event of any route. Never fails: every outcome is an
    /// answer for API Gateway, and failures are logged here.
    pub async fn handle(&self, event: &ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
        let ctx = &event.request_context;
        let route = route_of(ctx);
        let result = match route {
            Route::Connect => self.connect(event).await,
            Route::Disconnect => self.disconnect(ctx).await,
            Route::Message => self.message(event).await,
        };
        match result {
            Ok(response) => response,
            Err(refusal) => {
                let conn = ctx.connection_id.as_deref().unwrap_or("");
                match &refusal {
                    Refusal::Unavailable(_) | Refusal::Internal(_) => tracing::error!(
                        ?route,
                        conn,
                        error = %refusal,
                        "API Gateway event failed"
                    ),
                    _ => {
                        tracing::info!(?route, conn, reason = %refusal, "API Gateway event refused")
                    }
                }
                refusal.into_response()
            }
        }
    }

    /// `$connect`: identify, refresh the virtual node, record the route.
    async fn connect(
        &self,
        event: &ApiGatewayWebsocketProxyRequest,
    ) -> Result<ApiGatewayProxyResponse, Refusal> {
        let ctx = &event.request_context;
        let conn = conn_id(ctx)?;
        let (user, by_authorizer) = match authorizer_user(ctx)? {
            Some(user) => (user, true),
            None => (self.verify_token(event).await?, false),
        };
        let (node, endpoint) = self.virtual_node(ctx)?;

        self.nodes
            .heartbeat(&node, &endpoint, self.settings.node_ttl)
            .await
            .map_err(Refusal::from_route)?;
        if !by_authorizer {
            // Later events of this connection will not name the user.
            self.owners
                .remember(&conn, &user, self.settings.owner_ttl)
                .await
                .map_err(Refusal::from_route)?;
        }
        self.routes
            .add_route(&user, &conn, &node)
            .await
            .map_err(Refusal::from_route)?;
        tracing::info!(
            user = %user,
            conn = %conn,
            node = %node,
            by_authorizer,
            "API Gateway connection registered"
        );
        Ok(empty_response(200))
    }

    /// The user of a `$connect` without authorizer context, from its token.
    async fn verify_token(
        &self,
        event: &ApiGatewayWebsocketProxyRequest,
    ) -> Result<UserId, Refusal> {
        let Some(verifier) = &self.verifier else {
            tracing::warn!(
                "$connect without authorizer context and no in-process token verifier \
                 configured (set EDGEPUSH_JWT_* or attach the REQUEST authorizer)"
            );
            return Err(Refusal::Unauthorized(
                "missing_token",
                "no authorizer context".into(),
            ));
        };
        let token = token_of(event).ok_or(Refusal::from_auth(AuthError::Missing))?;
        let identity = verifier.verify(&token).await.map_err(Refusal::from_auth)?;
        Ok(identity.user_id)
    }

    /// The virtual node of the event's API and stage, and its management
    /// endpoint.
    fn virtual_node(
        &self,
        ctx: &ApiGatewayWebsocketProxyRequestContext,
    ) -> Result<(NodeId, String), Refusal> {
        let api_id = ctx
            .apiid
            .as_deref()
            .ok_or_else(|| Refusal::BadRequest("the event has no apiId".into()))?;
        let stage = ctx
            .stage
            .as_deref()
            .ok_or_else(|| Refusal::BadRequest("the event has no stage".into()))?;
        let node = virtual_node_id(api_id, stage)
            .map_err(|e| Refusal::BadRequest(format!("apiId/stage: {e}")))?;
        let endpoint = management_endpoint(
            ctx.domain_name.as_deref(),
            api_id,
            stage,
            self.settings.region.as_deref(),
        )
        .ok_or_else(|| {
            Refusal::Internal(format!(
                "cannot name the management endpoint of {:?} without a region (set AWS_REGION)",
                ctx.domain_name
            ))
        })?;
        Ok((node, endpoint))
    }

    /// The user holding the event's connection: the authorizer context's,
    /// else the remembered owner (`None` when unknown).
    async fn owner_of(
        &self,
        ctx: &ApiGatewayWebsocketProxyRequestContext,
        conn: &ConnId,
    ) -> Result<(Option<UserId>, bool), Refusal> {
        match authorizer_user(ctx) {
            Ok(Some(user)) => return Ok((Some(user), true)),
            Ok(None) => {}
            Err(refusal) => {
                tracing::warn!(conn = %conn, reason = %refusal, "ignoring the authorizer context")
            }
        }
        let owner = self.owners.owner(conn).await.map_err(Refusal::from_route)?;
        Ok((owner, false))
    }

    /// `$disconnect`: remove the route.
    async fn disconnect(
        &self,
        ctx: &ApiGatewayWebsocketProxyRequestContext,
    ) -> Result<ApiGatewayProxyResponse, Refusal> {
        let conn = conn_id(ctx)?;
        let (user, by_authorizer) = self.owner_of(ctx, &conn).await?;
        let Some(user) = user else {
            // The route, if any, goes on the first GoneException or with its TTL.
            tracing::info!(conn = %conn, "disconnect of a connection without a known owner");
            return Ok(empty_response(200));
        };
        self.routes
            .remove_routes(&[(user.clone(), conn.clone())])
            .await
            .map_err(Refusal::from_route)?;
        if let Some(messages) = &self.messages {
            // The last acks of a connection may wait behind the gate.
            match self.owners.take_pending_ack(&conn).await {
                Ok(Some(seq)) => {
                    if let Err(e) = messages.ack(&user, seq).await {
                        tracing::warn!(user = %user, conn = %conn, seq, error = %e, "could not record the last ack");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(conn = %conn, error = %e, "could not read the pending ack")
                }
            }
        }
        if !by_authorizer {
            self.owners
                .forget(&conn)
                .await
                .map_err(Refusal::from_route)?;
        }
        tracing::info!(
            user = %user,
            conn = %conn,
            status = ?ctx.disconnect_status_code,
            reason = ctx.disconnect_reason.as_deref().unwrap_or(""),
            "API Gateway connection removed"
        );
        Ok(empty_response(200))
    }

    /// `$default`: a client frame; only acks are defined.
    async fn message(
        &self,
        event: &ApiGatewayWebsocketProxyRequest,
    ) -> Result<ApiGatewayProxyResponse, Refusal> {
        if event.is_base64_encoded {
            return Err(Refusal::BadRequest(
                "binary frames are not part of the protocol".into(),
            ));
        }
        let text = event.body.as_deref().unwrap_or_default();
        let seq = match ClientFrame::parse(text) {
            Ok(ClientFrame::Ack { seq }) => seq,
            // Topics on the managed edge come with its resume work: until
            // then a topic frame is refused in words, never dropped.
            Ok(
                ClientFrame::Subscribe { .. }
                | ClientFrame::Unsubscribe { .. }
                | ClientFrame::Publish { .. },
            ) => {
                return Err(Refusal::BadRequest(
                    "topics are not available on API Gateway connections yet; connect to an edge node".into(),
                ));
            }
            Err(e) => return Err(Refusal::BadRequest(format!("unknown client frame: {e}"))),
        };
        let Some(messages) = &self.messages else {
            return Ok(empty_response(200));
        };
        let ctx = &event.request_context;
        let conn = conn_id(ctx)?;
        let (user, _) = self.owner_of(ctx, &conn).await?;
        let Some(user) = user else {
            tracing::warn!(conn = %conn, seq, "ack from a connection without a known owner; ignored");
            return Ok(empty_response(200));
        };
        let due = self
            .owners
            .throttle_ack(&conn, seq, self.settings.ack_interval)
            .await
            .map_err(Refusal::from_route)?;
        let Some(seq) = due else {
            tracing::debug!(user = %user, conn = %conn, seq, "ack coalesced");
            return Ok(empty_response(200));
        };
        let acked = messages
            .ack(&user, seq)
            .await
            .map_err(Refusal::from_store)?;
        tracing::debug!(user = %user, conn = %conn, seq, acked, "ack recorded");
        Ok(empty_response(200))
    }
}

/// The Lambda handler: [`Connections::handle`] on the event's payload.
pub async fn handler(
    connections: &Connections,
    event: LambdaEvent<ApiGatewayWebsocketProxyRequest>,
) -> Result<ApiGatewayProxyResponse, lambda_runtime::Error> {
    Ok(connections.handle(&event.payload).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_node_ids_fit_and_are_stable() {
        let node = virtual_node_id("a1b2c3d4e5", "prod").unwrap();
        assert_eq!(node.as_str(), "apigw-a1b2c3d4e5-prod");
        let long = "s".repeat(100);
        let a = virtual_node_id("a1b2c3d4e5", &long).unwrap();
        assert_eq!(a, virtual_node_id("a1b2c3d4e5", &long).unwrap());
        assert_ne!(a, virtual_node_id("a1b2c3d4e5", &"t".repeat(100)).unwrap());
        assert!(a.as_str().starts_with("apigw-a1b2c3d4e5-"));
        assert!(virtual_node_id("a b", "prod").is_err());
    }

    #[test]
    fn management_endpoints() {
        assert_eq!(
            management_endpoint(
                Some("a1.execute-api.eu-west-1.amazonaws.com"),
                "a1",
                "prod",
                None
            )
            .as_deref(),
            Some("https://a1.execute-api.eu-west-1.amazonaws.com/prod")
        );
        assert_eq!(
            management_endpoint(Some("ws.example.com"), "a1", "prod", Some("us-east-1")).as_deref(),
            Some("https://a1.execute-api.us-east-1.amazonaws.com/prod")
        );
        assert_eq!(
            management_endpoint(None, "a1", "dev", Some("cn-north-1")).as_deref(),
            Some("https://a1.execute-api.cn-north-1.amazonaws.com.cn/dev")
        );
        assert_eq!(
            management_endpoint(Some("ws.example.com"), "a1", "prod", None),
            None
        );
    }
}
