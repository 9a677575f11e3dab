//! The console's routes on a real listener: the page and its bundle, the
//! config, dev tokens (and refusals), node figures from a real `/metrics`
//! endpoint and from a node that does not answer.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use axum::Router;
use axum::routing::get;
use edgepush_auth::{AuthConfig, JwtVerifier};
use edgepush_console::{ConsoleConfig, ConsoleNode, router};
use serde_json::Value;
use tokio::net::TcpListener;

const SECRET: &[u8] = b"a-test-secret-of-enough-bytes";

async fn serve(app: Router) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}"))
}

/// A node's push listener that answers `/metrics` only.
async fn metrics_node() -> anyhow::Result<String> {
    let text = "# TYPE edgepush_connections gauge\nedgepush_connections{node=\"n1\"} 2\n\
                edgepush_frames_written_total{node=\"n1\"} 40\n";
    serve(Router::new().route("/metrics", get(move || async move { text }))).await
}

/// A URL where nothing listens.
async fn nothing() -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(format!("http://{addr}"))
}

async fn console() -> anyhow::Result<String> {
    console_with(false).await
}

async fn console_with(topics: bool) -> anyhow::Result<String> {
    let config = ConsoleConfig {
        nodes: vec![
            ConsoleNode {
                name: "n1".into(),
                ws_url: "ws://127.0.0.1:1/ws".into(),
                push_url: metrics_node().await?,
                pid: None,
            },
            ConsoleNode {
                name: "n2".into(),
                ws_url: "ws://127.0.0.1:2/ws".into(),
                push_url: nothing().await?,
                pid: None,
            },
        ],
        api_key: "the-key".into(),
        jwt_secret: SECRET.to_vec(),
        token_ttl: Duration::from_secs(60),
        topics,
    };
    serve(router(config)).await
}

#[tokio::test]
async fn serves_the_page_and_the_client_bundle() -> anyhow::Result<()> {
    let base = console().await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let redirect = http.get(format!("{base}/console")).send().await?;
    ensure!(redirect.status() == 308, "{}", redirect.status());
    let page = http.get(format!("{base}/console/")).send().await?;
    ensure!(page.status() == 200);
    ensure!(page.text().await?.contains("edgepush <span>dev console"));
    let bundle = http
        .get(format!("{base}/console/edgepush.js"))
        .send()
        .await?;
    let content_type = bundle.headers()["content-type"].to_str()?.to_owned();
    ensure!(
        content_type.starts_with("text/javascript"),
        "{content_type}"
    );
    ensure!(bundle.text().await?.contains("EdgepushClient = class"));
    let missing = http.get(format!("{base}/console/nope.js")).send().await?;
    ensure!(missing.status() == 404, "{}", missing.status());
    Ok(())
}

#[tokio::test]
async fn config_names_the_nodes_and_the_key() -> anyhow::Result<()> {
    let base = console().await?;
    let config: Value = reqwest::get(format!("{base}/console/api/config"))
        .await?
        .json()
        .await?;
    ensure!(
        config["nodes"][0]["ws"] == "ws://127.0.0.1:1/ws",
        "{config}"
    );
    ensure!(config["nodes"].as_array().map(Vec::len) == Some(2));
    ensure!(config["api_key"] == "the-key" && config["topics"] == false);
    ensure!(config["collect"] == "/v1/messages");
    Ok(())
}

#[tokio::test]
async fn mints_tokens_the_nodes_accept_and_refuses_bad_users() -> anyhow::Result<()> {
    let base = console().await?;
    let answer: Value = reqwest::get(format!("{base}/console/api/token?user=alice"))
        .await?
        .json()
        .await?;
    let token = answer["token"].as_str().context("no token")?;
    let verifier = JwtVerifier::new(AuthConfig::hs256(SECRET.to_vec()))?;
    let identity = verifier.verify(token)?;
    ensure!(identity.user_id.as_str() == "alice");
    ensure!(identity.expires_at == answer["exp"].as_u64());
    ensure!(
        identity.subscribe.is_empty(),
        "no topics, no subscribe claim"
    );

    for query in ["", "?user=", "?user=a%20b", "?user=%C3%A9"] {
        let response = reqwest::get(format!("{base}/console/api/token{query}")).await?;
        ensure!(response.status() == 400, "{query}: {}", response.status());
        let body: Value = response.json().await?;
        ensure!(body["error"]["code"] == "bad_request", "{query}: {body}");
    }
    Ok(())
}

#[tokio::test]
async fn reports_each_nodes_figures_and_a_node_that_is_down() -> anyhow::Result<()> {
    let base = console().await?;
    let answer: Value = reqwest::get(format!("{base}/console/api/nodes"))
        .await?
        .json()
        .await?;
    let nodes = answer["nodes"].as_array().context("no nodes")?;
    ensure!(nodes[0]["up"] == true, "{answer}");
    ensure!(nodes[0]["figures"]["connections"] == 2, "{answer}");
    ensure!(
        nodes[0]["figures"]["frames_written_total"] == 40,
        "{answer}"
    );
    ensure!(nodes[0]["pid"].is_null());
    ensure!(
        nodes[1]["up"] == false && nodes[1]["figures"].is_null(),
        "{answer}"
    );
    ensure!(nodes[1]["error"].is_string(), "{answer}");
    Ok(())
}

#[tokio::test]
async fn with_topics_the_config_says_so_and_tokens_may_subscribe_to_any_topic() -> anyhow::Result<()>
{
    let base = console_with(true).await?;
    let config: Value = reqwest::get(format!("{base}/console/api/config"))
        .await?
        .json()
        .await?;
    ensure!(config["topics"] == true, "{config}");
    let answer: Value = reqwest::get(format!("{base}/console/api/token?user=alice"))
        .await?
        .json()
        .await?;
    let token = answer["token"].as_str().context("no token")?;
    let identity = JwtVerifier::new(AuthConfig::hs256(SECRET.to_vec()))?.verify(token)?;
    ensure!(identity.subscribe == ["*"], "{:?}", identity.subscribe);
    ensure!(identity.topics.is_empty() && identity.topic.is_none());
    Ok(())
}
