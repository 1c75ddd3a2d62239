//! `ya-runtime-erigon` driven exactly as a Golem exe-unit drives it (one-shot `deploy`,
//! `offer-template`, `test`; then `start <json>` over the runtime API), against a real Nginx, real
//! anvil and fake-erigon.
#![allow(clippy::unwrap_used)]

mod lifecycle;
mod misuse;
mod releases;
mod scale;

use std::time::Duration;

use erigolem_primitives::NodeStatus;
pub(crate) use erigolem_test_utils::{alive, pids_mentioning};
use erigolem_test_utils::{rpc, wait_for, RpcError};
use serde_json::json;

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
