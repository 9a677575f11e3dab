//! The handlers of an API Gateway WebSocket API's routes.
//!
//! | route | does | answers |
//! |---|---|---|
//! | `$connect` | identifies the user (authorizer context `userId`, else the token in `Authorization: Bearer` or `?token=`), reads `?after=`, refreshes the API's virtual node, admits the connection under the per-user cap and records it ([`ConnectionRecords`]) | `200`; `400` bad `after` or malformed event; `401` bad or missing token; `403` bad authorizer context; `429` the user holds [`Settings::max_connections_per_user`] connections; `503`/`500` store failure |
//! | `$default` | a client frame ([`session`](crate::session)): `resume` starts the connection (`hello`, the route, the replay) or fills a gap, `ping` is answered with `pong`, `ack` is recorded; anything else closes the connection with 1008; a connection whose token expired is closed with 4001 | `200`; `400` bad frame; `503`/`500` store failure |
//! | `$disconnect` | removes the route and the record, writes the last pending ack | `200` (API Gateway ignores the answer) |
//!
//! API Gateway refuses the WebSocket upgrade unless `$connect` answers 2xx,
//! so nothing is recorded for a refused client. No route exists until the
//! first `resume`: API Gateway does not let a function post to a connection
//! before its `$connect` has returned, so the server waits for the client
//! to speak (see `docs/protocol.md`, "Managed edge").

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::apigw::{
    ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest,
    ApiGatewayWebsocketProxyRequestContext,
};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::HeaderValue;
use aws_lambda_events::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use bytes::Bytes;
use edgepush_core::managed::ManagedServerFrame;
use edgepush_core::protocol::ErrorBody;
use edgepush_core::{
    AuthError, ConnId, Identity, MessageStore, Namespaces, NodeDirectory, NodeId, RouteError,
    RouteStore, Seq, StoreError, TokenVerifier, TopicRoutes, TopicStore, UserId,
};
use edgepush_dispatch::{ConnectionPoster, PostToConnectionError};
use edgepush_redis::RedisRouteStore;

use crate::records::{Admission, ConnectionRecord, ConnectionRecords, DEFAULT_RECORD_TTL};

/// The key of the user id in the context a REQUEST authorizer returns
/// (`{"principalId": ..., "context": {"userId": "<user id>", "exp": <exp>}}`);
/// API Gateway passes it on as `requestContext.authorizer.userId` in every
/// event of the connection.
pub const AUTHORIZER_USER_ID_KEY: &str = "userId";

/// The key of the token's expiry (seconds since the Unix epoch, a number or
/// a numeric string) in the authorizer's context: the connection is closed
/// with 4001 then. Without it a connection admitted by the authorizer lives
/// until API Gateway ends it (2 hours at most).
pub const AUTHORIZER_EXP_KEY: &str = "exp";

pub use edgepush_dispatch::{VIRTUAL_NODE_PREFIX, virtual_node_id};

/// How long a virtual node's directory entry lives after the last
/// `$connect` by default. It must outlive every connection of the API (API
/// Gateway closes them after at most 2 hours), or dispatch would skip the
/// routes of live connections as routes of a dead node.
pub const DEFAULT_NODE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The shortest node TTL accepted: API Gateway's connection lifetime limit.
pub const MIN_NODE_TTL: Duration = Duration::from_secs(2 * 60 * 60);

/// Default of [`Settings::ack_interval`].
pub const DEFAULT_ACK_INTERVAL: Duration = Duration::from_secs(1);

/// Default of [`Settings::max_connections_per_user`]: the edge nodes'.
pub const DEFAULT_MAX_CONNECTIONS_PER_USER: usize = 64;

/// Default of [`Settings::replay_page`].
pub const DEFAULT_REPLAY_PAGE: usize = 100;

/// Default of [`Settings::max_subscriptions`]: the edge nodes'.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 128;

/// The key of the token's `subscribe` claim (topic patterns, as a JSON list
/// in a string: API Gateway passes only strings, numbers and booleans) in
/// the authorizer's context.
pub const AUTHORIZER_SUBSCRIBE_KEY: &str = "subscribe";

/// Tunables of the handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Lifetime of a virtual node's directory entry, refreshed on every
    /// `$connect`; see [`DEFAULT_NODE_TTL`].
    pub node_ttl: Duration,
    /// Lifetime of a connection's record; see
    /// [`crate::records::DEFAULT_RECORD_TTL`].
    pub record_ttl: Duration,
    /// The AWS region of the API (`AWS_REGION` in Lambda): needed to name the
    /// management endpoint when clients connect through a custom domain.
    pub region: Option<String>,
    /// At most one ack write per connection per this interval; the acks in
    /// between are coalesced (the highest wins), and the last one is written
    /// at `$disconnect`.
    pub ack_interval: Duration,
    /// Connections one user may hold on one API stage; `$connect` beyond it
    /// answers `429 too_many_connections` (`EDGEPUSH_MAX_CONNECTIONS_PER_USER`,
    /// as on edge nodes).
    pub max_connections_per_user: usize,
    /// Messages one `resume` replays (one MongoDB page, posted one by one);
    /// the client asks again for the rest (`resumed` with `more`). Small
    /// enough that a page is posted well within the function's timeout.
    pub replay_page: usize,
    /// Topic subscriptions one connection may hold
    /// (`EDGEPUSH_MAX_SUBSCRIPTIONS`, as on edge nodes).
    pub max_subscriptions: usize,
    /// The configured topic namespaces (`EDGEPUSH_TOPIC_NAMESPACES`).
    pub namespaces: Namespaces,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            node_ttl: DEFAULT_NODE_TTL,
            record_ttl: DEFAULT_RECORD_TTL,
            region: None,
            ack_interval: DEFAULT_ACK_INTERVAL,
            max_connections_per_user: DEFAULT_MAX_CONNECTIONS_PER_USER,
            replay_page: DEFAULT_REPLAY_PAGE,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            namespaces: Namespaces::default(),
        }
    }
}

/// The handlers and what they run on (ports, so tests can choose the
/// backends).
#[derive(Clone)]
pub struct Connections {
    /// user -> connection -> node: where the first `resume` records the
    /// route dispatch posts to.
    pub routes: Arc<dyn RouteStore>,
    /// Where the API's virtual node says which management endpoint dispatch
    /// posts to.
    pub nodes: Arc<dyn NodeDirectory>,
    /// Each connection's record, the per-user cap and the sweep index.
    pub records: Arc<dyn ConnectionRecords>,
    /// Verifies tokens in process when an event carries no authorizer
    /// context; `None` when only the authorizer admits clients.
    pub verifier: Option<Arc<dyn TokenVerifier>>,
    /// Replays and acks.
    pub messages: Arc<dyn MessageStore>,
    /// Posts replies and replays to connections, and closes them (the
    /// management API).
    pub poster: Arc<dyn ConnectionPoster>,
    /// Topic messages: replays after a subscription's `after`.
    pub topics: Arc<dyn TopicStore>,
    /// Topic memberships: a subscription makes the connection's virtual
    /// node a member, so topic fan-out reaches it.
    pub topic_routes: Arc<dyn TopicRoutes>,
    /// The connections' topic subscriptions (Redis, read by dispatch).
    pub subscriptions: Arc<RedisRouteStore>,
    /// Tunables.
    pub settings: Settings,
}

/// A request the handlers refuse, with the answer it gets.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("{0}")]
    BadRequest(String),
    #[error("{1}")]
    Unauthorized(&'static str, String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    TooMany(String),
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

    pub(crate) fn from_route(err: RouteError) -> Self {
        match err {
            RouteError::Unavailable(m) => Self::Unavailable(format!("route store: {m}")),
            RouteError::Backend(m) => Self::Internal(format!("route store: {m}")),
        }
    }

    pub(crate) fn from_store(err: StoreError) -> Self {
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
            Self::TooMany(_) => (429, "too_many_connections"),
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
        match self {
            Self::Unauthorized(..) => {
                response
                    .headers
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::TooMany(_) => {
                response
                    .headers
                    .insert("retry-after", HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}

/// A response with `status` and no body.
pub(crate) fn empty_response(status: i64) -> ApiGatewayProxyResponse {
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

/// The token expiry the authorizer context names, if any (API Gateway may
/// pass context numbers as strings).
fn authorizer_exp(ctx: &ApiGatewayWebsocketProxyRequestContext) -> Result<Option<u64>, Refusal> {
    let bad = || {
        Refusal::Forbidden(format!(
            "authorizer context {AUTHORIZER_EXP_KEY} is not a time"
        ))
    };
    match ctx.authorizer.fields.get(AUTHORIZER_EXP_KEY) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n.as_u64().map(Some).ok_or_else(bad),
        Some(serde_json::Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// The token's `subscribe` patterns the authorizer context names (a JSON
/// list, in a string or as is); none when absent.
fn authorizer_subscribe(
    ctx: &ApiGatewayWebsocketProxyRequestContext,
) -> Result<Vec<String>, Refusal> {
    let bad = || {
        Refusal::Forbidden(format!(
            "authorizer context {AUTHORIZER_SUBSCRIBE_KEY} is not a list of patterns"
        ))
    };
    match ctx.authorizer.fields.get(AUTHORIZER_SUBSCRIBE_KEY) {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::String(s)) => serde_json::from_str(s).map_err(|_| bad()),
        Some(other) => serde_json::from_value(other.clone()).map_err(|_| bad()),
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

/// The `?after=` of a `$connect` request.
fn after_of(event: &ApiGatewayWebsocketProxyRequest) -> Result<Option<Seq>, Refusal> {
    match event.query_string_parameters.first("after") {
        None => Ok(None),
        Some(raw) => raw.parse::<Seq>().map(Some).map_err(|_| {
            Refusal::BadRequest(format!("after must be a non-negative integer, got {raw:?}"))
        }),
    }
}

pub(crate) fn conn_id(ctx: &ApiGatewayWebsocketProxyRequestContext) -> Result<ConnId, Refusal> {
    let raw = ctx
        .connection_id
        .as_deref()
        .ok_or_else(|| Refusal::BadRequest("the event has no connectionId".into()))?;
    ConnId::new(raw).map_err(|e| Refusal::BadRequest(format!("connectionId {raw:?}: {e}")))
}

/// What a post to a connection came to.
#[derive(Debug)]
pub(crate) enum Posted {
    /// API Gateway took it.
    Sent,
    /// The connection is gone.
    Gone,
}

impl Connections {
    /// Handles one event of any route. Never fails: every outcome is an
    /// answer for API Gateway, and failures are logged here.
    pub async fn handle(&self, event: &ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
        self.handle_until(event, None).await
    }

    /// [`handle`](Self::handle), with the invocation's deadline
    /// (milliseconds since the Unix epoch): a replay stops early enough to
    /// answer before it.
    pub async fn handle_until(
        &self,
        event: &ApiGatewayWebsocketProxyRequest,
        deadline_ms: Option<i64>,
    ) -> ApiGatewayProxyResponse {
        let ctx = &event.request_context;
        let route = route_of(ctx);
        let result = match route {
            Route::Connect => self.connect(event).await,
            Route::Disconnect => self.disconnect(ctx).await,
            Route::Message => self.message(event, deadline_ms).await,
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

    /// `$connect`: identify, read `after`, refresh the virtual node, admit.
    async fn connect(
        &self,
        event: &ApiGatewayWebsocketProxyRequest,
    ) -> Result<ApiGatewayProxyResponse, Refusal> {
        let ctx = &event.request_context;
        let conn = conn_id(ctx)?;
        let (user, expires_at, subscribe, by_authorizer) = match authorizer_user(ctx)? {
            Some(user) => (user, authorizer_exp(ctx)?, authorizer_subscribe(ctx)?, true),
            None => {
                let identity = self.verify_token(event).await?;
                (
                    identity.user_id,
                    identity.expires_at,
                    identity.subscribe,
                    false,
                )
            }
        };
        let after = after_of(event)?;
        let (node, endpoint) = self.virtual_node(ctx)?;
        let now = edgepush_core::message::now_ms();
        let record = ConnectionRecord {
            user,
            node,
            expires_at,
            after,
            // This function's clock, not the event's `connectedAt`: the
            // cap and the sweep compare it with this clock.
            connected_at_ms: now,
            started: false,
            subscribe,
        };
        if record.expired(now) {
            return Err(Refusal::from_auth(AuthError::Expired));
        }

        self.nodes
            .heartbeat(&record.node, &endpoint, self.settings.node_ttl)
            .await
            .map_err(Refusal::from_route)?;
        let admission = self
            .records
            .admit(
                &conn,
                &record,
                self.settings.max_connections_per_user,
                self.settings.record_ttl,
            )
            .await
            .map_err(Refusal::from_route)?;
        if let Admission::Full(held) = admission {
            return Err(Refusal::TooMany(format!(
                "this user holds its most connections on this API stage ({held})"
            )));
        }
        tracing::info!(
            user = %record.user,
            conn = %conn,
            node = %record.node,
            by_authorizer,
            after = ?record.after,
            expires_at = ?record.expires_at,
            "API Gateway connection admitted; waiting for its resume"
        );
        Ok(empty_response(200))
    }

    /// The identity of a `$connect` without authorizer context, from its
    /// token.
    async fn verify_token(
        &self,
        event: &ApiGatewayWebsocketProxyRequest,
    ) -> Result<Identity, Refusal> {
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
        if identity.topic.is_some() {
            return Err(Refusal::Unauthorized(
                "invalid_token",
                "a subscribe token cannot open a connection".into(),
            ));
        }
        Ok(identity)
    }

    /// The virtual node of the event's API and stage, and its management
    /// endpoint.
    pub(crate) fn virtual_node(
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

    /// The record of the event's connection, and the user holding it: the
    /// authorizer context's, else the record's (`None` when unknown).
    pub(crate) async fn owner_of(
        &self,
        ctx: &ApiGatewayWebsocketProxyRequestContext,
        conn: &ConnId,
    ) -> Result<(Option<UserId>, Option<ConnectionRecord>), Refusal> {
        let record = self
            .records
            .record(conn)
            .await
            .map_err(Refusal::from_route)?;
        let user = match authorizer_user(ctx) {
            Ok(Some(user)) => Some(user),
            Ok(None) => None,
            Err(refusal) => {
                tracing::warn!(conn = %conn, reason = %refusal, "ignoring the authorizer context");
                None
            }
        };
        Ok((
            user.or_else(|| record.as_ref().map(|r| r.user.clone())),
            record,
        ))
    }

    /// `$disconnect`: remove the route and the record, write the last ack.
    async fn disconnect(
        &self,
        ctx: &ApiGatewayWebsocketProxyRequestContext,
    ) -> Result<ApiGatewayProxyResponse, Refusal> {
        let conn = conn_id(ctx)?;
        let (user, record) = self.owner_of(ctx, &conn).await?;
        let Some(user) = user else {
            // The route, if any, goes on the first GoneException or with its TTL.
            tracing::info!(conn = %conn, "disconnect of a connection without a known owner");
            return Ok(empty_response(200));
        };
        self.forget(&user, &conn, record.as_ref()).await?;
        tracing::info!(
            user = %user,
            conn = %conn,
            status = ?ctx.disconnect_status_code,
            reason = ctx.disconnect_reason.as_deref().unwrap_or(""),
            "API Gateway connection removed"
        );
        Ok(empty_response(200))
    }

    /// Removes everything of `conn`: its route, its pending ack (written),
    /// its record and its places in the indexes.
    pub(crate) async fn forget(
        &self,
        user: &UserId,
        conn: &ConnId,
        record: Option<&ConnectionRecord>,
    ) -> Result<(), Refusal> {
        self.routes
            .remove_routes(&[(user.clone(), conn.clone())])
            .await
            .map_err(Refusal::from_route)?;
        // The last acks of a connection may wait behind the gate.
        match self.records.take_pending_ack(conn).await {
            Ok(Some(seq)) => {
                if let Err(e) = self.messages.ack(user, seq).await {
                    tracing::warn!(user = %user, conn = %conn, seq, error = %e, "could not record the last ack");
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(conn = %conn, error = %e, "could not read the pending ack")
            }
        }
        if let Some(record) = record {
            self.subscriptions
                .managed_forget(&record.node, conn)
                .await
                .map_err(Refusal::from_route)?;
            self.records
                .forget(conn, record)
                .await
                .map_err(Refusal::from_route)?;
        }
        Ok(())
    }

    /// Posts `data` to `conn`.
    pub(crate) async fn post(
        &self,
        endpoint: &str,
        conn: &ConnId,
        data: Bytes,
    ) -> Result<Posted, PostToConnectionError> {
        match self.poster.post_to_connection(endpoint, conn, data).await {
            Ok(()) => Ok(Posted::Sent),
            Err(PostToConnectionError::Gone) => Ok(Posted::Gone),
            Err(e) => Err(e),
        }
    }

    /// Ends `conn` as an edge node would close it with `code`: posts
    /// `{"type":"close","code":...}` (API Gateway cannot send a close code
    /// of ours), then closes the connection. Best effort: failures are
    /// logged; `$disconnect` or the sweep cleans up after it.
    pub(crate) async fn close(&self, endpoint: &str, conn: &ConnId, code: u16, reason: &str) {
        let frame = ManagedServerFrame::Close {
            code,
            reason: reason.to_owned(),
        };
        match self
            .post(endpoint, conn, Bytes::from(frame.to_text()))
            .await
        {
            Ok(Posted::Gone) => return,
            Ok(Posted::Sent) => {}
            Err(e) => {
                tracing::warn!(conn = %conn, code, error = %e, "could not post the close frame")
            }
        }
        match self.poster.delete_connection(endpoint, conn).await {
            Ok(()) | Err(PostToConnectionError::Gone) => {}
            Err(e) => {
                tracing::warn!(conn = %conn, code, error = %e, "could not close the connection")
            }
        }
        tracing::info!(conn = %conn, code, reason, "API Gateway connection closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn authorizer_expiry_comes_as_a_number_or_a_string() {
        let ctx = |exp: serde_json::Value| {
            let mut ctx = ApiGatewayWebsocketProxyRequestContext::default();
            ctx.authorizer
                .fields
                .insert(AUTHORIZER_EXP_KEY.to_owned(), exp);
            ctx
        };
        assert_eq!(
            authorizer_exp(&ctx(serde_json::json!(1_700_000_000))).unwrap(),
            Some(1_700_000_000)
        );
        assert_eq!(
            authorizer_exp(&ctx(serde_json::json!("1700000000"))).unwrap(),
            Some(1_700_000_000)
        );
        assert_eq!(
            authorizer_exp(&ApiGatewayWebsocketProxyRequestContext::default()).unwrap(),
            None
        );
        for bad in [
            serde_json::json!(-1),
            serde_json::json!("soon"),
            serde_json::json!(1.5),
            serde_json::json!([1]),
        ] {
            assert!(authorizer_exp(&ctx(bad.clone())).is_err(), "{bad}");
        }
    }
}
