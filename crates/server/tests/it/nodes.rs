//! Nodes through the REST API with the local backend: a real runtime per node behind the server's
//! own Nginx, anvil for `dev` (and anvil posing as a broken erigon).

use std::time::Duration;

use erigolem_server::backend::local::LocalConfig;
use erigolem_server::{spawn, BackendConfig, Handle, ServerConfig};
use erigolem_test_utils::wallet::{DEV_KEY_0, DEV_KEY_1};
use erigolem_test_utils::{
    anvil_bin, free_port, free_port_block, rpc, stable_port, wait_for, wait_for_every,
    workspace_bin, RpcError,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::sign_in;

pub(crate) async fn server_with_nodes(
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut ServerConfig),
) -> Handle {
    let mut config = ServerConfig::test(dir);
    config.chain_ids = vec![1];
    config.backend = Some(BackendConfig::Local(LocalConfig {
        runtime_bin: workspace_bin("ya-runtime-erigon"),
        anvil_bin: Some(anvil_bin()),
        erigon_bin: Some(workspace_bin("fake-erigon")),
        gateway_listen: ([127, 0, 0, 1], free_port()).into(),
        max_nodes: 4,
        port_base: free_port_block(erigolem_engine_block() * 4),
    }));
    tweak(&mut config);
    spawn(config).await.unwrap()
}

pub(crate) fn local(c: &mut ServerConfig) -> &mut LocalConfig {
    match c.backend.as_mut() {
        Some(BackendConfig::Local(local)) => local,
        other => panic!("not the local backend: {other:?}"),
    }
}

fn erigolem_engine_block() -> u16 {
    12
}

pub(crate) struct Api<'a> {
    h: &'a Handle,
    pub(crate) token: String,
}

impl<'a> Api<'a> {
    pub(crate) async fn signed_in(h: &'a Handle, key: &str) -> Self {
        Self {
            h,
            token: sign_in(h, key).await,
        }
    }

    pub(crate) fn with_token(h: &'a Handle, token: String) -> Self {
        Self { h, token }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.h.url())
    }
    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }
    pub(crate) async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = reqwest::Client::new()
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }
    pub(crate) async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = reqwest::Client::new()
            .put(self.url(path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }
    pub(crate) async fn delete(&self, path: &str) -> StatusCode {
        reqwest::Client::new()
            .delete(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .status()
    }
    pub(crate) async fn wait_state(&self, id: &str, want: &str) -> Value {
        // 20 polls a second: well under the per-address rate limit (50/s), so a slow start
        // does not leave the test's next request refused with 429.
        wait_for_every(
            &format!("node {id} to be {want}"),
            Duration::from_secs(30),
            Duration::from_millis(50),
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
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let bob = Api::signed_in(&h, DEV_KEY_1).await;

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
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
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
    // An erigon that dies at once, every time.
    let bins = tempfile::tempdir().unwrap();
    let (erigon, _) = erigolem_test_utils::fake_erigon(
        bins.path(),
        "3.6.1",
        &[("FAKE_ERIGON_CRASH_AFTER_SECS", "0")],
    );
    let h = server_with_nodes(dir.path(), |c| local(c).erigon_bin = Some(erigon)).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let (_, created) = alice.post("/nodes", json!({"network": "sepolia"})).await;
    let failed = alice
        .wait_state(created["id"].as_str().unwrap(), "failed")
        .await;
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("exited during start"), "{reason}");
}

#[tokio::test]
async fn after_a_restart_running_nodes_come_back_with_the_same_url_and_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, ports) = (stable_port(), free_port_block(erigolem_engine_block() * 4));
    let same_ports = |c: &mut ServerConfig| {
        let local = local(c);
        local.gateway_listen = ([127, 0, 0, 1], gateway).into();
        local.port_base = ports;
    };
    let h = server_with_nodes(dir.path(), same_ports).await;
    let alice_token = sign_in(&h, DEV_KEY_0).await;
    let alice = Api {
        h: &h,
        token: alice_token.clone(),
    };
    let (_, created) = alice.post("/nodes", json!({"network": "dev"})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let before = alice.wait_state(&id, "running").await;
    h.shutdown().await;

    let h = server_with_nodes(dir.path(), same_ports).await;
    let alice = Api {
        h: &h,
        token: alice_token,
    };
    let (_, node) = alice.get(&format!("/nodes/{id}")).await;
    assert_eq!(node["state"], "running", "{node}");
    assert_eq!(node["url"], before["url"]);
    assert_eq!(node["auth"], before["auth"]);
    let (url, user, password) = (
        node["url"].as_str().unwrap().to_owned(),
        node["auth"]["user"].as_str().unwrap().to_owned(),
        node["auth"]["password"].as_str().unwrap().to_owned(),
    );
    wait_for(
        "the recovered node to answer",
        Duration::from_secs(30),
        || {
            let (url, user, password) = (url.clone(), user.clone(), password.clone());
            async move {
                rpc(&url, Some((&user, &password)), "eth_blockNumber", json!([]))
                    .await
                    .ok()
            }
        },
    )
    .await;
    // And it still stops like any other.
    alice.post(&format!("/nodes/{id}/stop"), json!({})).await;
    alice.wait_state(&id, "stopped").await;
}

/// Reads transitions (`(id, data)`) from `/events` until `until` says stop or 30 s pass.
async fn read_events(
    h: &Handle,
    token: &str,
    last_event_id: Option<&str>,
    mut until: impl FnMut(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    read_frames(
        h,
        token,
        last_event_id,
        "transition",
        Duration::from_secs(30),
        |ev| until(ev),
    )
    .await
}

/// Reads server-sent events of kind `kind` (`(id, data)`; progress events have no id) from
/// `/events` until `until` says stop or `limit` passes.
pub(crate) async fn read_frames(
    h: &Handle,
    token: &str,
    last_event_id: Option<&str>,
    kind: &str,
    limit: Duration,
    mut until: impl FnMut(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    use futures::StreamExt;
    let mut req = reqwest::Client::new()
        .get(format!("{}/api/v1/events", h.url()))
        .bearer_auth(token);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !until(&events) {
        let chunk = match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(chunk)) => chunk.unwrap(),
            _ => break,
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|s| s.trim().to_owned())
            };
            if let (Some(event), Some(data)) = (field("event:"), field("data:")) {
                if event == kind {
                    let id = field("id:").unwrap_or_default();
                    events.push((id, serde_json::from_str(&data).unwrap()));
                }
            }
        }
    }
    events
}

fn states_of(events: &[(String, Value)], node: &str) -> Vec<String> {
    events
        .iter()
        .filter(|(_, e)| e["node_id"] == node)
        .map(|(_, e)| e["state"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn event_stream_has_every_transition_of_my_nodes_and_none_of_others() {
    let dir = tempfile::tempdir().unwrap();
    let h = server_with_nodes(dir.path(), |_| {}).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let bob = Api::signed_in(&h, DEV_KEY_1).await;
    let alice_stream = {
        let (h, token) = (&h, alice.token.clone());
        async move {
            read_events(h, &token, None, |ev| {
                ev.iter().any(|(_, e)| e["state"] == "stopped")
            })
            .await
        }
    };
    let bob_stream = {
        let (h, token) = (&h, bob.token.clone());
        // Bob's stream ends when Bob's own node shows up: by then Alice's were all sent too.
        async move { read_events(h, &token, None, |ev| !ev.is_empty()).await }
    };
    let actions = async {
        tokio::time::sleep(Duration::from_millis(200)).await; // both streams are subscribed
        let (_, created) = alice.post("/nodes", json!({"network": "dev"})).await;
        let id = created["id"].as_str().unwrap().to_owned();
        alice.wait_state(&id, "running").await;
        alice.post(&format!("/nodes/{id}/stop"), json!({})).await;
        alice.wait_state(&id, "stopped").await;
        let (_, bobs) = bob.post("/nodes", json!({"network": "dev"})).await;
        (id, bobs["id"].as_str().unwrap().to_owned())
    };
    let (alice_events, bob_events, (id, bob_node)) =
        tokio::join!(alice_stream, bob_stream, actions);
    assert_eq!(
        states_of(&alice_events, &id),
        ["pending", "starting", "running", "stopping", "stopped"]
    );
    assert!(
        alice_events
            .iter()
            .all(|(_, e)| e["node_id"] == id.as_str()),
        "{alice_events:?}"
    );
    assert!(
        bob_events
            .iter()
            .all(|(_, e)| e["node_id"] == bob_node.as_str()),
        "Bob saw Alice's node: {bob_events:?}"
    );

    // Resuming from an id replays what came after it.
    let second = alice_events[1].0.clone();
    let replay = read_events(&h, &alice.token, Some(&second), |ev| ev.len() >= 3).await;
    assert_eq!(states_of(&replay, &id), ["running", "stopping", "stopped"]);
    bob.wait_state(&bob_node, "running").await;
    bob.post(&format!("/nodes/{bob_node}/stop"), json!({}))
        .await;
    bob.wait_state(&bob_node, "stopped").await;
}

#[tokio::test]
async fn progress_events_carry_the_growing_block_height_to_the_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let h = server_with_nodes(dir.path(), |_| {}).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let bob = Api::signed_in(&h, DEV_KEY_1).await;
    let (_, created) = alice.post("/nodes", json!({"network": "dev"})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let node = alice.wait_state(&id, "running").await;
    assert_eq!(node["engine"], "anvil");

    let blocks = |events: &[(String, Value)]| -> Vec<i64> {
        events
            .iter()
            .filter(|(_, e)| e["node_id"] == id.as_str())
            .filter_map(|(_, e)| e["block"].as_i64())
            .collect()
    };
    let (alice_progress, bob_progress) = tokio::join!(
        read_frames(
            &h,
            &alice.token,
            None,
            "progress",
            Duration::from_secs(30),
            |ev| {
                let b = blocks(ev);
                b.len() >= 2 && b.last() > b.first()
            }
        ),
        // Long enough for several polls of Alice's node.
        read_frames(
            &h,
            &bob.token,
            None,
            "progress",
            Duration::from_secs(5),
            |_| false
        ),
    );
    let seen = blocks(&alice_progress);
    assert!(
        seen.len() >= 2 && seen.last() > seen.first(),
        "no growing block in {alice_progress:?}"
    );
    assert!(
        alice_progress.iter().all(|(id, _)| id.is_empty()),
        "progress events have no id (they are not replayed)"
    );
    assert!(
        bob_progress.is_empty(),
        "Bob saw Alice's progress: {bob_progress:?}"
    );
    alice.post(&format!("/nodes/{id}/stop"), json!({})).await;
    alice.wait_state(&id, "stopped").await;
}

/// As root, the server's Nginx workers run as www-data; a data dir they cannot reach (under a 0700
/// directory, like /root) must still give working node URLs.
#[tokio::test]
async fn nodes_work_with_a_data_dir_the_nginx_workers_cannot_reach() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let h = server_with_nodes(&dir.path().join("data"), |_| {}).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let (_, created) = alice.post("/nodes", json!({"network": "dev"})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let node = alice.wait_state(&id, "running").await;
    let auth = (
        node["auth"]["user"].as_str().unwrap(),
        node["auth"]["password"].as_str().unwrap(),
    );
    let block = rpc(
        node["url"].as_str().unwrap(),
        Some(auth),
        "eth_blockNumber",
        json!([]),
    )
    .await;
    assert!(block.is_ok(), "{block:?}");
    alice.post(&format!("/nodes/{id}/stop"), json!({})).await;
    alice.wait_state(&id, "stopped").await;
}

#[tokio::test]
async fn rotating_credentials_refuses_the_old_password() {
    let dir = tempfile::tempdir().unwrap();
    let h = server_with_nodes(dir.path(), |_| {}).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let (_, created) = alice.post("/nodes", json!({"network": "dev"})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let node = alice.wait_state(&id, "running").await;
    let url = node["url"].as_str().unwrap().to_owned();
    let old = node["auth"]["password"].as_str().unwrap().to_owned();
    let user = node["auth"]["user"].as_str().unwrap().to_owned();
    let (status, rotated) = alice
        .post(&format!("/nodes/{id}/credentials/rotate"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["auth"]["password"].as_str().unwrap();
    assert_ne!(new, old);
    assert!(matches!(
        rpc(&url, Some((&user, &old)), "eth_blockNumber", json!([])).await,
        Err(RpcError::Http(401))
    ));
    rpc(&url, Some((&user, new)), "eth_blockNumber", json!([]))
        .await
        .unwrap();
    // The stored password is the new one.
    assert_eq!(
        alice.get(&format!("/nodes/{id}")).await.1["auth"]["password"],
        new
    );

    let metrics = reqwest::get(format!("{}/metrics", h.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"erigolem_nodes{state="running"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("erigolem_node_start_seconds"), "{metrics}");
    alice.post(&format!("/nodes/{id}/stop"), json!({})).await;
    alice.wait_state(&id, "stopped").await;
    let (status, err) = alice
        .post(&format!("/nodes/{id}/credentials/rotate"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["error"]["code"], "not_running");
}

#[tokio::test]
async fn budgets_and_price_caps_are_refused_where_nodes_are_not_paid_for() {
    let dir = tempfile::tempdir().unwrap();
    let h = server_with_nodes(dir.path(), |_| {}).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let (status, body) = alice
        .post("/nodes", json!({"network": "dev", "budget": "1"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "not_supported");
    assert_eq!(alice.get("/nodes").await.1, json!([]));
}

#[tokio::test]
async fn a_local_node_that_fails_releases_its_runtime_ports_and_credentials() {
    // fake-erigon (the sepolia node) crashes 3 s after each start: the runtime restarts it
    // twice, then reports it failed. The runtime's children get a cleared environment, so the
    // switch lives in the wrapper script, not in this process's env.
    let dir = tempfile::tempdir().unwrap();
    let bins = tempfile::tempdir().unwrap();
    let (erigon, _) = erigolem_test_utils::fake_erigon(
        bins.path(),
        "3.6.1",
        &[("FAKE_ERIGON_CRASH_AFTER_SECS", "3")],
    );
    let h = server_with_nodes(dir.path(), |c| {
        c.rate_limit = std::num::NonZeroU32::new(10_000).unwrap();
        local(c).erigon_bin = Some(erigon);
    })
    .await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let (_, created) = alice.post("/nodes", json!({"network": "sepolia"})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let running = alice.wait_state(&id, "running").await;
    assert_eq!(running["held"], true, "{running}");
    let url = running["url"].as_str().unwrap().to_owned();
    let (user, password) = (
        running["auth"]["user"].as_str().unwrap().to_owned(),
        running["auth"]["password"].as_str().unwrap().to_owned(),
    );
    let failed = wait_for("the node to fail", Duration::from_secs(60), || async {
        let (_, node) = alice.get(&format!("/nodes/{id}")).await;
        (node["state"] == "failed").then_some(node)
    })
    .await;
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("times in a row"),
        "{failed}"
    );
    // Every move to failed stops the backend: runtime gone, endpoint and password removed.
    let gone = wait_for(
        "the runtime to be released",
        Duration::from_secs(30),
        || async {
            let (_, node) = alice.get(&format!("/nodes/{id}")).await;
            (node["held"] == false).then_some(node)
        },
    )
    .await;
    assert!(gone["url"].is_null() && gone["auth"].is_null(), "{gone}");
    let gateway = dir.path().join("local/nginx/gateway");
    for sub in ["htpasswd", "sockets"] {
        let left: Vec<_> = std::fs::read_dir(gateway.join(sub))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{sub}: {left:?}");
    }
    let after = rpc(&url, Some((&user, &password)), "eth_blockNumber", json!([])).await;
    assert!(matches!(after, Err(RpcError::Http(401 | 404))), "{after:?}");
    wait_for(
        "no process of the node left",
        Duration::from_secs(15),
        || async {
            erigolem_test_utils::pids_mentioning(&id)
                .is_empty()
                .then_some(())
        },
    )
    .await;
    // Stop on a failed node that holds nothing changes nothing; delete removes it.
    let (status, node) = alice.post(&format!("/nodes/{id}/stop"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(node["state"], "failed");
    assert_eq!(
        alice.delete(&format!("/nodes/{id}")).await,
        StatusCode::NO_CONTENT
    );
}

/// As root, the Nginx files fall back to a directory under /tmp when the data dir is not
/// searchable. A local user who creates that directory first (predictable name, their own,
/// world-writable) must not get root's Nginx config written into it.
#[tokio::test]
async fn a_hostile_nginx_dir_created_in_tmp_beforehand_is_not_used() {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::PermissionsExt;
    assert!(
        nix::unistd::geteuid().is_root(),
        "the /tmp fallback exists only for root (CI runs as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = dir.path().join("data");
    let local = data.join("local");
    std::fs::create_dir_all(&local).unwrap();
    // The name the server used to choose: a hash of the canonical backend dir.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    local.canonicalize().unwrap().hash(&mut hasher);
    let hostile = std::env::temp_dir().join(format!("erigolem-nginx-{:016x}", hasher.finish()));
    let _ = std::fs::remove_dir_all(&hostile);
    std::fs::create_dir(&hostile).unwrap();
    let nobody = nix::unistd::Uid::from_raw(65534);
    nix::unistd::chown(
        &hostile,
        Some(nobody),
        Some(nix::unistd::Gid::from_raw(65534)),
    )
    .unwrap();
    std::fs::set_permissions(&hostile, std::fs::Permissions::from_mode(0o777)).unwrap();
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Remove(hostile.clone());

    let h = server_with_nodes(&data, |_| {}).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let (_, created) = alice.post("/nodes", json!({"network": "dev"})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let node = alice.wait_state(&id, "running").await;
    let auth = (
        node["auth"]["user"].as_str().unwrap(),
        node["auth"]["password"].as_str().unwrap(),
    );
    rpc(
        node["url"].as_str().unwrap(),
        Some(auth),
        "eth_blockNumber",
        json!([]),
    )
    .await
    .unwrap();
    let written: Vec<_> = std::fs::read_dir(&hostile)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        written.is_empty(),
        "root's Nginx files went into {}: {written:?}",
        hostile.display()
    );
    let meta = std::fs::metadata(&hostile).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65534);
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o777,
        "the server changed its mode"
    );
    alice.post(&format!("/nodes/{id}/stop"), json!({})).await;
    alice.wait_state(&id, "stopped").await;
    h.shutdown().await;

    // The directory it made is remembered for the next start. If it is gone (a tmp cleaner) and
    // a local user put their own in its place — a world-writable dir, or a symlink to one — the
    // next start makes a new one instead of writing into theirs.
    let record = local.join("nginx-dir");
    let bait = std::env::temp_dir().join(format!("erigolem-bait-{}", std::process::id()));
    let _bait_cleanup = Remove(bait.clone());
    for plant in ["world-writable dir", "symlink"] {
        let used = std::path::PathBuf::from(std::fs::read_to_string(&record).unwrap());
        assert!(used.starts_with(std::env::temp_dir()) && used != hostile);
        std::fs::remove_dir_all(&used).unwrap();
        let target = if plant == "symlink" {
            std::fs::create_dir_all(&bait).unwrap();
            std::os::unix::fs::symlink(&bait, &used).unwrap();
            bait.clone()
        } else {
            std::fs::create_dir(&used).unwrap();
            used.clone()
        };
        nix::unistd::chown(&target, Some(nobody), None).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o777)).unwrap();
        let _planted = Remove(used.clone());

        let h = server_with_nodes(&data, |_| {}).await;
        let alice = Api::signed_in(&h, DEV_KEY_0).await;
        let (_, created) = alice.post("/nodes", json!({"network": "dev"})).await;
        let id = created["id"].as_str().unwrap().to_owned();
        alice.wait_state(&id, "running").await;
        let written: Vec<_> = std::fs::read_dir(&target).unwrap().collect();
        assert!(
            written.is_empty(),
            "{plant}: the server wrote into {}",
            target.display()
        );
        let now = std::path::PathBuf::from(std::fs::read_to_string(&record).unwrap());
        assert_ne!(now, used, "{plant}: the planted path is in use");
        alice.post(&format!("/nodes/{id}/stop"), json!({})).await;
        alice.wait_state(&id, "stopped").await;
        h.shutdown().await;
        let _ = std::fs::remove_file(&used);
    }
    let _ = std::fs::remove_dir_all(std::fs::read_to_string(&record).unwrap());
}
