//! `ya-runtime-erigon` driven exactly as a Golem exe-unit drives it (one-shot `deploy`,
//! `offer-template`, `test`; then `start <json>` over the runtime API), against a real Nginx, real
//! anvil and fake-erigon.
#![allow(clippy::unwrap_used)]

mod endpoint;
mod lifecycle;
mod misuse;
mod releases;
mod scale;

use std::time::{Duration, Instant};

use base64::Engine as _;
use erigolem_primitives::NodeStatus;
pub(crate) use erigolem_test_utils::{alive, pids_mentioning};
use erigolem_test_utils::{rpc, wait_for, RpcError};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

/// `(user, password)` of a STATUS document.
fn auth(status: &NodeStatus) -> (&str, &str) {
    (status.auth.user.as_str(), status.auth.password.expose())
}

async fn block_through(status: &NodeStatus, creds: Option<(&str, &str)>) -> Result<u64, RpcError> {
    rpc(&status.url, creds, "eth_blockNumber", json!([]))
        .await
        .map(|v| erigolem_test_utils::hex_u64(&v))
}

async fn wait_dead(pid: u32, within: Duration) {
    wait_for(&format!("process {pid} to exit"), within, || async move {
        (!alive(pid)).then_some(())
    })
    .await;
}

/// The node processes of an instance (their argv names its data dir).
fn node_pids(provider: &erigolem_test_utils::Provider, instance: &str) -> Vec<u32> {
    pids_mentioning(&provider.instance_dir(instance).display().to_string())
}

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket to an endpoint with `(user, password)`, and extra request headers.
pub(crate) async fn ws_connect(
    status: &NodeStatus,
    creds: (&str, &str),
    headers: &[(&str, &str)],
) -> Result<Ws, String> {
    let mut request = status.ws_url.as_str().into_client_request().unwrap();
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", creds.0, creds.1));
    let h = request.headers_mut();
    h.insert("Authorization", format!("Basic {basic}").parse().unwrap());
    for (k, v) in headers {
        h.insert(http_name(k), v.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

fn http_name(k: &str) -> tokio_tungstenite::tungstenite::http::HeaderName {
    k.parse().unwrap()
}

/// Sends a call and returns its answer (skipping notifications).
pub(crate) async fn ws_call(ws: &mut Ws, call: serde_json::Value) -> serde_json::Value {
    let id = call["id"].clone();
    ws.send(Message::text(call.to_string())).await.unwrap();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no answer within 10 s")
            .expect("socket closed")
            .unwrap();
        if let Message::Text(t) = msg {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            if v["id"] == id {
                return v;
            }
        }
    }
}

/// Subscribes to `newHeads`.
pub(crate) async fn subscribe_heads(ws: &mut Ws) {
    let answer = ws_call(
        ws,
        serde_json::json!({"jsonrpc":"2.0","id":"sub","method":"eth_subscribe","params":["newHeads"]}),
    )
    .await;
    assert!(answer["result"].is_string(), "{answer}");
}

/// The next head's number, within `within`.
pub(crate) async fn next_head(ws: &mut Ws, within: Duration) -> Result<u64, String> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => return Err(format!("no head within {within:?}")),
            Ok(None) => return Err("closed".into()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["method"] == "eth_subscription" {
                    return Ok(erigolem_test_utils::hex_u64(
                        &v["params"]["result"]["number"],
                    ));
                }
            }
            Ok(Some(Ok(Message::Close(_)))) => return Err("closed".into()),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Waits until the socket is closed by the other side; how long that took from `since`, and the
/// close reason. Panics if it is still open after `within`.
pub(crate) async fn closed_within(
    ws: &mut Ws,
    since: Instant,
    within: Duration,
) -> (Duration, String) {
    loop {
        let left = (since + within).saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the socket still delivers after {within:?}"
        );
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => panic!("the socket still delivers after {within:?}"),
            Ok(None) | Ok(Some(Err(_))) => return (since.elapsed(), String::new()),
            Ok(Some(Ok(Message::Close(frame)))) => {
                let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                return (since.elapsed(), reason);
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// The port of a dedicated instance's node (from its argv), to look at the node directly.
pub(crate) fn node_port(provider: &erigolem_test_utils::Provider, instance: &str) -> u16 {
    let pid = node_pids(provider, instance)[0];
    let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = argv
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let i = args.iter().position(|a| a == "--port").unwrap();
    args[i + 1].parse().unwrap()
}
