//! Click → working URL through the golem backend (run offline: scripts/bench.sh golem): a local
//! Golem network, one provider running `erigolem-provider run`, and `erigolem serve --backend golem`
//! in process. Ten nodes one after another; each is broken into market, agreement, activity and
//! runtime phases (from the backend's record in the store) plus the rest (REST, reconciler, first
//! RPC call).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use erigolem_client::{Client, CreateNode, Wallet};
use erigolem_server::backend::golem::GolemConfig;
use erigolem_server::{BackendConfig, ServerConfig};
use erigolem_test_utils::bench::{ms, percentile};
use erigolem_test_utils::golem::{start_provider_agent, GolemNet, GolemNetConfig};
use erigolem_test_utils::wallet::DEV_KEY_0;
use erigolem_test_utils::{rpc, Provider};
use serde_json::{json, Value};

const RUNS: usize = 10;
const SUBNET: &str = "erigolem-bench";

#[tokio::main]
async fn main() {
    let net = GolemNet::spawn(GolemNetConfig::test()).await.unwrap();
    let machine = Provider::start(2, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = start_provider_agent(
        net.provider(0),
        &machine,
        &dir.path().join("agent"),
        SUBNET,
        &["--price-per-hour", "0.36"],
    );
    let r = net.requestor(0);
    let mut golem = GolemConfig::new(r.api_url.parse().unwrap(), r.app_key.clone());
    golem.subnet = SUBNET.into();
    let mut config = ServerConfig::test(dir.path().join("server"));
    config.backend = Some(BackendConfig::Golem(golem.clone()));
    config.rate_limit = std::num::NonZeroU32::new(100_000).unwrap();
    let server = erigolem_server::spawn(config).await.unwrap();
    let data = dir.path().join("server");
    let store = erigolem_store::Store::connect(
        &format!("sqlite://{}?mode=rwc", data.join("erigolem.db").display()),
        erigolem_store::KeyFile::load_or_create(data.join("secret.key")).unwrap(),
    )
    .await
    .unwrap();
    let mut client = Client::new(&server.url());
    client
        .sign_in(&Wallet::from_hex(DEV_KEY_0).unwrap(), 1)
        .await
        .unwrap();

    let mut rows: Vec<[Duration; 5]> = Vec::new();
    for i in 0..RUNS {
        let clicked = Instant::now();
        let node = client
            .create(&CreateNode {
                name: Some(format!("bench-{i}")),
                ..CreateNode::new(erigolem_api::Network::Dev)
            })
            .await
            .unwrap();
        let running = loop {
            let n = client.node(&node.id).await.unwrap();
            assert_ne!(n.state, erigolem_api::NodeState::Failed, "{:?}", n.reason);
            if n.state == erigolem_api::NodeState::Running {
                break n;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let auth = running.auth.clone().unwrap();
        rpc(
            running.url.as_deref().unwrap(),
            Some((&auth.user, &auth.password)),
            "eth_blockNumber",
            json!([]),
        )
        .await
        .unwrap();
        let total = clicked.elapsed();
        // The backend's record of the start, from the store (a second reader of the SQLite file).
        let deals = store.node_deals(&node.id).await.unwrap();
        let t: Value = deals[0].start_ms.clone().unwrap();
        let at = |k: &str| Duration::from_millis(t[k].as_u64().unwrap());
        rows.push([
            at("first_offer"),
            at("agreement"),
            at("activity"),
            at("runtime"),
            total,
        ]);
        client.stop(&node.id).await.unwrap();
        loop {
            if client.node(&node.id).await.unwrap().state == erigolem_api::NodeState::Stopped {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    println!("## click → working URL through the golem backend (local Golem network, n={RUNS})\n");
    println!(
        "offer window (waiting for cheaper answers after the first): {} ms\n",
        golem.offer_window.as_millis()
    );
    println!("| step (cumulative from the demand, last row from the click) | median ms | max ms |\n|---|---:|---:|");
    let names = [
        "market: first offer seen",
        "agreement approved (incl. the offer window)",
        "activity created",
        "runtime: deploy + start + STATUS done",
        "click → URL answers eth_blockNumber",
    ];
    for (k, name) in names.iter().enumerate() {
        let mut v: Vec<Duration> = rows.iter().map(|r| r[k]).collect();
        v.sort();
        println!(
            "| {name} | {} | {} |",
            ms(percentile(&v, 0.5)),
            ms(*v.last().unwrap())
        );
    }
    server.shutdown().await;
}
