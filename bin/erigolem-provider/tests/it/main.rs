//! `erigolem-provider run` end to end in the local Golem network (offline): a requestor written
//! against yagna's REST API buys a dev-chain node from the real agent (real exe-unit, real runtime,
//! real Nginx), uses its URL, destroys the activity, pays the invoice, and the provider is paid on
//! the local chain. The harness refuses to start yagna unless the network namespace has only
//! loopback, so nothing here can use anything else.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{
    agent_log, buy_dev_node, exec, node_processes, start_agent, start_agent_priced, yagna,
};
use erigolem_test_utils::golem::{GolemNet, GolemNetConfig, PAYMENT_PLATFORM};
use erigolem_test_utils::provider::Provider;
use erigolem_test_utils::{alive, rpc, wait_for, RpcError};
use erigolem_yagna::model::payment::{
    allocation::PaymentPlatformEnum, Acceptance, DocumentStatus, NewAllocation,
};
use erigolem_yagna::{BigDecimal, Utc};
use serde_json::json;

#[tokio::test]
async fn buy_a_node_use_it_destroy_it_and_the_provider_is_paid_on_chain() {
    let net = GolemNet::spawn(GolemNetConfig::test()).await.unwrap();
    let machine = Provider::start(2, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("agent");
    let _agent = start_agent(&net, &machine, &data_dir, &[]);
    let r = yagna(net.requestor(0));
    let provider_id = net.provider(0).node_id.to_lowercase();
    let paid_before = net.chain().token_balance(&provider_id).await.unwrap();
    let allocation = r
        .create_allocation(&NewAllocation {
            address: None,
            payment_platform: Some(PaymentPlatformEnum::PaymentPlatformName(
                PAYMENT_PLATFORM.into(),
            )),
            total_amount: "100".parse().unwrap(),
            timeout: None,
            deposit: None,
            make_deposit: false,
        })
        .await
        .unwrap();

    let bought = buy_dev_node(&r, net.requestor(0), &data_dir).await;
    eprintln!("demand → working URL: {:?}", bought.phases);
    let (deal, activity, status) = (bought.deal, bought.activity, bought.status);
    assert_eq!(deal.provider_id, provider_id);
    let creds = (status.auth.user.as_str(), status.auth.password.expose());

    // Usage heartbeats keep the activity alive past yagna's inactivity limit (10 s without one).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let state = r.activity_state(&activity).await.unwrap();
    assert_eq!(state["state"][0], "Ready", "{state}");
    let again = exec(
        &r,
        &activity,
        json!([{"run": {"entry_point": "STATUS", "args": []}}]),
    )
    .await;
    assert_eq!(format!("{:?}", again[0].result), "Ok", "{again:?}");

    // Debit notes arrive while it runs; accept them.
    let since = Utc::now() - erigolem_yagna::chrono::Duration::seconds(60);
    let notes = wait_for("a debit note", Duration::from_secs(20), || async {
        let events = r
            .debit_note_events(since, Duration::from_secs(1))
            .await
            .unwrap();
        (!events.is_empty()).then_some(events)
    })
    .await;
    for event in notes {
        let note = r.debit_note(&event.debit_note_id).await.unwrap();
        r.accept_debit_note(
            &note.debit_note_id,
            &Acceptance {
                total_amount_accepted: note.total_amount_due.clone(),
                allocation_id: allocation.allocation_id.clone(),
            },
        )
        .await
        .unwrap();
    }

    // Destroying the activity revokes the credentials and stops the node.
    r.destroy_activity(&activity).await.unwrap();
    wait_for(
        "the URL to refuse the credentials",
        Duration::from_secs(20),
        || async {
            matches!(
                rpc(&status.url, Some(creds), "eth_blockNumber", json!([])).await,
                Err(RpcError::Http(401 | 404))
            )
            .then_some(())
        },
    )
    .await;
    wait_for(
        "the instance to be gone",
        Duration::from_secs(20),
        || async {
            (machine.gateway_entries().is_empty() && machine.instance_dirs().is_empty())
                .then_some(())
        },
    )
    .await;

    // The invoice comes; accepting it pays the provider on the chain.
    let invoice = wait_for("the invoice", Duration::from_secs(30), || async {
        for e in r
            .invoice_events(since, Duration::from_secs(1))
            .await
            .unwrap()
        {
            let inv = r.invoice(&e.invoice_id).await.unwrap();
            if inv.agreement_id == deal.agreement_id {
                return Some(inv);
            }
        }
        None
    })
    .await;
    let amount: f64 = invoice.amount.to_string().parse().unwrap();
    // 0.5 start fee + 36 GLM/h for the seconds it ran (well under a minute here).
    assert!((0.5..1.0).contains(&amount), "invoice amount {amount}");
    r.accept_invoice(
        &invoice.invoice_id,
        &Acceptance {
            total_amount_accepted: invoice.amount.clone(),
            allocation_id: allocation.allocation_id.clone(),
        },
    )
    .await
    .unwrap();
    let p = yagna(net.provider(0));
    wait_for(
        "the invoice to be settled",
        Duration::from_secs(60),
        || async {
            (p.invoice(&invoice.invoice_id).await.unwrap().status == DocumentStatus::Settled)
                .then_some(())
        },
    )
    .await;
    let paid_after = net.chain().token_balance(&provider_id).await.unwrap();
    let wei: BigDecimal = invoice.amount.clone() * BigDecimal::from(1_000_000_000_000_000_000u64);
    assert_eq!(
        paid_after - paid_before,
        wei.to_string()
            .split('.')
            .next()
            .unwrap()
            .parse::<u128>()
            .unwrap(),
        "the provider's token balance grew by the invoice"
    );
    assert!(agent_log(&data_dir).contains("invoice sent"));
}

#[tokio::test]
async fn requests_priced_per_request_are_invoiced_exactly() {
    const REQUESTS: &str = "golem.usage.erigolem.requests";
    let net = GolemNet::spawn(GolemNetConfig::test()).await.unwrap();
    let machine = Provider::start(2, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("agent");
    let _agent = start_agent_priced(
        &net,
        &machine,
        &data_dir,
        &[
            "--price-per-hour",
            "0",
            "--start-fee",
            "0.5",
            "--price-per-request",
            "0.001",
        ],
    );
    let r = yagna(net.requestor(0));
    let allocation = r
        .create_allocation(&NewAllocation {
            address: None,
            payment_platform: Some(PaymentPlatformEnum::PaymentPlatformName(
                PAYMENT_PLATFORM.into(),
            )),
            total_amount: "10".parse().unwrap(),
            timeout: None,
            deposit: None,
            make_deposit: false,
        })
        .await
        .unwrap();
    let since = Utc::now() - erigolem_yagna::chrono::Duration::seconds(60);
    // buy_dev_node makes one call through the endpoint.
    let bought = buy_dev_node(&r, net.requestor(0), &data_dir).await;
    let price =
        erigolem_yagna::props::LinearPrice::from_properties(&bought.deal.offer.properties).unwrap();
    assert_eq!(price.coeff(REQUESTS), Some(0.001), "{price:?}");
    let at = price
        .usage_vector
        .iter()
        .position(|n| n == REQUESTS)
        .unwrap();
    let status = &bought.status;
    let creds = (status.auth.user.as_str(), status.auth.password.expose());
    for _ in 0..30 {
        rpc(&status.url, Some(creds), "eth_blockNumber", json!([]))
            .await
            .unwrap();
    }
    let batch: Vec<_> = (0..5)
        .map(|i| json!({"jsonrpc":"2.0","id":i,"method":"eth_chainId"}))
        .collect();
    let client = reqwest::Client::new();
    let post = |body: serde_json::Value, password: &str| {
        client
            .post(&status.url)
            .basic_auth(creds.0, Some(password))
            .json(&body)
            .send()
    };
    assert_eq!(post(json!(batch), creds.1).await.unwrap().status(), 200);
    // Not billed: refused by the policy, or by the credentials.
    for _ in 0..3 {
        let answer: serde_json::Value = post(
            json!({"jsonrpc":"2.0","id":1,"method":"admin_peers"}),
            creds.1,
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        assert_eq!(answer["error"]["code"], -32601);
        assert_eq!(
            post(
                json!({"jsonrpc":"2.0","id":1,"method":"eth_chainId"}),
                "wrong"
            )
            .await
            .unwrap()
            .status(),
            401
        );
    }
    let billable = 1 + 30 + 5;

    // The exe-unit reports the count to yagna in the agreement's usage vector, and debit notes
    // carry it; accept them.
    wait_for(
        "the request count at yagna",
        Duration::from_secs(10),
        || async {
            let usage = r.activity_usage(&bought.activity).await.ok()?;
            (usage["currentUsage"][at].as_f64() == Some(billable as f64)).then_some(())
        },
    )
    .await;
    let note = wait_for(
        "a debit note with the requests",
        Duration::from_secs(20),
        || async {
            for event in r
                .debit_note_events(since, Duration::from_secs(1))
                .await
                .ok()?
            {
                let note = r.debit_note(&event.debit_note_id).await.ok()?;
                let counted = note.usage_counter_vector.as_ref()?[at].as_f64();
                if counted == Some(billable as f64) {
                    return Some(note);
                }
            }
            None
        },
    )
    .await;
    assert_eq!(
        note.total_amount_due,
        "0.536".parse::<BigDecimal>().unwrap()
    );
    r.accept_debit_note(
        &note.debit_note_id,
        &Acceptance {
            total_amount_accepted: note.total_amount_due.clone(),
            allocation_id: allocation.allocation_id.clone(),
        },
    )
    .await
    .unwrap();

    r.destroy_activity(&bought.activity).await.unwrap();
    let invoice = wait_for("the invoice", Duration::from_secs(30), || async {
        for e in r.invoice_events(since, Duration::from_secs(1)).await.ok()? {
            let inv = r.invoice(&e.invoice_id).await.ok()?;
            if inv.agreement_id == bought.deal.agreement_id {
                return Some(inv);
            }
        }
        None
    })
    .await;
    // The start fee plus requests × price, exactly: 0.5 + 36 × 0.001.
    assert_eq!(
        invoice.amount,
        "0.536".parse::<BigDecimal>().unwrap(),
        "{}",
        agent_log(&data_dir)
    );
    r.accept_invoice(
        &invoice.invoice_id,
        &Acceptance {
            total_amount_accepted: invoice.amount.clone(),
            allocation_id: allocation.allocation_id.clone(),
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_agent_killed_mid_activity_ends_it_cleanly_when_restarted() {
    let net = GolemNet::spawn(GolemNetConfig::test()).await.unwrap();
    let machine = Provider::start(2, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("agent");
    let agent = start_agent(&net, &machine, &data_dir, &[]);
    let r = yagna(net.requestor(0));
    let bought = buy_dev_node(&r, net.requestor(0), &data_dir).await;
    let (deal, activity, status) = (bought.deal, bought.activity, bought.status);
    let creds = (
        status.auth.user.clone(),
        status.auth.password.expose().to_owned(),
    );
    assert!(!node_processes(&machine, &data_dir).is_empty());

    // SIGKILL: no chance to clean up. Its runtime sees its pipes close and takes the node down.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for(
        "the node to go with the agent",
        Duration::from_secs(20),
        || async {
            let refused = rpc(
                &status.url,
                Some((&creds.0, &creds.1)),
                "eth_blockNumber",
                json!([]),
            )
            .await
            .is_err();
            (refused
                && node_processes(&machine, &data_dir)
                    .iter()
                    .all(|p| !alive(*p)))
            .then_some(())
        },
    )
    .await;
    drop(agent);

    // The new agent ends what the old one left: activity Terminated, agreement terminated, invoiced.
    let _agent = start_agent(&net, &machine, &data_dir, &[]);
    wait_for(
        "the agreement to be terminated",
        Duration::from_secs(30),
        || async {
            let agreement = r.agreement(&deal.agreement_id).await.ok()?;
            (format!("{:?}", agreement.state) == "Terminated").then_some(())
        },
    )
    .await;
    let state = r.activity_state(&activity).await.unwrap();
    assert_eq!(state["state"][0], "Terminated", "{state}");
    let since = Utc::now() - erigolem_yagna::chrono::Duration::seconds(120);
    wait_for(
        "the invoice for the time it ran",
        Duration::from_secs(30),
        || async {
            for e in r
                .invoice_events(since, Duration::from_secs(1))
                .await
                .unwrap()
            {
                if r.invoice(&e.invoice_id).await.unwrap().agreement_id == deal.agreement_id {
                    return Some(());
                }
            }
            None
        },
    )
    .await;
    let remembered = std::fs::read_to_string(data_dir.join("agent-state.json")).unwrap();
    assert!(!remembered.contains(&deal.agreement_id), "{remembered}");
    assert!(machine.gateway_entries().is_empty() && machine.sockets().is_empty());
}

#[tokio::test]
async fn a_requestor_that_does_not_accept_debit_notes_loses_the_node() {
    let net = GolemNet::spawn(GolemNetConfig::test()).await.unwrap();
    let machine = Provider::start(2, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("agent");
    let _agent = start_agent(
        &net,
        &machine,
        &data_dir,
        &["--debit-note-accept-timeout", "3"],
    );
    let r = yagna(net.requestor(0));
    let bought = buy_dev_node(&r, net.requestor(0), &data_dir).await;
    let creds = (
        bought.status.auth.user.clone(),
        bought.status.auth.password.expose().to_owned(),
    );
    // Debit notes every 2 s, none accepted: after 3 s past the first, the agent ends it.
    wait_for(
        "the agreement to be terminated",
        Duration::from_secs(30),
        || async {
            let agreement = r.agreement(&bought.deal.agreement_id).await.ok()?;
            (format!("{:?}", agreement.state) == "Terminated").then_some(())
        },
    )
    .await;
    let refused = rpc(
        &bought.status.url,
        Some((&creds.0, &creds.1)),
        "eth_blockNumber",
        json!([]),
    )
    .await;
    assert!(
        matches!(refused, Err(RpcError::Http(401 | 404))),
        "{refused:?}"
    );
    let log = agent_log(&data_dir);
    assert!(
        log.contains("debit notes were not accepted in time"),
        "{log}"
    );
}

#[tokio::test]
async fn the_agent_keeps_selling_after_its_yagna_restarts() {
    let mut net = GolemNet::spawn(GolemNetConfig::test()).await.unwrap();
    let machine = Provider::start(2, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("agent");
    let _agent = start_agent(&net, &machine, &data_dir, &[]);
    let r = yagna(net.requestor(0));
    let first = buy_dev_node(&r, net.requestor(0), &data_dir).await;
    r.destroy_activity(&first.activity).await.unwrap();

    let provider = net
        .nodes()
        .iter()
        .position(|n| n.node_id == net.provider(0).node_id)
        .unwrap();
    net.restart(provider).await.unwrap();
    // The agent reconnects (and publishes its offer again if yagna lost it): a new node can be bought.
    let second = buy_dev_node(&r, net.requestor(0), &data_dir).await;
    assert_eq!(second.deal.provider_id, first.deal.provider_id);
    r.destroy_activity(&second.activity).await.unwrap();
}
