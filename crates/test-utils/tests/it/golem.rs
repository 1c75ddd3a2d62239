//! The local Golem network: chain + router + yagna daemons come up, talk through the market, and
//! go away completely. Run offline (`unshare -n`), as scripts/test.sh does.

use std::time::{Duration, Instant};

use erigolem_test_utils::golem::{
    GolemNet, GolemNetConfig, GolemNetError, Role, HOODI_CHAIN_ID, PAYMENT_PLATFORM,
};
use erigolem_test_utils::{alive, rpc, wait_for};
use serde_json::{json, Value};

fn nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[tokio::test(flavor = "multi_thread")]
async fn net_comes_up_trades_and_goes_away() {
    let net = GolemNet::spawn(GolemNetConfig::test()).await.unwrap();
    eprintln!(
        "golem net (1 requestor + 1 provider) up in {} ms",
        net.bring_up().as_millis()
    );
    for line in net.env_lines() {
        eprintln!("  {line}");
    }

    // Chain: the hoodi chain id, and the requestor holds minted tGLM.
    let chain_id = rpc(&net.chain().rpc_url(), None, "eth_chainId", json!([]))
        .await
        .unwrap();
    assert_eq!(chain_id, json!(format!("{HOODI_CHAIN_ID:#x}")));
    let requestor = net.requestor(0);
    let provider = net.provider(0);
    assert_eq!(requestor.role, Role::Requestor);
    assert_eq!(provider.role, Role::Provider);
    assert!(net.chain().token_balance(&requestor.node_id).await.unwrap() > 0);
    assert_eq!(
        net.chain().token_balance(&provider.node_id).await.unwrap(),
        0
    );

    // Each daemon answers /me with its fixed identity, and refuses a wrong key.
    for node in net.nodes() {
        let me = node.get("/me").await.unwrap();
        assert_eq!(me["identity"], node.node_id.as_str(), "{}", node.name);
        assert!(node.gsb_url.starts_with("unix:"));
        assert!(node.datadir.join("config-payments.toml").is_file());
    }
    assert_ne!(requestor.node_id, provider.node_id);
    let unauthorized = reqwest::Client::new()
        .get(format!("{}/me", requestor.api_url))
        .bearer_auth("wrong-key")
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status().as_u16(), 401);

    // Market across the router: the provider's offer reaches the requestor as a proposal.
    let nonce = nonce();
    let offer = json!({
        "properties": {
            "golem.node.id.name": provider.name,
            "golem.runtime.name": "erigon",
            "golem.runtime.version": "0.1.0",
            "golem.inf.cpu.threads": 1,
            "golem.com.scheme": "payu",
            "golem.com.pricing.model": "linear",
            "golem.com.pricing.model.linear.coeffs": [0.0, 0.0, 0.0],
            "golem.com.usage.vector": ["golem.usage.duration_sec", "golem.usage.cpu_sec"],
            format!("golem.com.payment.platform.{PAYMENT_PLATFORM}.address"): provider.node_id,
            "golem.com.payment.protocol.version": 3,
            "golem.com.payment.debit-notes.accept-timeout?": 240,
            "erigolem.test.nonce": nonce,
        },
        "constraints": "(golem.srv.comp.expiration>0)",
    });
    let published = Instant::now();
    let offer_id = provider
        .post("/market-api/v1/offers", &offer)
        .await
        .unwrap();
    let offer_id = offer_id.as_str().unwrap().to_owned();

    let demand = json!({
        "properties": {
            "golem.node.id.name": requestor.name,
            "golem.srv.comp.expiration": (now_ms() + 600_000) as u64,
            "golem.com.payment.chosen-platform": PAYMENT_PLATFORM,
            format!("golem.com.payment.platform.{PAYMENT_PLATFORM}.address"): requestor.node_id,
        },
        "constraints": format!("(&(golem.runtime.name=erigon)(erigolem.test.nonce={nonce}))"),
    });
    let demand_id = requestor
        .post("/market-api/v1/demands", &demand)
        .await
        .unwrap();
    let demand_id = demand_id.as_str().unwrap().to_owned();

    let events_path = format!("/market-api/v1/demands/{demand_id}/events?timeout=1&maxEvents=10");
    let proposal: Value = wait_for("the offer as a proposal", Duration::from_secs(30), || {
        let events_path = events_path.clone();
        async move {
            let events = requestor.get(&events_path).await.unwrap();
            events
                .as_array()?
                .iter()
                .find_map(|e| (e["eventType"] == "ProposalEvent").then(|| e["proposal"].clone()))
        }
    })
    .await;
    eprintln!(
        "offer reached the requestor as a proposal in {} ms",
        published.elapsed().as_millis()
    );
    assert_eq!(proposal["issuerId"], provider.node_id.as_str());
    let props = &proposal["properties"];
    let runtime = props
        .get("golem.runtime.name")
        .or_else(|| props.pointer("/golem/runtime/name"));
    assert_eq!(runtime, Some(&json!("erigon")), "{proposal}");

    provider
        .delete(&format!("/market-api/v1/offers/{offer_id}"))
        .await
        .unwrap();
    requestor
        .delete(&format!("/market-api/v1/demands/{demand_id}"))
        .await
        .unwrap();

    // Teardown: every process ends with the handle.
    let pids = net.pids();
    assert_eq!(pids.len(), 4);
    assert!(pids.iter().all(|p| alive(*p)));
    let dir = net.dir().to_owned();
    let stopping = Instant::now();
    drop(net);
    eprintln!("golem net down in {} ms", stopping.elapsed().as_millis());
    for pid in pids {
        assert!(!alive(pid), "pid {pid} outlived the net");
    }
    assert!(!dir.exists(), "the temporary dir is removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn net_with_more_nodes_gives_each_its_own_identity() {
    let net = GolemNet::spawn(GolemNetConfig::test().with_nodes(2, 1))
        .await
        .unwrap();
    eprintln!(
        "golem net (2 requestors + 1 provider) up in {} ms",
        net.bring_up().as_millis()
    );
    let ids: std::collections::BTreeSet<_> = net.nodes().iter().map(|n| &n.node_id).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(net.requestors().count(), 2);
    for r in net.requestors() {
        assert!(net.chain().token_balance(&r.node_id).await.unwrap() > 0);
    }
    let pids = net.pids();
    drop(net);
    assert!(pids.iter().all(|p| !alive(*p)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_test_still_ends_the_net() {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = tokio::spawn(async move {
        let net = GolemNet::spawn(GolemNetConfig::test().with_nodes(0, 1))
            .await
            .unwrap();
        tx.send(net.pids()).unwrap();
        panic!("test failure while the net is up");
    });
    assert!(handle.await.unwrap_err().is_panic());
    let pids = rx.recv().unwrap();
    assert_eq!(pids.len(), 3);
    for pid in pids {
        assert!(!alive(pid), "pid {pid} outlived a panic");
    }
}

#[tokio::test]
async fn missing_yagna_points_to_setup() {
    let config = GolemNetConfig {
        yagna: Some("/nonexistent/yagna".into()),
        ..GolemNetConfig::test()
    };
    let err = GolemNet::spawn(config).await.unwrap_err();
    assert!(
        matches!(err, GolemNetError::MissingTool { what: "yagna", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("scripts/setup.sh"), "{err}");
}

#[tokio::test]
async fn too_many_nodes_is_an_error() {
    let err = GolemNet::spawn(GolemNetConfig::test().with_nodes(5, 5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, GolemNetError::TooManyNodes { asked: 10, max: 9 }),
        "{err}"
    );
}
