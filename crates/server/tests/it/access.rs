//! The endpoint allowlists a node is created with (`methods`, `allow_origins`, `allow_ips`)
//! through the API, end to end: validated (400 with the entry named), stored, passed to the real
//! runtime's start arguments, enforced by its guard behind the real Nginx in front of anvil, and
//! shown in the node's JSON with its endpoint limits.

use erigolem_test_utils::wallet::DEV_KEY_0;
use erigolem_test_utils::{rpc, RpcError};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::nodes::{server_with_nodes, Api};

/// anvil's first dev account (unlocked, so `eth_sendTransaction` would send from it).
const DEV_ACCOUNT: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

fn auth(node: &Value) -> (String, String) {
    (
        node["auth"]["user"].as_str().unwrap().to_owned(),
        node["auth"]["password"].as_str().unwrap().to_owned(),
    )
}

async fn post_rpc(
    url: &str,
    auth: &(String, String),
    origin: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(url)
        .basic_auth(&auth.0, Some(&auth.1))
        .json(&body);
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn call(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
}

#[tokio::test]
async fn allowlists_given_at_create_are_enforced_by_the_nodes_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let h = server_with_nodes(dir.path(), |_| {}).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;

    // Methods: only eth_blockNumber and eth_getTransactionCount.
    let (status, created) = alice
        .post(
            "/nodes",
            json!({"network": "dev", "methods": ["eth_blockNumber", " eth_getTransactionCount", "eth_blockNumber", "anvil_*"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["methods"],
        json!(["eth_blockNumber", "eth_getTransactionCount", "anvil_*"]),
        "normalised, without duplicates: {created}"
    );
    assert_eq!(created["allow_origins"], Value::Null);
    assert_eq!(created["allow_ips"], Value::Null);
    let id = created["id"].as_str().unwrap().to_owned();
    let node = alice.wait_state(&id, "running").await;
    let url = node["url"].as_str().unwrap().to_owned();
    let a = auth(&node);
    let creds = Some((a.0.as_str(), a.1.as_str()));
    rpc(&url, creds, "eth_blockNumber", json!([]))
        .await
        .unwrap();
    match rpc(&url, creds, "eth_chainId", json!([])).await {
        Err(RpcError::Rpc(e)) => {
            assert_eq!(e["error"]["code"], -32601, "{e}");
            let message = e["error"]["message"].as_str().unwrap();
            assert!(message.contains("allowlist"), "{message}");
        }
        other => panic!("eth_chainId got through the allowlist: {other:?}"),
    }
    // Allowlisting a method the provider denies does not open it: the deny list applies either way.
    let (_, fork) = post_rpc(
        &url,
        &a,
        None,
        call("anvil_setRpcUrl", json!(["http://127.0.0.1:1/"])),
    )
    .await;
    assert_eq!(fork["error"]["code"], -32601, "{fork}");
    assert!(
        fork["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fetch state from a URL"),
        "{fork}"
    );
    // A refused call never reaches the node: a transaction it would have sent leaves the
    // account's nonce (pending included) where it was.
    let (_, sent) = post_rpc(
        &url,
        &a,
        None,
        call(
            "eth_sendTransaction",
            json!([{"from": DEV_ACCOUNT, "to": DEV_ACCOUNT, "value": "0x1"}]),
        ),
    )
    .await;
    assert_eq!(sent["error"]["code"], -32601, "{sent}");
    let nonce = rpc(
        &url,
        creds,
        "eth_getTransactionCount",
        json!([DEV_ACCOUNT, "pending"]),
    )
    .await
    .unwrap();
    assert_eq!(nonce, json!("0x0"), "the refused transaction reached anvil");
    // A refused call hidden in a batch is refused on its own; the allowed one is answered.
    let (_, batch) = post_rpc(
        &url,
        &a,
        None,
        json!([call("eth_blockNumber", json!([])), {"jsonrpc": "2.0", "id": 2, "method": "eth_chainId"}]),
    )
    .await;
    let batch = batch.as_array().unwrap().clone();
    assert!(
        batch
            .iter()
            .any(|r| r["id"] == 1 && r["result"].is_string()),
        "{batch:?}"
    );
    assert!(
        batch
            .iter()
            .any(|r| r["id"] == 2 && r["error"]["code"] == -32601),
        "{batch:?}"
    );
    // The node's JSON shows what its endpoint enforces: the allowlist and the guard's limits.
    let (_, shown) = alice.get(&format!("/nodes/{id}")).await;
    assert_eq!(
        shown["methods"],
        json!(["eth_blockNumber", "eth_getTransactionCount", "anvil_*"])
    );
    let limits = &shown["endpoint_limits"];
    for field in [
        "requests_per_sec",
        "burst",
        "max_concurrent",
        "max_body_bytes",
        "max_batch",
        "max_websockets",
    ] {
        assert!(
            limits[field].as_u64().is_some_and(|v| v > 0),
            "{field}: {shown}"
        );
    }

    // Origins and addresses: this node serves one origin, from loopback clients only.
    let (status, created) = alice
        .post(
            "/nodes",
            json!({"network": "dev", "allow_origins": ["https://App.Example.org"], "allow_ips": ["127.0.0.0/8", "::1"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["allow_origins"], json!(["https://app.example.org"]));
    assert_eq!(created["allow_ips"], json!(["127.0.0.0/8", "::1"]));
    let id = created["id"].as_str().unwrap().to_owned();
    let node = alice.wait_state(&id, "running").await;
    let url = node["url"].as_str().unwrap().to_owned();
    let a = auth(&node);
    let (status, ok) = post_rpc(
        &url,
        &a,
        Some("https://app.example.org"),
        call("eth_chainId", json!([])),
    )
    .await;
    assert_eq!((status, ok["result"].is_string()), (200, true), "{ok}");
    for origin in [
        Some("https://evil.example"),
        Some("https://app.example.org.evil.net"),
        None,
    ] {
        let (status, refused) = post_rpc(&url, &a, origin, call("eth_chainId", json!([]))).await;
        assert_eq!(status, 403, "{origin:?}: {refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("allow_origins"),
            "{origin:?}: {refused}"
        );
    }

    // An address list the test's loopback client is not on: refused, and a client-sent
    // X-Forwarded-For does not change that.
    let (status, created) = alice
        .post(
            "/nodes",
            json!({"network": "dev", "allow_ips": ["10.0.0.0/8"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let node = alice.wait_state(&id, "running").await;
    let url = node["url"].as_str().unwrap().to_owned();
    let a = auth(&node);
    let r = reqwest::Client::new()
        .post(&url)
        .basic_auth(&a.0, Some(&a.1))
        .header("x-forwarded-for", "10.1.2.3")
        .header("x-erigolem-client-ip", "10.1.2.3")
        .json(&call("eth_chainId", json!([])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allow_ips"),
        "{body}"
    );
}

#[tokio::test]
async fn bad_allowlists_are_refused_with_400_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = server_with_nodes(dir.path(), |_| {}).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let many: Vec<String> = (0..101).map(|i| format!("m_{i}")).collect();
    let cases = [
        (json!({"methods": ["eth call"]}), "methods[0]"),
        (json!({"methods": ["eth_*", "*"]}), "methods[1]"),
        (json!({"methods": []}), "methods is empty"),
        (json!({"methods": many}), "at most 100"),
        (
            json!({"methods": ["a".repeat(5_000)]}),
            "more than 300 characters",
        ),
        (
            json!({"allow_origins": ["app.example.org"]}),
            "allow_origins[0]",
        ),
        (
            json!({"allow_origins": ["javascript:alert(1)"]}),
            "allow_origins[0]",
        ),
        (
            json!({"allow_origins": ["https://a.org/path"]}),
            "allow_origins[0]",
        ),
        (
            json!({"allow_origins": ["https://x:70000"]}),
            "allow_origins[0]",
        ),
        (json!({"allow_origins": ["*"]}), "allow_origins[0]"),
        (json!({"allow_ips": ["10.0.0.0/33"]}), "allow_ips[0]"),
        (json!({"allow_ips": ["localhost"]}), "allow_ips[0]"),
        (json!({"allow_ips": ["1.2.3.4", "::/129"]}), "allow_ips[1]"),
        (json!({"allow_ips": []}), "allow_ips is empty"),
    ];
    for (extra, says) in cases {
        let mut body = json!({"network": "dev"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, answer) = alice.post("/nodes", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{extra}: {answer}");
        assert_eq!(
            answer["error"]["code"], "invalid_allowlist",
            "{extra}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{extra}: {message}");
        assert!(
            message.len() < 400,
            "{extra}: a message of {} bytes",
            message.len()
        );
    }
    // Not a list of strings: the body's shape is wrong (axum's 422, as for any other field).
    for extra in [json!({"methods": "eth_*"}), json!({"allow_ips": [1]})] {
        let mut body = json!({"network": "dev"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, answer) = alice.post("/nodes", body).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{extra}: {answer}"
        );
        assert_eq!(answer["error"]["code"], "invalid_json", "{extra}: {answer}");
    }
    let (_, nodes) = alice.get("/nodes").await;
    assert_eq!(nodes, json!([]), "a refused create made a node");
}
