//! A node's log through the API (real runtime, Nginx, anvil): its owner gets the last lines,
//! without the node's password, and a followed log brings new lines as the node writes them;
//! anyone else gets 404; bad line counts are refused.

use std::time::Duration;

use erigolem_test_utils::wallet::{DEV_KEY_0, DEV_KEY_1};
use erigolem_test_utils::{rpc, wait_for};
use reqwest::StatusCode;
use serde_json::json;

use crate::nodes::{server_with_nodes, Api};

#[tokio::test]
async fn logs_are_the_nodes_last_lines_without_secrets_and_follow_new_ones() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let h = server_with_nodes(dir.path(), |_| {}).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let bob = Api::signed_in(&h, DEV_KEY_1).await;
    let (_, created) = alice.post("/nodes", json!({"network": "dev"})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let node = alice.wait_state(&id, "running").await;
    let url = node["url"].as_str().unwrap().to_owned();
    let (user, password) = (
        node["auth"]["user"].as_str().unwrap(),
        node["auth"]["password"].as_str().unwrap(),
    );
    // A method only this test calls (the runtime's own polls are eth_blockNumber, eth_syncing,
    // eth_getBlockByNumber).
    rpc(&url, Some((user, password)), "eth_gasPrice", json!([]))
        .await
        .unwrap();

    // anvil logs each method it serves: the call shows up in the node's last lines.
    let logs = wait_for("the call in the log", Duration::from_secs(20), || async {
        let (status, logs) = alice.get(&format!("/nodes/{id}/logs?lines=200")).await;
        assert_eq!(status, StatusCode::OK, "{logs}");
        logs.to_string().contains("eth_gasPrice").then_some(logs)
    })
    .await;
    assert_eq!(logs["node_id"], id.as_str());
    let lines = logs["lines"].as_array().unwrap();
    assert!(!lines.is_empty() && lines.len() <= 200);
    assert!(
        !logs.to_string().contains(password),
        "the password is never shown"
    );
    let (_, few) = alice.get(&format!("/nodes/{id}/logs?lines=1")).await;
    assert_eq!(few["lines"].as_array().unwrap().len(), 1, "{few}");

    // Following: the stream opens with the last lines, then brings each new one.
    let resp = reqwest::Client::new()
        .get(alice.url(&format!("/nodes/{id}/logs?lines=5&follow=true")))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    let mut frames = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut called = false;
    while !seen.contains("eth_accounts") {
        let chunk = match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(chunk)) => chunk.unwrap(),
            Ok(None) => panic!("the stream ended: {seen}"),
            Err(_) => panic!("no new line within 30 s (called: {called}): {seen}"),
        };
        let text = String::from_utf8_lossy(&chunk).into_owned();
        frames += text.matches("event: lines").count();
        seen.push_str(&text);
        if frames >= 1 && !called {
            rpc(&url, Some((user, password)), "eth_accounts", json!([]))
                .await
                .unwrap();
            called = true;
        }
    }
    assert!(frames >= 2, "the new line came in its own event: {seen}");
    assert!(!seen.contains(password));
    drop(body);

    // Someone else's node: 404. Bad line counts: 400, nothing echoed back whole.
    let (status, body) = bob.get(&format!("/nodes/{id}/logs")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let huge = "9".repeat(5_000);
    for lines in [
        "0",
        "1001",
        "-1",
        "ten",
        "",
        &huge,
        "99999999999999999999999",
    ] {
        let (status, body) = alice.get(&format!("/nodes/{id}/logs?lines={lines}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{lines}: {body}");
        assert_eq!(body["error"]["code"], "invalid_lines");
        assert!(body.to_string().len() < 500);
    }

    // A stopped node has no log to read.
    alice.post(&format!("/nodes/{id}/stop"), json!({})).await;
    alice.wait_state(&id, "stopped").await;
    let (status, body) = alice.get(&format!("/nodes/{id}/logs")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "not_running");
}
