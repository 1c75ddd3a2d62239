//! Usage over time through the API: a known request mix through a node's URL (real runtime,
//! guard, Nginx and anvil) is what `/nodes/{id}/usage` reports, by method, and what the owner's
//! progress events carry; nobody else sees it; bad windows are refused.

use std::collections::BTreeMap;
use std::time::Duration;

use erigolem_test_utils::wallet::{DEV_KEY_0, DEV_KEY_1};
use erigolem_test_utils::{rpc, wait_for};
use reqwest::StatusCode;
use serde_json::json;

use crate::nodes::{read_frames, server_with_nodes, Api};

#[tokio::test]
async fn usage_reports_the_request_mix_by_method_to_its_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let h = server_with_nodes(dir.path(), |_| {}).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let bob = Api::signed_in(&h, DEV_KEY_1).await;
    let (status, created) = alice.post("/nodes", json!({"network": "dev"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let node = alice.wait_state(&id, "running").await;
    let url = node["url"].as_str().unwrap().to_owned();
    let auth = (
        node["auth"]["user"].as_str().unwrap(),
        node["auth"]["password"].as_str().unwrap(),
    );

    // The mix: 4 eth_blockNumber, 3 eth_chainId (one of them in a batch of two, with
    // net_version), 1 eth_getBalance the node answers with an error (a malformed address).
    for _ in 0..4 {
        rpc(&url, Some(auth), "eth_blockNumber", json!([]))
            .await
            .unwrap();
    }
    for _ in 0..2 {
        rpc(&url, Some(auth), "eth_chainId", json!([]))
            .await
            .unwrap();
    }
    let batch = reqwest::Client::new()
        .post(&url)
        .basic_auth(auth.0, Some(auth.1))
        .json(&json!([
            {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
            {"jsonrpc": "2.0", "id": 2, "method": "net_version", "params": []},
        ]))
        .send()
        .await
        .unwrap();
    assert!(batch.status().is_success());
    let bad = rpc(
        &url,
        Some(auth),
        "eth_getBalance",
        json!(["0xnot-an-address", "latest"]),
    )
    .await;
    assert!(bad.is_err(), "{bad:?}");
    let want: BTreeMap<String, u64> = [
        ("eth_blockNumber", 4),
        ("eth_chainId", 3),
        ("eth_getBalance", 1),
        ("net_version", 1),
    ]
    .into_iter()
    .map(|(m, n)| (m.to_owned(), n))
    .collect();

    let usage = wait_for("the mix in /usage", Duration::from_secs(30), || async {
        let (status, usage) = alice.get(&format!("/nodes/{id}/usage?window=1h")).await;
        assert_eq!(status, StatusCode::OK, "{usage}");
        (usage["totals"]["requests"] == 9).then_some(usage)
    })
    .await;
    let methods: BTreeMap<String, u64> =
        serde_json::from_value(usage["totals"]["methods"].clone()).unwrap();
    assert_eq!(methods, want, "{usage}");
    assert_eq!(usage["totals"]["errors"], 1, "{usage}");
    assert_eq!(usage["window"], "1h");
    assert_eq!(usage["step_secs"], 60);
    let points = usage["points"].as_array().unwrap();
    assert!(!points.is_empty());
    let summed: u64 = points.iter().map(|p| p["requests"].as_u64().unwrap()).sum();
    assert_eq!(summed, 9);
    assert!(
        points.iter().any(|p| p["block"].is_u64()),
        "heights are sampled: {usage}"
    );
    assert!(usage["totals"]["latency_p50_us"].is_u64(), "{usage}");
    // Polls after the mix add nothing (the difference of unchanged counters is zero).
    for window in ["6h", "24h"] {
        let (status, other) = alice
            .get(&format!("/nodes/{id}/usage?window={window}"))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(other["totals"]["requests"], 9, "{window}: {other}");
    }

    // Operators who scrape get the node's series, labelled by node and method.
    let metrics = reqwest::get(format!("{}/metrics", h.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (method, n) in &want {
        let series =
            format!("erigolem_node_requests_total{{node=\"{id}\",method=\"{method}\"}} {n}");
        assert!(metrics.contains(&series), "{series} missing:\n{metrics}");
    }
    assert!(metrics.contains(&format!("erigolem_node_errors_total{{node=\"{id}\"}} 1")));

    // The owner's progress events carry the deltas: one more call shows up as one.
    let token = alice.token.clone();
    let reader = read_frames(
        &h,
        &token,
        None,
        "progress",
        Duration::from_secs(30),
        |ev| {
            ev.iter()
                .any(|(_, p)| p["usage"]["methods"]["eth_gasPrice"] == 1)
        },
    );
    // The delta reaches the stream at the next STATUS poll (every 2 s), after it subscribed.
    let call = async {
        rpc(&url, Some(auth), "eth_gasPrice", json!([]))
            .await
            .unwrap();
    };
    let (frames, ()) = tokio::join!(reader, call);
    let delta = frames
        .iter()
        .map(|(_, p)| p)
        .find(|p| p["usage"]["methods"]["eth_gasPrice"] == 1);
    assert!(
        delta.is_some(),
        "no progress event carried the call: {frames:?}"
    );
    let delta = delta.unwrap();
    assert_eq!(delta["node_id"], id.as_str());
    assert_eq!(delta["usage"]["requests"], 1, "{delta}");

    // Someone else's node, a node that does not exist: 404 alike. Bad windows: 400.
    let (status, body) = bob.get(&format!("/nodes/{id}/usage")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    assert!(!body.to_string().contains("eth_"));
    assert_eq!(
        alice.get("/nodes/nope/usage").await.0,
        StatusCode::NOT_FOUND
    );
    let long = "x".repeat(5_000);
    for (query, code) in [
        ("window=2h", "invalid_window"),
        ("window=", "invalid_window"),
        (&*format!("window={long}"), "invalid_window"),
        ("window=1h&window=6h", "invalid_query"),
    ] {
        let (status, body) = alice.get(&format!("/nodes/{id}/usage?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}");
        assert!(
            body.to_string().len() < 500,
            "the error does not echo the input back whole"
        );
    }
}
