//! `ya-runtime-erigon` driven exactly as a Golem exe-unit drives it (one-shot `deploy`,
//! `offer-template`, `test`; then `start <json>` over the runtime API), against a real Nginx, real
//! anvil and fake-erigon.
#![allow(clippy::unwrap_used)]

mod lifecycle;
mod misuse;
mod scale;

use std::time::Duration;

use erigolem_primitives::NodeStatus;
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

/// Whether `pid` is a live (non-zombie) process.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
}

async fn wait_dead(pid: u32, within: Duration) {
    wait_for(&format!("process {pid} to exit"), within, || async move {
        (!alive(pid)).then_some(())
    })
    .await;
}

/// The PIDs of processes whose command line mentions `needle` (e.g. an instance's data dir).
fn pids_mentioning(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .filter(|pid| alive(*pid))
        .collect()
}
