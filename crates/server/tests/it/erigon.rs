//! Erigon nodes through the REST API: what `/networks` tells before a node is started (release,
//! prune modes, disk), networks that are gone or cannot be served, and a node that lags.

use std::time::Duration;

use erigolem_server::{spawn, ServerConfig};
use erigolem_test_utils::wallet::DEV_KEY_0;
use erigolem_test_utils::{anvil_bin, fake_erigon, wait_for_every};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::nodes::{local, server_with_nodes, Api};

fn offer<'a>(networks: &'a Value, network: &str) -> Option<&'a Value> {
    networks
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["network"] == network)
}

#[tokio::test]
async fn networks_tell_the_release_prune_modes_and_disk_of_each_network() {
    let dir = tempfile::tempdir().unwrap();
    let h = server_with_nodes(dir.path(), |_| {}).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let (status, networks) = alice.get("/networks").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = networks
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["network"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["mainnet", "sepolia", "hoodi", "dev"],
        "holesky is gone"
    );
    let sepolia = offer(&networks, "sepolia").unwrap();
    assert_eq!(sepolia["engine"], "erigon");
    assert_eq!(sepolia["engine_version"], "3.6.1");
    assert_eq!(
        sepolia["prunes"],
        json!(["full", "archive", "minimal", "blocks"])
    );
    let disk = sepolia["disk"].as_array().unwrap();
    assert_eq!(disk.len(), 4);
    assert_eq!(disk[0]["prune"], "full");
    assert_eq!(disk[0]["bytes"], 238_710_000_000_u64);
    assert_eq!(disk[0]["basis"], "measured");
    assert!(disk[0]["source"].as_str().unwrap().contains("PR #23113"));
    assert_eq!(disk[3]["prune"], "blocks");
    assert_eq!(disk[3]["basis"], "at_most");
    let dev = offer(&networks, "dev").unwrap();
    assert_eq!(dev["prunes"], json!([]));
    assert_eq!(dev["disk"], json!([]));
    assert!(
        dev["engine_version"].as_str().unwrap().starts_with('1'),
        "{dev}"
    );
}

#[tokio::test]
async fn networks_that_are_gone_or_cannot_be_served_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bins = tempfile::tempdir().unwrap();
    let (old, _) = fake_erigon(bins.path(), "3.0.12", &[]);
    let h = server_with_nodes(dir.path(), |c| local(c).erigon_bin = Some(old)).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let (status, body) = alice.post("/nodes", json!({"network": "holesky"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("holesky was shut down"), "{body}");
    // Erigon 3.0 has no `blocks` prune mode: refused before anything starts.
    let (status, body) = alice
        .post("/nodes", json!({"network": "mainnet", "prune": "blocks"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "unsupported_prune");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("offered: full, archive, minimal"));
    drop(h);

    // An erigon that is not one (anvil in its place) is not offered at all.
    let dir = tempfile::tempdir().unwrap();
    let h = server_with_nodes(dir.path(), |c| local(c).erigon_bin = Some(anvil_bin())).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let (_, networks) = alice.get("/networks").await;
    assert!(offer(&networks, "sepolia").is_none(), "{networks}");
    let (status, body) = alice.post("/nodes", json!({"network": "sepolia"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not offered here (offered: dev)"));
}

/// A node stored before holesky was retired comes back failed with the reason (never started as
/// another network).
#[tokio::test]
async fn a_stored_holesky_node_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = |dir: &std::path::Path| {
        let mut c = ServerConfig::test(dir);
        c.chain_ids = vec![1];
        c
    };
    let h = spawn(config(dir.path())).await.unwrap();
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let (_, me) = alice.get("/me").await;
    let owner = me["address"].as_str().unwrap().to_owned();
    h.shutdown().await;
    let key = erigolem_store::KeyFile::load_or_create(dir.path().join("secret.key")).unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("erigolem.db").display()
    );
    let store = erigolem_store::Store::connect(&url, key).await.unwrap();
    let node = store
        .insert_node(&erigolem_store::NewNode {
            owner,
            name: "old testnet".into(),
            network: "holesky".into(),
            mode: "dedicated".into(),
            prune: "full".into(),
            access: None,
        })
        .await
        .unwrap();
    store.close().await;
    let h = server_with_nodes(dir.path(), |_| {}).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let failed = alice.wait_state(&node.id, "failed").await;
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("holesky was shut down"), "{reason}");
    assert!(reason.contains("use hoodi or sepolia"), "{reason}");
}

/// fake-erigon told to fall behind: the node view's `behind_seconds` grows and it is `lagging`
/// once past the server's threshold; progress events say so too.
#[tokio::test]
async fn a_node_that_falls_behind_is_shown_as_lagging() {
    let dir = tempfile::tempdir().unwrap();
    let bins = tempfile::tempdir().unwrap();
    let env = [
        ("FAKE_ERIGON_SYNC_TARGET", "100"),
        ("FAKE_ERIGON_SYNC_RATE", "1000"),
        ("FAKE_ERIGON_SLOT_SECS", "1"),
        ("FAKE_ERIGON_LAG_AFTER_SECS", "3"),
    ];
    let (erigon, _) = fake_erigon(bins.path(), "3.6.1", &env);
    let h = server_with_nodes(dir.path(), |c| {
        local(c).erigon_bin = Some(erigon);
        c.lag_seconds = 3;
    })
    .await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let (_, created) = alice.post("/nodes", json!({"network": "hoodi"})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    alice.wait_state(&id, "running").await;
    // Polled at 10/s: faster polls exhaust the per-address rate limit (50/s), and the events
    // stream below would then be refused with 429.
    let every = Duration::from_millis(100);
    let keeping_up = wait_for_every(
        "a poll at the tip",
        Duration::from_secs(10),
        every,
        || async {
            let (_, n) = alice.get(&format!("/nodes/{id}")).await;
            (n["behind_seconds"].as_u64().is_some_and(|b| b <= 1)).then_some(n)
        },
    )
    .await;
    assert_eq!(keeping_up["lagging"], false, "{keeping_up}");
    assert_eq!(keeping_up["engine_version"], "3.6.1");
    assert_eq!(keeping_up["limits"]["block_range"], 10_000);
    assert_eq!(keeping_up["peers"], 5);
    let lagging = wait_for_every(
        "the node to be lagging",
        Duration::from_secs(20),
        every,
        || async {
            let (_, n) = alice.get(&format!("/nodes/{id}")).await;
            (n["lagging"] == true).then_some(n)
        },
    )
    .await;
    assert!(lagging["behind_seconds"].as_u64().unwrap() > 3, "{lagging}");
    assert_eq!(lagging["block"], keeping_up["block"]);
    let (events, _) = tokio::join!(
        crate::nodes::read_frames(
            &h,
            &alice.token,
            None,
            "progress",
            Duration::from_secs(10),
            |ev| {
                ev.iter()
                    .any(|(_, e)| e["node_id"] == id.as_str() && e["lagging"] == true)
            }
        ),
        async {}
    );
    let event = events
        .iter()
        .find(|(_, e)| e["lagging"] == true)
        .map(|(_, e)| e.clone());
    assert!(
        event.is_some_and(|e| e["behind_seconds"].as_u64().unwrap() > 3),
        "{events:?}"
    );
    alice.post(&format!("/nodes/{id}/stop"), json!({})).await;
    alice.wait_state(&id, "stopped").await;
}
