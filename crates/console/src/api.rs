//! The console's API, for the page only:
//!
//! | route | answer |
//! |---|---|
//! | `GET /console/api/config` | the nodes' URLs, the collect API key, whether topics exist |
//! | `GET /console/api/token?user=alice` | a dev token for `alice` (HS256, dev secret); 400 for a bad user id |
//! | `GET /console/api/nodes` | each node's pid, whether it answers, and its figures from `/metrics` |

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use edgepush_auth::{Claims, mint_hs256};
use serde::Serialize;
use serde_json::json;

use crate::ConsoleConfig;
use crate::metrics::{self, NodeFigures};

/// How long one node's `/metrics` may take before it counts as down.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct ApiState {
    config: Arc<ConsoleConfig>,
    http: reqwest::Client,
}

/// The API routes.
pub(crate) fn routes(config: Arc<ConsoleConfig>) -> Router {
    let http = reqwest::Client::builder()
        .timeout(SCRAPE_TIMEOUT)
        .build()
        .unwrap_or_default();
    Router::new()
        .route("/console/api/config", get(config_of))
        .route("/console/api/token", get(token))
        .route("/console/api/nodes", get(nodes))
        .with_state(ApiState { config, http })
}

async fn config_of(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let nodes: Vec<_> = state
        .config
        .nodes
        .iter()
        .map(|n| json!({"name": n.name, "ws": n.ws_url, "push": n.push_url}))
        .collect();
    Json(json!({
        "nodes": nodes,
        "collect": "/v1/messages",
        "api_key": state.config.api_key,
        "topics": state.config.topics,
    }))
}

async fn token(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let user = query.get("user").map(String::as_str).unwrap_or_default();
    if let Err(error) = edgepush_core::UserId::new(user) {
        let body =
            json!({"error": {"code": "bad_request", "message": format!("user {user:?}: {error}")}});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    let mut claims = Claims::new(user, state.config.token_ttl);
    if state.config.topics {
        // Dev mode: the page may subscribe to any topic of a configured
        // namespace (the nodes still refuse the others).
        claims.subscribe = vec!["*".to_owned()];
    }
    let exp = claims.exp;
    let token = mint_hs256(&state.config.jwt_secret, &claims);
    Json(json!({"token": token, "user": user, "exp": exp})).into_response()
}

/// One node as `/console/api/nodes` reports it.
#[derive(Debug, Serialize)]
struct NodeStatus {
    name: String,
    ws: String,
    /// The process id (`null` for a node inside the dev process, 0 while down).
    pid: Option<u32>,
    /// `/metrics` answered.
    up: bool,
    figures: Option<NodeFigures>,
    error: Option<String>,
}

async fn nodes(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let scrapes = state.config.nodes.iter().map(|node| {
        let http = state.http.clone();
        let url = format!("{}/metrics", node.push_url.trim_end_matches('/'));
        async move {
            let answer = match http.get(&url).send().await {
                Ok(response) if response.status().is_success() => response
                    .text()
                    .await
                    .map(|text| metrics::parse(&text))
                    .map_err(|e| e.to_string()),
                Ok(response) => Err(format!("HTTP {}", response.status())),
                Err(error) => Err(error.to_string()),
            };
            NodeStatus {
                name: node.name.clone(),
                ws: node.ws_url.clone(),
                pid: node.pid.as_ref().map(|p| p.load(Ordering::Relaxed)),
                up: answer.is_ok(),
                figures: answer.as_ref().ok().copied(),
                error: answer.err(),
            }
        }
    });
    let mut statuses = Vec::with_capacity(state.config.nodes.len());
    for scrape in scrapes {
        statuses.push(scrape.await);
    }
    Json(json!({"nodes": statuses}))
}
