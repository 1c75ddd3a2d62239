//! Nodes through the REST API with the local backend: a real runtime per node behind the server's
//! own Nginx, anvil for `dev` (and anvil posing as a broken erigon).

use std::time::Duration;

use erigolem_server::backend::local::LocalConfig;
use erigolem_server::{spawn, Handle, ServerConfig};
use erigolem_test_utils::wallet::{DEV_KEY_0, DEV_KEY_1};
use erigolem_test_utils::{
    anvil_bin, free_port, free_port_block, rpc, wait_for, workspace_bin, RpcError,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::sign_in;

async fn server_with_nodes(dir: &std::path::Path, tweak: impl FnOnce(&mut ServerConfig)) -> Handle {
    let mut config = ServerConfig::test(dir);
    config.chain_ids = vec![1];
    config.backend = Some(LocalConfig {
        runtime_bin: workspace_bin("ya-runtime-erigon"),
        anvil_bin: Some(anvil_bin()),
        erigon_bin: Some(workspace_bin("fake-erigon")),
        gateway_listen: ([127, 0, 0, 1], free_port()).into(),
        max_nodes: 4,
        port_base: free_port_block(erigolem_engine_block() * 4),
    });
    tweak(&mut config);
    spawn(config).await.unwrap()
}

fn erigolem_engine_block() -> u16 {
    12
}

struct Api<'a> {
    h: &'a Handle,
    token: String,
}

impl Api<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.h.url())
    }
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }
    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = reqwest::Client::new()
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }
    async fn delete(&self, path: &str) -> StatusCode {
        reqwest::Client::new()
            .delete(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .status()
    }
    async fn wait_state(&self, id: &str, want: &str) -> Value {
        wait_for(
            &format!("node {id} to be {want}"),
            Duration::from_secs(30),
            || async {
                let (_, node) = self.get(&format!("/nodes/{id}")).await;
                (node["state"] == want).then_some(node)
            },
        )
        .await
    }
}

#[tokio::test]
async fn create_use_stop_delete_and_nobody_else_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let h = server_with_nodes(dir.path(), |_| {}).await;
    let alice = Api {
        h: &h,
        token: sign_in(&h, DEV_KEY_0).await,
    };
    let bob = Api {
        h: &h,
        token: sign_in(&h, DEV_KEY_1).await,
    };

    let (status, networks) = alice.get("/networks").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        networks
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["network"] == "dev"),
        "{networks}"
    );

    let (status, created) = alice
        .post("/nodes", json!({"network": "dev", "name": "my dev"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["state"], "pending");
    let id = created["id"].as_str().unwrap().to_owned();
    let node = alice.wait_state(&id, "running").await;
    let url = node["url"].as_str().unwrap().to_owned();
    let (user, password) = (
        node["auth"]["user"].as_str().unwrap(),
        node["auth"]["password"].as_str().unwrap(),
    );
    let block = rpc(&url, Some((user, password)), "eth_blockNumber", json!([]))
        .await
        .unwrap();
    assert!(block.as_str().unwrap().starts_with("0x"));
    assert!(node["ws_url"].as_str().unwrap().starts_with("ws://"));
    assert_eq!(node["name"], "my dev");

    // Bob sees nothing of it, and cannot act on it.
    assert_eq!(
        bob.get(&format!("/nodes/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, list) = bob.get("/nodes").await;
    assert_eq!(list, json!([]));
    assert!(!list.to_string().contains(password));
    assert_eq!(
        bob.post(&format!("/nodes/{id}/stop"), json!({})).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        bob.delete(&format!("/nodes/{id}")).await,
        StatusCode::NOT_FOUND
    );

    // Deleting a running node is refused; stopping revokes the credentials.
    assert_eq!(
        alice.delete(&format!("/nodes/{id}")).await,
        StatusCode::CONFLICT
    );
    let (status, _) = alice.post(&format!("/nodes/{id}/stop"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let stopped = alice.wait_state(&id, "stopped").await;
    assert!(stopped["auth"].is_null() && stopped["url"].is_null());
    let after = rpc(&url, Some((user, password)), "eth_blockNumber", json!([])).await;
    assert!(matches!(after, Err(RpcError::Http(401 | 404))), "{after:?}");
    assert_eq!(
        alice.delete(&format!("/nodes/{id}")).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(alice.get("/nodes").await.1, json!([]));
}

#[tokio::test]
async fn bad_requests_and_limits_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = server_with_nodes(dir.path(), |c| c.max_active_nodes = 1).await;
    let alice = Api {
        h: &h,
        token: sign_in(&h, DEV_KEY_0).await,
    };
    let anonymous = Api {
        h: &h,
        token: "nope".into(),
    };
    assert_eq!(
        anonymous.post("/nodes", json!({"network": "dev"})).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(anonymous.get("/nodes").await.0, StatusCode::UNAUTHORIZED);

    let cases = [
        (json!({"network": "ropsten"}), "invalid_json"),
        (json!({"network": "dev", "colour": "red"}), "invalid_json"),
        (
            json!({"network": "dev", "name": "x".repeat(65)}),
            "invalid_name",
        ),
        (
            json!({"network": "dev", "name": "bad\u{7}name"}),
            "invalid_name",
        ),
        (
            json!({"network": "dev", "mode": "shared"}),
            "unsupported_mode",
        ),
    ];
    for (body, code) in cases {
        let (status, err) = alice.post("/nodes", body.clone()).await;
        assert!(status.is_client_error(), "{body}: {status}");
        assert_eq!(err["error"]["code"], code, "{body}: {err}");
    }
    assert_eq!(alice.get("/nodes").await.1, json!([]));

    let (status, first) = alice.post("/nodes", json!({"network": "dev"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, err) = alice.post("/nodes", json!({"network": "dev"})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(err["error"]["code"], "too_many_nodes");
    assert_eq!(alice.get("/nodes").await.1.as_array().unwrap().len(), 1);
    let id = first["id"].as_str().unwrap();
    alice.wait_state(id, "running").await;
    alice.post(&format!("/nodes/{id}/stop"), json!({})).await;
    alice.wait_state(id, "stopped").await;
}

#[tokio::test]
async fn a_node_that_cannot_start_is_failed_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    // anvil posing as erigon rejects Erigon's flags and exits at once.
    let h = server_with_nodes(dir.path(), |c| {
        c.backend.as_mut().unwrap().erigon_bin = Some(anvil_bin())
    })
    .await;
    let alice = Api {
        h: &h,
        token: sign_in(&h, DEV_KEY_0).await,
    };
    let (_, created) = alice.post("/nodes", json!({"network": "sepolia"})).await;
    let failed = alice
        .wait_state(created["id"].as_str().unwrap(), "failed")
        .await;
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("exited during start"), "{reason}");
}

#[tokio::test]
async fn after_a_restart_orphaned_nodes_are_failed_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let h = server_with_nodes(dir.path(), |_| {}).await;
    let alice_token = sign_in(&h, DEV_KEY_0).await;
    let alice = Api {
        h: &h,
        token: alice_token.clone(),
    };
    let (_, created) = alice.post("/nodes", json!({"network": "dev"})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    alice.wait_state(&id, "running").await;
    h.shutdown().await;
    let h = server_with_nodes(dir.path(), |_| {}).await;
    let alice = Api {
        h: &h,
        token: alice_token,
    };
    let (_, node) = alice.get(&format!("/nodes/{id}")).await;
    assert_eq!(node["state"], "failed", "{node}");
    assert!(node["reason"]
        .as_str()
        .unwrap()
        .contains("server restarted"));
}
