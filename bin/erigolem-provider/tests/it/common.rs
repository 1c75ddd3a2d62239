//! Shared by the tests and the benchmark: the agent as a child process, and requestor steps.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use erigolem_test_utils::golem::{GolemNet, YagnaNode, PAYMENT_PLATFORM};
use erigolem_test_utils::provider::Provider;
use erigolem_test_utils::ChildGuard;
use erigolem_yagna::model::activity::ExeScriptCommandResult;
use erigolem_yagna::requestor::DemandSpec;
use erigolem_yagna::Yagna;

pub(crate) const SUBNET: &str = "erigolem-test";

pub(crate) fn yagna(node: &YagnaNode) -> Yagna {
    Yagna::new(node.api_url.parse().unwrap(), node.app_key.clone())
}

/// Starts `erigolem-provider run` for the provider node at 36 GLM/h + 0.5 GLM start fee, with
/// debit notes every 2 s.
pub(crate) fn start_agent(
    net: &GolemNet,
    machine: &Provider,
    data_dir: &Path,
    extra: &[&str],
) -> ChildGuard {
    let mut args = vec!["--price-per-hour", "36", "--start-fee", "0.5"];
    args.extend_from_slice(extra);
    start_agent_priced(net, machine, data_dir, &args)
}

/// `erigolem-provider run` with the prices (and other flags) in `args`; debit notes every 2 s.
pub(crate) fn start_agent_priced(
    net: &GolemNet,
    machine: &Provider,
    data_dir: &Path,
    args: &[&str],
) -> ChildGuard {
    let mut args = args.to_vec();
    args.extend_from_slice(&["--debit-note-interval", "2"]);
    erigolem_test_utils::golem::start_provider_agent(
        net.provider(0),
        machine,
        data_dir,
        SUBNET,
        &args,
    )
}

pub(crate) fn spec(node: &YagnaNode) -> DemandSpec {
    DemandSpec {
        network: "dev".into(),
        mode: None,
        subnet: SUBNET.into(),
        payment_platform: PAYMENT_PLATFORM.into(),
        payer: node.node_id.clone(),
        expiration: Duration::from_secs(3600),
    }
}

/// Runs an exe script and waits until every command finished.
pub(crate) async fn exec(
    r: &Yagna,
    activity: &str,
    script: serde_json::Value,
) -> Vec<ExeScriptCommandResult> {
    let commands = script.as_array().unwrap().len();
    let batch = r.exec(activity, &script).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let results = r
            .exec_results(activity, &batch, Duration::from_secs(2))
            .await
            .unwrap();
        if results.len() == commands || results.iter().any(|c| c.is_batch_finished) {
            return results;
        }
        assert!(
            Instant::now() < deadline,
            "batch {batch} unfinished: {results:?}"
        );
    }
}

pub(crate) fn agent_log(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.with_extension("log")).unwrap_or_default()
}

/// The pids of the runtimes (their work dirs are under the agent's data dir) and of the nodes
/// (their data dirs are under the machine's), not the machine's Nginx.
pub(crate) fn node_processes(machine: &Provider, agent_dir: &Path) -> Vec<u32> {
    let mut pids = erigolem_test_utils::pids_mentioning(&machine.config.data_dir.to_string_lossy());
    pids.extend(erigolem_test_utils::pids_mentioning(
        &agent_dir.to_string_lossy(),
    ));
    pids
}

/// How long each step of buying a node took.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phases {
    /// Demand published → agreement approved.
    pub(crate) agreement: Duration,
    /// → activity created (the exe-unit reported it Initialized).
    pub(crate) activity: Duration,
    /// → `deploy`, `start {"network":"dev"}` and `run STATUS` done.
    pub(crate) runtime: Duration,
    /// → the node's URL answered `eth_blockNumber` with its credentials.
    pub(crate) url: Duration,
}

pub(crate) struct BoughtNode {
    pub(crate) deal: erigolem_yagna::requestor::Deal,
    pub(crate) activity: String,
    pub(crate) status: erigolem_primitives::NodeStatus,
    pub(crate) phases: Phases,
}

/// The whole purchase as a requestor does it: deal, activity, deploy/start/STATUS, first RPC call.
pub(crate) async fn buy_dev_node(r: &Yagna, node: &YagnaNode, agent_dir: &Path) -> BoughtNode {
    let t0 = Instant::now();
    let deal =
        erigolem_yagna::requestor::make_deal(r, &spec(node), Duration::from_secs(30), |_| true)
            .await
            .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", agent_log(agent_dir)));
    let agreement = t0.elapsed();
    let activity = r
        .create_activity(&deal.agreement_id, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", agent_log(agent_dir)));
    let activity_at = t0.elapsed();
    let results = exec(
        r,
        &activity,
        serde_json::json!([{"deploy": {}}, {"start": {"args": ["{\"network\":\"dev\"}"]}}, {"run": {"entry_point": "STATUS", "args": []}}]),
    )
    .await;
    assert!(
        results.len() == 3 && results.iter().all(|c| format!("{:?}", c.result) == "Ok"),
        "{results:?}\nagent log:\n{}",
        agent_log(agent_dir)
    );
    let runtime = t0.elapsed();
    let stdout = serde_json::to_value(results[2].stdout.clone().unwrap()).unwrap();
    let text = stdout
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| stdout.to_string());
    let status: erigolem_primitives::NodeStatus =
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    let creds = (status.auth.user.as_str(), status.auth.password.expose());
    let block = erigolem_test_utils::rpc(
        &status.url,
        Some(creds),
        "eth_blockNumber",
        serde_json::json!([]),
    )
    .await
    .unwrap();
    assert!(block.as_str().unwrap().starts_with("0x"));
    let phases = Phases {
        agreement,
        activity: activity_at,
        runtime,
        url: t0.elapsed(),
    };
    BoughtNode {
        deal,
        activity,
        status,
        phases,
    }
}
