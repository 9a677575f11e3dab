//! Dev mode in the test process: the whole system on ephemeral ports with
//! in-memory stores, used the way a newcomer would.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use edgepush_dev::{self as dev, DevConfig};
use edgepush_tests::WsClient;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_delivers_a_collected_message() -> anyhow::Result<()> {
    let system = dev::start(DevConfig {
        redis_url: None,
        mongodb_uri: None,
        collect_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ws_ports: [0, 0],
        push_ports: [0, 0],
        ..DevConfig::default()
    })
    .await?;
    ensure!(
        system.ws_addrs.len() == 2,
        "dev mode runs {} nodes",
        system.ws_addrs.len()
    );
    ensure!(
        system.banner().contains(&system.collect_addr.to_string()),
        "the banner does not name collect"
    );

    let token = dev::mint_token(
        dev::DEV_JWT_SECRET.as_bytes(),
        "alice",
        Duration::from_secs(600),
    )?;
    let mut on_first =
        WsClient::connect(&format!("ws://{}/ws", system.ws_addrs[0]), &token).await?;
    let mut on_second =
        WsClient::connect(&format!("ws://{}/ws", system.ws_addrs[1]), &token).await?;
    ensure!(
        on_first.user_id == "alice",
        "hello for {}",
        on_first.user_id
    );

    let http = reqwest::Client::new();
    let response = http
        .post(format!("http://{}/v1/messages", system.collect_addr))
        .bearer_auth(dev::DEV_API_KEY)
        .json(&json!({ "to": ["alice"], "data": { "text": "hello" } }))
        .send()
        .await?;
    ensure!(
        response.status().as_u16() == 202,
        "collect answered {}",
        response.status()
    );
    let receipt: serde_json::Value = response.json().await?;
    let id = receipt["messages"][0]["id"]
        .as_str()
        .context("no message id in the receipt")?
        .to_owned();

    for client in [&mut on_first, &mut on_second] {
        let msgs = client.collect_msgs(1, Duration::from_secs(20)).await?;
        ensure!(
            msgs[0].seq == 1
                && msgs[0].id.as_str() == id
                && msgs[0].data == json!({ "text": "hello" }),
            "got {:?}",
            msgs[0]
        );
        client.expect_silence(Duration::from_millis(300)).await?;
    }
    drop((on_first, on_second));
    system.stop().await
}

#[tokio::test]
async fn node_processes_need_real_stores() -> anyhow::Result<()> {
    let refused = dev::start(DevConfig {
        collect_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ws_ports: [0, 0],
        push_ports: [0, 0],
        node_processes: Some(std::path::PathBuf::from("edge-node")),
        ..DevConfig::default()
    })
    .await;
    match refused {
        Ok(system) => {
            system.stop().await?;
            anyhow::bail!("dev mode started node processes without Redis and MongoDB")
        }
        Err(error) => ensure!(
            error.to_string().contains("REDIS_URL and MONGODB_URI"),
            "{error}"
        ),
    }
    Ok(())
}
