//! A whole activity through yagna: agreement → `CreateActivity` → exe-unit → exe scripts from the
//! requestor's REST API → a working JSON-RPC endpoint → `DestroyActivity` (or the script's
//! `terminate`) → credentials refused, nothing left running.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use erigolem_exe_unit::gsb::call_once;
use erigolem_exe_unit::messages::{Exec, GetExecBatchResults, GetRunningCommand, RpcMessageError};
use erigolem_exe_unit::{ExeUnit, ExeUnitConfig, State, StatePair};
use erigolem_primitives::{Network, NodeStatus};
use erigolem_test_utils::golem::{GolemNet, GolemNetConfig, YagnaNode};
use erigolem_test_utils::{pids_mentioning, rpc, wait_for, Provider, RpcError};
use reqwest::Method;
use serde_json::{json, Value};

use crate::rest::{self, call, is_create, is_destroy, ok, ActivityEvents};

/// What the test (playing the provider agent) started for one activity.
struct Activity {
    id: String,
    unit: ExeUnit,
    workdir: PathBuf,
}

/// The requestor creates an activity on the agreement; meanwhile the test waits for the
/// provider's `CreateActivity` event and spawns the exe-unit, which completes the creation.
async fn create_activity(
    requestor: &YagnaNode,
    provider: &YagnaNode,
    machine: &Provider,
    agreement_id: &str,
    events: &mut ActivityEvents<'_>,
) -> Activity {
    let body = json!({"agreementId": agreement_id});
    let create = call(
        requestor,
        Method::POST,
        "/activity-api/v1/activity?timeout=30",
        Some(&body),
        Duration::from_secs(40),
    );
    let serve = async {
        let event = events.next(is_create, Duration::from_secs(30)).await;
        let runtime = machine.runtime(&event.activity_id);
        let mut config = ExeUnitConfig::new(
            &event.activity_id,
            &event.agreement_id,
            &requestor.node_id,
            &provider.gsb_url,
            &runtime.path,
            &runtime.workdir,
        );
        config.env = runtime.env.clone();
        // The agreement's usage vector (rest::agreement's offer), with the runtime's own counter.
        let config =
            config.usage_vector(rest::USAGE_VECTOR.iter().map(|s| s.to_string()).collect());
        let started = Instant::now();
        let unit = erigolem_exe_unit::spawn(config).await.unwrap();
        eprintln!(
            "exe-unit for {} bound and Initialized in {} ms",
            event.activity_id,
            started.elapsed().as_millis()
        );
        (event, unit, runtime.workdir)
    };
    let ((status, created), (event, unit, workdir)) = tokio::join!(create, serve);
    assert_eq!(status, 200, "create activity: {created}");
    let id = created["activityId"]
        .as_str()
        .or(created.as_str())
        .unwrap()
        .to_owned();
    assert_eq!(id, event.activity_id);
    assert_eq!(unit.activity_id(), id);
    assert_eq!(unit.state().state, StatePair(State::Initialized, None));
    Activity { id, unit, workdir }
}

fn auth(status: &NodeStatus) -> (&str, &str) {
    (status.auth.user.as_str(), status.auth.password.expose())
}

fn stdout(result: &Value) -> &str {
    result["stdout"]
        .as_str()
        .unwrap_or_else(|| panic!("no stdout: {result}"))
}

async fn wait_gone(pids: &[u32]) {
    for &pid in pids {
        wait_for(
            &format!("process {pid} to exit"),
            Duration::from_secs(20),
            || async move { (!erigolem_test_utils::alive(pid)).then_some(()) },
        )
        .await;
    }
}

/// The state yagna holds for the activity, as the requestor reads it.
async fn yagna_state(requestor: &YagnaNode, activity_id: &str) -> Value {
    ok(
        requestor,
        Method::GET,
        &format!("/activity-api/v1/activity/{activity_id}/state"),
        None,
    )
    .await
}

const START_DEV: &str = r#"{"network":"dev"}"#;

#[tokio::test(flavor = "multi_thread")]
async fn requestor_gets_a_node_through_the_exe_unit_until_destroy() {
    let net = GolemNet::spawn(GolemNetConfig::test().with_nodes(2, 1))
        .await
        .unwrap();
    let machine = Provider::start(1, |_| {}).await;
    let (requestor, intruder, provider) = (net.requestor(0), net.requestor(1), net.provider(0));
    let agreement_id = rest::agreement(requestor, provider).await;
    let mut events = ActivityEvents::new(provider);
    let Activity { id, unit, workdir } =
        create_activity(requestor, provider, &machine, &agreement_id, &mut events).await;
    assert_eq!(
        yagna_state(requestor, &id).await["state"],
        json!(["Initialized", null])
    );

    // The script of the brief: deploy, start a dev node, STATUS.
    let script = json!([
        {"deploy": {}},
        {"start": {"args": [START_DEV]}},
        {"run": {"entry_point": "STATUS", "args": []}},
    ]);
    let started = Instant::now();
    let batch = rest::exec(requestor, &id, script).await;
    let results = rest::results(requestor, &id, &batch).await;
    eprintln!(
        "deploy + start + STATUS through yagna in {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(results.len(), 3, "{results:?}");
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["index"], i, "{result}");
        assert_eq!(result["result"], "Ok", "{result}");
        assert_eq!(result["isBatchFinished"], i == 2, "{result}");
    }
    let deployed: Value = serde_json::from_str(stdout(&results[0])).unwrap();
    assert_eq!(deployed["valid"], json!({"Ok": ""}));
    let at_start: NodeStatus = serde_json::from_str(stdout(&results[1])).unwrap();
    let status: NodeStatus = serde_json::from_str(stdout(&results[2])).unwrap();
    assert_eq!(status.network, Network::Dev);
    assert_eq!(status.instance, at_start.instance);
    assert_eq!(status.auth, at_start.auth);

    // The endpoint answers with its credentials, through Nginx, and only with them.
    let block = rpc(
        &status.url,
        Some(auth(&status)),
        "eth_blockNumber",
        json!([]),
    )
    .await
    .unwrap();
    assert!(block.as_str().unwrap().starts_with("0x"), "{block}");
    assert!(matches!(
        rpc(&status.url, None, "eth_blockNumber", json!([])).await,
        Err(RpcError::Http(401))
    ));

    // What the exe-unit reported is what yagna holds.
    assert_eq!(unit.state().state, StatePair(State::Ready, None));
    assert_eq!(
        yagna_state(requestor, &id).await["state"],
        json!(["Ready", null])
    );
    let usage_path = format!("/activity-api/v1/activity/{id}/usage");
    let usage = wait_for(
        "a usage report past 1 s",
        Duration::from_secs(10),
        || async {
            let usage = ok(requestor, Method::GET, &usage_path, None).await;
            let current = usage["currentUsage"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            // Duration past 1 s, and the one JSON-RPC call made through the endpoint.
            (current.len() == 3
                && current[0].as_f64().unwrap_or(0.0) >= 1.0
                && current[2].as_f64() == Some(1.0))
            .then_some(current)
        },
    )
    .await;
    eprintln!(
        "usage at yagna: {usage:?}; at the exe-unit: {:?}",
        unit.usage()
    );
    assert!(usage[1].as_f64().unwrap() >= 0.0);
    // CPU time is counted in clock ticks (10 ms): on a loaded machine the first reports can still
    // read 0, so wait for the runtime's tree to have used some.
    wait_for(
        "a usage report with the runtime's CPU time",
        Duration::from_secs(10),
        || async {
            (unit.usage().current_usage.unwrap_or_default().get(1) > Some(&0.0)).then_some(())
        },
    )
    .await;

    // A failing command ends its batch: no later command runs.
    let batch = rest::exec(
        requestor,
        &id,
        json!([
            {"run": {"entry_point": "NOPE", "args": []}},
            {"run": {"entry_point": "STATUS", "args": []}},
        ]),
    )
    .await;
    let failed = rest::results(requestor, &id, &batch).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["result"], "Error");
    assert_eq!(failed[0]["isBatchFinished"], true);
    let message = failed[0]["message"].as_str().unwrap();
    assert!(
        message.contains("NOPE") && message.contains("STATUS"),
        "{message}"
    );
    // Commands in the wrong state are refused as yagna's exe-unit refuses them.
    let batch = rest::exec(requestor, &id, json!([{"deploy": {}}])).await;
    let refused = rest::results(requestor, &id, &batch).await;
    assert_eq!(refused[0]["result"], "Error");
    let message = refused[0]["message"].as_str().unwrap();
    assert!(message.contains("Invalid state"), "{message}");
    assert_eq!(unit.state().state, StatePair(State::Ready, None));

    // Streamed results (the requestor's server-sent events, from StreamExecBatchResults).
    let batch = rest::exec(
        requestor,
        &id,
        json!([{"run": {"entry_point": "HEALTH", "args": []}}]),
    )
    .await;
    let events_text = stream_events(requestor, &id, &batch).await;
    assert!(events_text.contains("started"), "{events_text}");
    assert!(events_text.contains("healthy"), "{events_text}");
    assert!(events_text.contains("finished"), "{events_text}");

    // Another node cannot drive the activity: its calls reach the exe-unit (through its yagna,
    // the router and the provider's yagna) with its own node id, and are refused.
    let exeunit = format!("/net/{}/exeunit/{id}", provider.node_id);
    let intrusion = Exec {
        activity_id: id.clone(),
        batch_id: "intruder".into(),
        exe_script: serde_json::from_value(json!([{"run": {"entry_point": "ROTATE", "args": []}}]))
            .unwrap(),
        timeout: None,
    };
    let refused = call_once(&intruder.gsb_url, "local", &exeunit, intrusion)
        .await
        .unwrap();
    assert!(
        matches!(&refused, Err(RpcMessageError::Forbidden(m)) if m.contains(&intruder.node_id)),
        "{refused:?}"
    );
    let refused = peek(intruder, &exeunit, &id, &batch).await;
    assert!(
        matches!(refused, Err(RpcMessageError::Forbidden(_))),
        "{refused:?}"
    );
    // The same call from the requestor's node is served.
    let served = peek(requestor, &exeunit, &id, &batch).await.unwrap();
    assert_eq!(served.len(), 1);
    let running = GetRunningCommand {
        activity_id: id.clone(),
        timeout: None,
    };
    let idle = call_once(&requestor.gsb_url, "local", &exeunit, running)
        .await
        .unwrap();
    assert!(
        matches!(idle, Err(RpcMessageError::NotFound(_))),
        "{idle:?}"
    );
    // The password still works: ROTATE never ran.
    rpc(
        &status.url,
        Some(auth(&status)),
        "eth_blockNumber",
        json!([]),
    )
    .await
    .unwrap();

    // DestroyActivity: the test relays it to the exe-unit, as the agent does.
    let runtime_pids = pids_mentioning(&workdir.display().to_string());
    assert!(!runtime_pids.is_empty(), "the runtime runs");
    let node_pids = pids_mentioning(
        &machine
            .instance_dir(status.instance.as_str())
            .display()
            .to_string(),
    );
    assert!(!node_pids.is_empty(), "the node runs");
    let destroy_path = format!("/activity-api/v1/activity/{id}?timeout=30");
    let destroy = call(
        requestor,
        Method::DELETE,
        &destroy_path,
        None,
        Duration::from_secs(40),
    );
    let relay = async {
        let event = events
            .next(
                |e| is_destroy(e) && e.activity_id == id,
                Duration::from_secs(30),
            )
            .await;
        let started = Instant::now();
        let last = unit.shutdown("DestroyActivity").await.unwrap();
        let last = last.current_usage.unwrap();
        assert_eq!(last.len(), 3);
        assert!(
            last[2] >= 1.0,
            "the final usage keeps the request count: {last:?}"
        );
        eprintln!(
            "exe-unit of {} shut down in {} ms",
            event.activity_id,
            started.elapsed().as_millis()
        );
    };
    let ((code, body), ()) = tokio::join!(destroy, relay);
    assert!((200..300).contains(&code), "destroy: {code} {body}");

    // The credentials are refused, nothing is left.
    let after = rpc(
        &status.url,
        Some(auth(&status)),
        "eth_blockNumber",
        json!([]),
    )
    .await;
    assert!(
        matches!(after, Err(RpcError::Http(401 | 404))),
        "after destroy: {after:?}"
    );
    wait_gone(&runtime_pids).await;
    wait_gone(&node_pids).await;
    assert!(machine.gateway_entries().is_empty());
    assert!(machine.sockets().is_empty());
    assert!(machine.instance_dirs().is_empty());
    assert_eq!(
        yagna_state(requestor, &id).await["state"],
        json!(["Terminated", null])
    );
}

/// `GetExecBatchResults` of a batch, called from `node` straight over the GSB.
async fn peek(
    node: &YagnaNode,
    exeunit: &str,
    activity_id: &str,
    batch_id: &str,
) -> Result<Vec<ya_client_model::activity::ExeScriptCommandResult>, RpcMessageError> {
    let msg = GetExecBatchResults {
        activity_id: activity_id.to_owned(),
        batch_id: batch_id.to_owned(),
        timeout: None,
        command_index: None,
    };
    call_once(&node.gsb_url, "local", exeunit, msg)
        .await
        .unwrap()
}

/// Reads the requestor's event stream of a batch until its `finished` event.
async fn stream_events(requestor: &YagnaNode, activity_id: &str, batch_id: &str) -> String {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut resp = client
        .get(format!(
            "{}/activity-api/v1/activity/{activity_id}/exec/{batch_id}",
            requestor.api_url
        ))
        .bearer_auth(&requestor.app_key)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut text = String::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if text.contains("finished") {
            break;
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn terminate_in_the_script_ends_the_activity() {
    let net = GolemNet::spawn(GolemNetConfig::test()).await.unwrap();
    let machine = Provider::start(1, |_| {}).await;
    let (requestor, provider) = (net.requestor(0), net.provider(0));
    let agreement_id = rest::agreement(requestor, provider).await;
    let mut events = ActivityEvents::new(provider);
    let Activity { id, unit, workdir } =
        create_activity(requestor, provider, &machine, &agreement_id, &mut events).await;

    let batch = rest::exec(
        requestor,
        &id,
        json!([
            {"deploy": {}},
            {"start": {"args": [START_DEV]}},
            {"terminate": {}},
        ]),
    )
    .await;
    let results = rest::results(requestor, &id, &batch).await;
    assert_eq!(results.len(), 3, "{results:?}");
    assert!(results.iter().all(|r| r["result"] == "Ok"), "{results:?}");
    let status: NodeStatus = serde_json::from_str(stdout(&results[1])).unwrap();

    // It ended by itself: the owner learns it, yagna holds it.
    let ended = tokio::time::timeout(Duration::from_secs(10), unit.terminated())
        .await
        .unwrap();
    assert_eq!(ended.state, StatePair(State::Terminated, None));
    assert!(ended.reason.unwrap().contains("terminated"));
    assert_eq!(
        yagna_state(requestor, &id).await["state"],
        json!(["Terminated", null])
    );
    let after = rpc(
        &status.url,
        Some(auth(&status)),
        "eth_blockNumber",
        json!([]),
    )
    .await;
    assert!(matches!(after, Err(RpcError::Http(401 | 404))), "{after:?}");
    wait_gone(&pids_mentioning(&workdir.display().to_string())).await;
    assert!(machine.gateway_entries().is_empty());

    // Still answering: a new script fails (the activity is over), earlier results stay readable.
    let batch2 = rest::exec(requestor, &id, json!([{"deploy": {}}])).await;
    let refused = rest::results(requestor, &id, &batch2).await;
    assert_eq!(refused[0]["result"], "Error");
    assert_eq!(rest::results(requestor, &id, &batch).await.len(), 3);

    // Destroying a terminated activity is immediate; the owner then releases the exe-unit.
    ok(
        requestor,
        Method::DELETE,
        &format!("/activity-api/v1/activity/{id}?timeout=10"),
        None,
    )
    .await;
    unit.shutdown("DestroyActivity").await.unwrap();
}

/// Runs deploy + start (dev) and returns the node's status and the runtime's pid.
async fn deploy_and_start(requestor: &YagnaNode, activity: &Activity) -> (NodeStatus, u32) {
    let script = json!([{"deploy": {}}, {"start": {"args": [START_DEV]}}]);
    let batch = rest::exec(requestor, &activity.id, script).await;
    let results = rest::results(requestor, &activity.id, &batch).await;
    assert!(results.iter().all(|r| r["result"] == "Ok"), "{results:?}");
    let status: NodeStatus = serde_json::from_str(stdout(&results[1])).unwrap();
    let pids = pids_mentioning(&activity.workdir.display().to_string());
    assert_eq!(pids.len(), 1, "one runtime process: {pids:?}");
    (status, pids[0])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_runtime_ends_the_activity_and_a_dropped_unit_shuts_down() {
    let net = GolemNet::spawn(GolemNetConfig::test()).await.unwrap();
    let machine = Provider::start(1, |_| {}).await;
    let (requestor, provider) = (net.requestor(0), net.provider(0));
    let agreement_id = rest::agreement(requestor, provider).await;
    let mut events = ActivityEvents::new(provider);

    // The runtime is killed: the exe-unit notices, reports Terminated with the error.
    let first = create_activity(requestor, provider, &machine, &agreement_id, &mut events).await;
    let (_, runtime) = deploy_and_start(requestor, &first).await;
    nix_kill(runtime);
    let ended = tokio::time::timeout(Duration::from_secs(10), first.unit.terminated())
        .await
        .unwrap();
    let reason = ended.reason.unwrap_or_default();
    assert!(reason.contains("exited unexpectedly"), "{reason}");
    assert_eq!(ended.error_message.as_deref(), Some(reason.as_str()));
    let state = yagna_state(requestor, &first.id).await;
    assert_eq!(state["state"], json!(["Terminated", null]));
    assert_eq!(state["reason"], json!(reason));
    drop(first.unit);

    // A second activity on the same agreement; its owner drops the handle: the runtime is shut
    // down (credentials revoked, node stopped) and yagna told.
    let second = create_activity(requestor, provider, &machine, &agreement_id, &mut events).await;
    let (status, runtime) = deploy_and_start(requestor, &second).await;
    rpc(
        &status.url,
        Some(auth(&status)),
        "eth_blockNumber",
        json!([]),
    )
    .await
    .unwrap();
    let unit = second.unit;
    tokio::task::spawn_blocking(move || drop(unit))
        .await
        .unwrap();
    assert!(!erigolem_test_utils::alive(runtime));
    let after = rpc(
        &status.url,
        Some(auth(&status)),
        "eth_blockNumber",
        json!([]),
    )
    .await;
    assert!(matches!(after, Err(RpcError::Http(401 | 404))), "{after:?}");
    assert!(machine.gateway_entries().is_empty());
    let state = yagna_state(requestor, &second.id).await;
    assert_eq!(state["state"], json!(["Terminated", null]));
    assert!(
        state["reason"].as_str().unwrap().contains("dropped"),
        "{state}"
    );
}

fn nix_kill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
