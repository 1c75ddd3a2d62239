//! Hostile requestors against the real agent (real yagna, exe-unit, runtime, Nginx): what one of
//! them does must not take the provider's memory, its capacity or another requestor's node.

use std::time::{Duration, Instant};

use erigolem_test_utils::golem::{GolemNet, GolemNetConfig};
use erigolem_test_utils::provider::Provider;
use erigolem_test_utils::{rpc, wait_for, RpcError};
use erigolem_yagna::requestor::make_deal;
use serde_json::json;

use crate::common::{agent_log, buy_dev_node, exec, rss_kib, spec, start_agent, yagna};

/// `LOGS 10000` commands sent by one requestor, in batches of this many.
const LOGS_BATCH: usize = 50;
const LOGS_COMMANDS: usize = 10_000;
/// What the node's log holds when the flood starts: each `LOGS 10000` answers about this much.
const LOG_BYTES: usize = 16 * 1024;
/// The agent may grow by at most this while the flood runs (its exe-units keep a bounded amount
/// of results; before that bound every result stayed, ~2 × 640 MB here).
const RSS_GROWTH_LIMIT_KIB: u64 = 96 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_logs_commands_leave_the_agent_bounded_and_the_other_node_serving() {
    let net = GolemNet::spawn(GolemNetConfig::test().with_nodes(2, 1))
        .await
        .unwrap();
    let machine = Provider::start(2, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("agent");
    // Nobody here accepts debit notes: the flood (over 4 minutes beside the whole suite on two
    // cores) must not outlast the agreement's accept timeout.
    let agent = start_agent(
        &net,
        &machine,
        &data_dir,
        &["--capacity", "2", "--debit-note-accept-timeout", "1800"],
    );
    let (attacker, victim) = (yagna(net.requestor(0)), yagna(net.requestor(1)));
    let other = buy_dev_node(&victim, net.requestor(1), &data_dir).await;
    let mine = buy_dev_node(&attacker, net.requestor(0), &data_dir).await;

    // A chatty node: its log holds 64 KiB, so each LOGS answers that much.
    let log = machine
        .instance_dir(mine.status.instance.as_str())
        .join("node.log");
    let line = format!("{}\n", "x".repeat(127));
    let mut text = String::new();
    while text.len() < LOG_BYTES {
        text.push_str(&line);
    }
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    let before = rss_kib(agent.pid());
    let script: Vec<_> = (0..LOGS_BATCH)
        .map(|_| json!({"run": {"entry_point": "LOGS", "args": ["10000"]}}))
        .collect();
    let script = json!(script);
    let started = Instant::now();
    let mut peak = before;
    // Meanwhile the other requestor polls its node's STATUS, as the server does.
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let polls = {
        let (victim, activity, flooding) =
            (victim.clone(), other.activity.clone(), flooding.clone());
        tokio::spawn(async move {
            let mut served = 0;
            while flooding.load(std::sync::atomic::Ordering::SeqCst) {
                let status = exec(
                    &victim,
                    &activity,
                    json!([{"run": {"entry_point": "STATUS", "args": []}}]),
                )
                .await;
                assert_eq!(format!("{:?}", status[0].result), "Ok", "{status:?}");
                served += 1;
            }
            served
        })
    };
    for round in 0..LOGS_COMMANDS / LOGS_BATCH {
        let batch = attacker.exec(&mine.activity, &script).await.unwrap();
        // Only the last command's output comes back: the attacker leaves the rest on the provider.
        let last = loop {
            let results = attacker
                .exec_results_until(
                    &mine.activity,
                    &batch,
                    LOGS_BATCH - 1,
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
            if let Some(last) = results
                .into_iter()
                .find(|r| r.index as usize == LOGS_BATCH - 1)
            {
                break last;
            }
        };
        assert_eq!(
            format!("{:?}", last.result),
            "Ok",
            "round {round}: {last:?}"
        );
        let rss = rss_kib(agent.pid());
        peak = peak.max(rss);
        assert!(
            rss < before + RSS_GROWTH_LIMIT_KIB,
            "after {} LOGS commands the agent's RSS grew from {before} KiB to {rss} KiB",
            (round + 1) * LOGS_BATCH
        );
    }
    let after = rss_kib(agent.pid());
    flooding.store(false, std::sync::atomic::Ordering::SeqCst);
    let served = polls.await.unwrap();
    assert!(served > 0);
    eprintln!("the other node answered {served} STATUS polls during the flood");
    eprintln!(
        "{LOGS_COMMANDS} LOGS commands ({} KiB each) in {:?}: agent RSS {before} KiB before, {after} KiB after, peak {peak} KiB",
        LOG_BYTES / 1024,
        started.elapsed()
    );

    // The other requestor's node still serves, through its activity and its URL.
    let status = exec(
        &victim,
        &other.activity,
        json!([{"run": {"entry_point": "STATUS", "args": []}}]),
    )
    .await;
    assert_eq!(format!("{:?}", status[0].result), "Ok", "{status:?}");
    let creds = (
        other.status.auth.user.as_str(),
        other.status.auth.password.expose(),
    );
    rpc(&other.status.url, Some(creds), "eth_blockNumber", json!([]))
        .await
        .unwrap_or_else(|e| panic!("{e:?}\nagent log:\n{}", agent_log(&data_dir)));
    // And the flooded activity too: its first batches are gone, its latest answer.
    let again = exec(
        &attacker,
        &mine.activity,
        json!([{"run": {"entry_point": "LOGS", "args": ["3"]}}]),
    )
    .await;
    assert_eq!(format!("{:?}", again[0].result), "Ok", "{again:?}");

    // A script longer than the exe-unit takes is refused as a whole, with the reason.
    let long: Vec<_> = (0..65)
        .map(|_| json!({"run": {"entry_point": "LOGS", "args": ["1"]}}))
        .collect();
    let refused = attacker.exec(&mine.activity, &json!(long)).await;
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("at most 64 commands"), "{message}");
}

/// Agreements cost nothing until an activity runs: four of them would hold every slot of the
/// provider for as long as the requestor likes. The agent ends them after its deadline (as
/// ya-provider does after its `--idle-agreement-timeout`), and another requestor is served.
#[tokio::test(flavor = "multi_thread")]
async fn agreements_left_without_an_activity_end_at_the_deadline_and_another_requestor_is_served() {
    let net = GolemNet::spawn(GolemNetConfig::test().with_nodes(2, 1))
        .await
        .unwrap();
    let machine = Provider::start(1, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("agent");
    let _agent = start_agent(
        &net,
        &machine,
        &data_dir,
        &["--capacity", "4", "--agreement-idle-timeout", "3"],
    );
    let squatter = yagna(net.requestor(0));
    let mut squatted = Vec::new();
    for _ in 0..4 {
        let deal = make_deal(
            &squatter,
            &spec(net.requestor(0)),
            Duration::from_secs(30),
            |_| true,
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}\nagent log:\n{}", agent_log(&data_dir)));
        squatted.push(deal.agreement_id);
    }

    // The agent ends them at the deadline (before it, nothing else would: the provider stayed
    // at capacity for as long as the squatter liked)...
    for id in &squatted {
        wait_for(
            "the idle agreement to be terminated",
            Duration::from_secs(20),
            || async {
                let agreement = squatter.agreement(id).await.ok()?;
                (format!("{:?}", agreement.state) == "Terminated").then_some(())
            },
        )
        .await;
    }
    // ...and another requestor gets a node.
    let other = yagna(net.requestor(1));
    let bought = buy_dev_node(&other, net.requestor(1), &data_dir).await;
    let log = agent_log(&data_dir);
    assert!(log.contains("no activity created within 3s"), "{log}");
    other.destroy_activity(&bought.activity).await.unwrap();
}

/// A requestor that terminates its agreement gives its slot back at once (the agent follows the
/// market's agreement events), and if a node ran on it, the node stops and the time is invoiced.
#[tokio::test(flavor = "multi_thread")]
async fn a_requestor_terminating_its_agreement_frees_the_slot_and_stops_its_node() {
    let net = GolemNet::spawn(GolemNetConfig::test().with_nodes(2, 1))
        .await
        .unwrap();
    let machine = Provider::start(1, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("agent");
    // The default deadline (90 s) is far beyond what the second deal may wait for.
    let _agent = start_agent(&net, &machine, &data_dir, &["--capacity", "1"]);
    let (first, second) = (yagna(net.requestor(0)), yagna(net.requestor(1)));

    // An agreement without an activity, terminated by its requestor: the slot is free again.
    let deal = make_deal(
        &first,
        &spec(net.requestor(0)),
        Duration::from_secs(30),
        |_| true,
    )
    .await
    .unwrap();
    first
        .terminate_agreement(&deal.agreement_id, "changed my mind")
        .await
        .unwrap();
    let bought = make_deal(
        &second,
        &spec(net.requestor(1)),
        Duration::from_secs(15),
        |_| true,
    )
    .await
    .unwrap_or_else(|e| panic!("{e:?}\nagent log:\n{}", agent_log(&data_dir)));
    second
        .terminate_agreement(&bought.agreement_id, "not needed")
        .await
        .unwrap();

    // A running node whose requestor terminates the agreement (without destroying the
    // activity) is stopped: its credentials are refused, its instance is gone, it is invoiced.
    let since = erigolem_yagna::Utc::now() - erigolem_yagna::chrono::Duration::seconds(5);
    let node = buy_dev_node(&first, net.requestor(0), &data_dir).await;
    let creds = (
        node.status.auth.user.clone(),
        node.status.auth.password.expose().to_owned(),
    );
    first
        .terminate_agreement(&node.deal.agreement_id, "done with it")
        .await
        .unwrap();
    wait_for("the node to stop", Duration::from_secs(20), || async {
        let refused = matches!(
            rpc(
                &node.status.url,
                Some((&creds.0, &creds.1)),
                "eth_blockNumber",
                json!([])
            )
            .await,
            Err(RpcError::Http(401 | 404))
        );
        (refused && machine.instance_dirs().is_empty()).then_some(())
    })
    .await;
    wait_for("the invoice", Duration::from_secs(20), || async {
        for e in first
            .invoice_events(since, Duration::from_secs(1))
            .await
            .unwrap()
        {
            if first.invoice(&e.invoice_id).await.unwrap().agreement_id == node.deal.agreement_id {
                return Some(());
            }
        }
        None
    })
    .await;
    // And the slot is free for the other requestor.
    let again = buy_dev_node(&second, net.requestor(1), &data_dir).await;
    second.destroy_activity(&again.activity).await.unwrap();
}
