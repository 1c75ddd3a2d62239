//! The golem backend end to end in the local Golem network (offline): `erigolem serve` with
//! `--backend golem` buys nodes from real `erigolem-provider run` agents (real exe-units, runtime,
//! Nginx, dev chains) through the requestor's yagna, and pays for them on the local chain.

use std::path::Path;
use std::time::{Duration, Instant};

use erigolem_server::backend::golem::GolemConfig;
use erigolem_server::{spawn, BackendConfig, Handle, ServerConfig};
use erigolem_test_utils::golem::{start_provider_agent, GolemNet, GolemNetConfig, YagnaNode};
use erigolem_test_utils::wallet::DEV_KEY_0;
use erigolem_test_utils::{rpc, wait_for, ChildGuard, Provider, RpcError};
use erigolem_yagna::model::payment::{DocumentStatus, NewDebitNote};
use erigolem_yagna::Yagna;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::nodes::Api;

const SUBNET: &str = "erigolem-test";

fn golem_config(net: &GolemNet) -> GolemConfig {
    let r = net.requestor(0);
    let mut config = GolemConfig::new(r.api_url.parse().unwrap(), r.app_key.clone());
    config.subnet = SUBNET.into();
    config.budget = 10.0;
    config.deal_timeout = Duration::from_secs(15);
    config
}

async fn golem_server(dir: &Path, config: GolemConfig) -> Handle {
    let mut server = ServerConfig::test(dir);
    server.chain_ids = vec![1];
    server.backend = Some(BackendConfig::Golem(config));
    // The tests poll the API quickly while they wait.
    server.rate_limit = std::num::NonZeroU32::new(10_000).unwrap();
    spawn(server).await.unwrap()
}

/// A provider machine (Nginx, runtime config) and its agent at `price` GLM/h.
fn agent(node: &YagnaNode, machine: &Provider, dir: &Path, price: &str) -> ChildGuard {
    start_provider_agent(
        node,
        machine,
        &dir.join(format!("agent-{price}")),
        SUBNET,
        &[
            "--price-per-hour",
            price,
            "--start-fee",
            "0.5",
            "--debit-note-interval",
            "2",
        ],
    )
}

/// One provider machine selling at 36 GLM/h (+0.5 GLM start) and a golem server in front of it.
/// Fields drop in order: the server, then the agent, the machine, the Golem network.
struct OneProvider {
    h: Handle,
    agent: Option<ChildGuard>,
    _machine: Provider,
    net: GolemNet,
    dir: tempfile::TempDir,
}

async fn one_provider(tweak: impl FnOnce(&mut GolemConfig)) -> OneProvider {
    let net = GolemNet::spawn(GolemNetConfig::test()).await.unwrap();
    let machine = Provider::start(1, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(net.provider(0), &machine, dir.path(), "36");
    let mut config = golem_config(&net);
    tweak(&mut config);
    let h = golem_server(&dir.path().join("server"), config).await;
    OneProvider {
        h,
        agent: Some(agent),
        _machine: machine,
        net,
        dir,
    }
}

async fn wait_node(api: &Api<'_>, id: &str, want: &str, within: Duration) -> Value {
    wait_for(&format!("node {id} to be {want}"), within, || async {
        let (_, node) = api.get(&format!("/nodes/{id}")).await;
        (node["state"] == want || (node["state"] == "failed" && want != "failed")).then_some(node)
    })
    .await
}

fn creds(node: &Value) -> (String, String) {
    (
        node["auth"]["user"].as_str().unwrap().to_owned(),
        node["auth"]["password"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_node_on_golem_runs_is_stopped_and_paid_for_on_chain() {
    let net = GolemNet::spawn(GolemNetConfig::test()).await.unwrap();
    let machine = Provider::start(2, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = agent(net.provider(0), &machine, dir.path(), "36");
    let provider_id = net.provider(0).node_id.to_lowercase();
    let paid_before = net.chain().token_balance(&provider_id).await.unwrap();
    let h = golem_server(&dir.path().join("server"), golem_config(&net)).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;

    let clicked = Instant::now();
    let (status, created) = alice.post("/nodes", json!({"network": "dev"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let node = wait_node(&alice, &id, "running", Duration::from_secs(60)).await;
    assert_eq!(node["state"], "running", "{node}");
    eprintln!("click → running on Golem: {:?}", clicked.elapsed());
    let (user, password) = creds(&node);
    let url = node["url"].as_str().unwrap().to_owned();
    let block = rpc(&url, Some((&user, &password)), "eth_blockNumber", json!([]))
        .await
        .unwrap();
    assert!(block.as_str().unwrap().starts_with("0x"));
    let billing = &node["billing"];
    assert_eq!(billing["provider_id"], provider_id.as_str(), "{node}");
    assert_eq!(
        billing["price_per_hour"].as_f64().unwrap().round(),
        36.0,
        "{billing}"
    );
    assert_eq!(billing["budget"], 10.0);
    assert!(billing["runway_secs"].as_u64().unwrap() > 0, "{billing}");

    // The networks view shows the market.
    let (_, networks) = alice.get("/networks").await;
    let dev = networks
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["network"] == "dev")
        .cloned();
    assert!(
        dev.is_some_and(|d| d["price"]["providers"] == 1),
        "{networks}"
    );

    // Debit notes are paid while it runs.
    wait_for(
        "a debit note to be paid",
        Duration::from_secs(20),
        || async {
            let (_, node) = alice.get(&format!("/nodes/{id}")).await;
            (node["billing"]["spent"].as_f64().unwrap_or(0.0) > 0.0).then_some(())
        },
    )
    .await;

    // Stop: the URL refuses the credentials, the invoice is accepted, the provider is paid.
    let (status, _) = alice.post(&format!("/nodes/{id}/stop"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    alice.wait_state(&id, "stopped").await;
    let after = rpc(&url, Some((&user, &password)), "eth_blockNumber", json!([])).await;
    assert!(matches!(after, Err(RpcError::Http(401 | 404))), "{after:?}");
    let node = wait_for(
        "the invoice to be accepted",
        Duration::from_secs(30),
        || async {
            let (_, node) = alice.get(&format!("/nodes/{id}")).await;
            (node["billing"]["settled"] == true).then_some(node)
        },
    )
    .await;
    let spent = node["billing"]["spent"].as_f64().unwrap();
    assert!((0.5..1.5).contains(&spent), "{node}");
    wait_for(
        "the provider to be paid on the chain",
        Duration::from_secs(60),
        || async {
            let now = net.chain().token_balance(&provider_id).await.ok()?;
            (now > paid_before).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn with_no_provider_for_the_network_the_node_fails_with_no_offers_in_bounded_time() {
    let net = GolemNet::spawn(GolemNetConfig::test()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = golem_config(&net);
    config.deal_timeout = Duration::from_secs(3);
    let h = golem_server(&dir.path().join("server"), config).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let started = Instant::now();
    let (status, created) = alice.post("/nodes", json!({"network": "sepolia"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let node = wait_node(
        &alice,
        created["id"].as_str().unwrap(),
        "failed",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(node["state"], "failed");
    assert!(
        node["reason"].as_str().unwrap().contains("no offers"),
        "{node}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn of_two_providers_the_cheaper_one_is_chosen() {
    let net = GolemNet::spawn(GolemNetConfig::test().with_nodes(1, 2))
        .await
        .unwrap();
    let (m1, m2) = (
        Provider::start(1, |_| {}).await,
        Provider::start(1, |_| {}).await,
    );
    let dir = tempfile::tempdir().unwrap();
    let _dear = agent(net.provider(0), &m1, dir.path(), "72");
    let _cheap = agent(net.provider(1), &m2, dir.path(), "18");
    let h = golem_server(&dir.path().join("server"), golem_config(&net)).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let (_, created) = alice
        .post(
            "/nodes",
            json!({"network": "dev", "budget": 2, "max_price_per_hour": 50}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let node = wait_node(&alice, &id, "running", Duration::from_secs(60)).await;
    assert_eq!(
        node["billing"]["provider_id"],
        net.provider(1).node_id.to_lowercase().as_str(),
        "{node}"
    );
    assert_eq!(
        node["billing"]["budget"], 2.0,
        "the user's lower budget: {node}"
    );
    alice.post(&format!("/nodes/{id}/stop"), json!({})).await;
    alice.wait_state(&id, "stopped").await;
}

#[tokio::test]
async fn a_node_whose_provider_dies_fails() {
    let mut stack = one_provider(|_| {}).await;
    let h = &stack.h;
    let alice = Api::signed_in(h, DEV_KEY_0).await;
    let (_, created) = alice.post("/nodes", json!({"network": "dev"})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    wait_node(&alice, &id, "running", Duration::from_secs(60)).await;
    drop(stack.agent.take()); // the provider agent and the node it ran are gone
                              // First marked unhealthy (still running), then failed.
    let unhealthy = wait_for(
        "the node to be unhealthy",
        Duration::from_secs(30),
        || async {
            let (_, node) = alice.get(&format!("/nodes/{id}")).await;
            node["health"]
                .as_str()
                .map(str::to_owned)
                .filter(|_| node["state"] == "running")
        },
    )
    .await;
    assert!(unhealthy.contains("not answering (1 of 3"), "{unhealthy}");
    let node = wait_node(&alice, &id, "failed", Duration::from_secs(60)).await;
    assert!(node["health"].is_null(), "{node}");
    assert!(
        node["reason"]
            .as_str()
            .unwrap()
            .contains("stopped answering"),
        "{node}"
    );
}

#[tokio::test]
async fn after_a_server_restart_a_golem_node_is_still_running_with_the_same_url_and_stopping_pays()
{
    let net = GolemNet::spawn(GolemNetConfig::test()).await.unwrap();
    let machine = Provider::start(1, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = agent(net.provider(0), &machine, dir.path(), "36");
    let data = dir.path().join("server");
    let h = golem_server(&data, golem_config(&net)).await;
    let token = crate::sign_in(&h, DEV_KEY_0).await;
    let alice = Api::with_token(&h, token.clone());
    let (_, created) = alice.post("/nodes", json!({"network": "dev"})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let before = wait_node(&alice, &id, "running", Duration::from_secs(60)).await;
    h.shutdown().await;

    let h = golem_server(&data, golem_config(&net)).await;
    let alice = Api::with_token(&h, token);
    let after = wait_node(&alice, &id, "running", Duration::from_secs(30)).await;
    assert_eq!(after["url"], before["url"]);
    assert_eq!(
        after["billing"]["agreement_id"], before["billing"]["agreement_id"],
        "not restarted needlessly"
    );
    let (user, password) = creds(&after);
    rpc(
        after["url"].as_str().unwrap(),
        Some((&user, &password)),
        "eth_blockNumber",
        json!([]),
    )
    .await
    .unwrap();
    alice.post(&format!("/nodes/{id}/stop"), json!({})).await;
    alice.wait_state(&id, "stopped").await;
    wait_for(
        "the invoice to be accepted",
        Duration::from_secs(30),
        || async {
            let (_, node) = alice.get(&format!("/nodes/{id}")).await;
            (node["billing"]["settled"] == true).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_debit_note_above_the_agreed_price_is_not_paid() {
    let stack = one_provider(|_| {}).await;
    let (net, h, dir) = (&stack.net, &stack.h, stack.dir.path());
    let alice = Api::signed_in(h, DEV_KEY_0).await;
    let (_, created) = alice.post("/nodes", json!({"network": "dev"})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    wait_node(&alice, &id, "running", Duration::from_secs(60)).await;
    // A debit note above the agreed price is refused.
    let p = Yagna::new(
        net.provider(0).api_url.parse().unwrap(),
        net.provider(0).app_key.clone(),
    );
    let activity = std::fs::read_to_string(dir.join("server/golem/deals.json")).unwrap();
    let deals: Value = serde_json::from_str(&activity).unwrap();
    let activity_id = deals[&id]["activity_id"].as_str().unwrap().to_owned();
    let greedy = p
        .issue_debit_note(&NewDebitNote {
            activity_id: activity_id.clone(),
            total_amount_due: "9".parse().unwrap(),
            usage_counter_vector: None,
            payment_due_date: None,
        })
        .await
        .unwrap();
    p.send_debit_note(&greedy.debit_note_id).await.unwrap();
    // yagna 0.17.6 cannot reject debit notes (501): it is refused by not accepting it.
    let node = wait_for(
        "the greedy debit note to be refused",
        Duration::from_secs(20),
        || async {
            let (_, node) = alice.get(&format!("/nodes/{id}")).await;
            node["billing"]["refused"]
                .as_str()
                .is_some_and(|r| r.contains(&greedy.debit_note_id))
                .then_some(node)
        },
    )
    .await;
    assert!(
        node["billing"]["refused"]
            .as_str()
            .unwrap()
            .contains("more than the agreed price"),
        "{node}"
    );
    assert!(node["billing"]["spent"].as_f64().unwrap() < 9.0, "{node}");
    let status = p.debit_note(&greedy.debit_note_id).await.unwrap().status;
    assert!(
        !matches!(status, DocumentStatus::Accepted | DocumentStatus::Settled),
        "{status:?}"
    );

    alice.post(&format!("/nodes/{id}/stop"), json!({})).await;
    alice.wait_state(&id, "stopped").await;
}

#[tokio::test]
async fn a_failed_node_is_replaced_on_another_provider_when_asked() {
    let net = GolemNet::spawn(GolemNetConfig::test().with_nodes(1, 2))
        .await
        .unwrap();
    let (m1, m2) = (
        Provider::start(1, |_| {}).await,
        Provider::start(1, |_| {}).await,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut agents = [
        Some(agent(net.provider(0), &m1, dir.path(), "18")),
        Some(agent(net.provider(1), &m2, dir.path(), "72")),
    ];
    let ids = [
        net.provider(0).node_id.to_lowercase(),
        net.provider(1).node_id.to_lowercase(),
    ];
    let h = golem_server(&dir.path().join("server"), golem_config(&net)).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let (_, created) = alice
        .post(
            "/nodes",
            json!({"network": "dev", "name": "keeper", "auto_replace": true}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let first = wait_node(&alice, &id, "running", Duration::from_secs(60)).await;
    // Usually the cheaper one; under load the other may answer first within the offer window.
    let on = ids
        .iter()
        .position(|p| first["billing"]["provider_id"] == p.as_str())
        .unwrap();
    drop(agents[on].take());
    let failed = wait_node(&alice, &id, "failed", Duration::from_secs(60)).await;
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("replaced by node"), "{reason}");
    let new_id = reason
        .rsplit("replaced by node ")
        .next()
        .unwrap()
        .to_owned();
    let replacement = wait_node(&alice, &new_id, "running", Duration::from_secs(60)).await;
    assert_eq!(replacement["state"], "running", "{replacement}");
    assert_eq!(replacement["name"], "keeper");
    assert_eq!(replacement["network"], "dev");
    assert_eq!(replacement["billing"]["provider_id"], ids[1 - on].as_str());
    let (user, password) = creds(&replacement);
    rpc(
        replacement["url"].as_str().unwrap(),
        Some((&user, &password)),
        "eth_blockNumber",
        json!([]),
    )
    .await
    .unwrap();
    alice
        .post(&format!("/nodes/{new_id}/stop"), json!({}))
        .await;
    alice.wait_state(&new_id, "stopped").await;
}

#[tokio::test]
async fn a_node_whose_budget_runs_out_is_stopped_with_the_reason() {
    let stack = one_provider(|_| {}).await;
    let h = &stack.h;
    let alice = Api::signed_in(h, DEV_KEY_0).await;
    // 0.5 GLM start fee + 36 GLM/h: 1.2 GLM pays for the start and the first ~10 s (the backend
    // stops a node a minute before its budget would be exceeded).
    let (_, created) = alice
        .post("/nodes", json!({"network": "dev", "budget": 1.2}))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let running = wait_node(&alice, &id, "running", Duration::from_secs(60)).await;
    assert_eq!(running["state"], "running", "{running}");
    let stopped = wait_node(&alice, &id, "stopped", Duration::from_secs(60)).await;
    let reason = stopped["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("budget of 1.2 GLM is used up"), "{stopped}");
    assert!(
        stopped["billing"]["spent"].as_f64().unwrap() <= 1.2,
        "{stopped}"
    );
}

#[tokio::test]
async fn a_node_whose_agreement_is_about_to_end_is_stopped_with_the_reason() {
    // Nodes stop five minutes before their agreement ends: this one a few seconds after it starts.
    let stack = one_provider(|c| c.agreement_duration = Duration::from_secs(5 * 60 + 4)).await;
    let h = &stack.h;
    let alice = Api::signed_in(h, DEV_KEY_0).await;
    let (_, created) = alice.post("/nodes", json!({"network": "dev"})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    wait_node(&alice, &id, "running", Duration::from_secs(60)).await;
    let stopped = wait_node(&alice, &id, "stopped", Duration::from_secs(30)).await;
    assert!(
        stopped["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("agreement with the provider ends"),
        "{stopped}"
    );
}
