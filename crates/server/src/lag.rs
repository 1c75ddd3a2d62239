//! Whether a running node keeps up with its chain: from its STATUS, the distance to the network's
//! head in blocks (Erigon's `eth_syncing`) and the age of its head block, against the server's
//! thresholds. Pure: the reconciler feeds it each poll's STATUS.

use erigolem_primitives::{EndpointLimits, NodeStatus, RpcLimits};
use serde::Serialize;

/// The server's lag thresholds (`--lag-blocks`, `--lag-seconds`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Thresholds {
    pub(crate) blocks: u64,
    pub(crate) seconds: u64,
}

/// What the last STATUS of a node said beyond its block and sync progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(crate) struct LiveStatus {
    pub(crate) engine_version: Option<String>,
    pub(crate) limits: Option<RpcLimits>,
    #[serde(default)]
    pub(crate) endpoint_limits: Option<EndpointLimits>,
    pub(crate) warnings: Vec<String>,
    pub(crate) peers: Option<u64>,
    pub(crate) behind_seconds: Option<u64>,
    pub(crate) behind_blocks: Option<u64>,
    /// More than the thresholds behind.
    pub(crate) lagging: bool,
}

impl LiveStatus {
    pub(crate) fn of(status: &NodeStatus, t: Thresholds) -> Self {
        let behind_blocks = status
            .sync
            .as_ref()
            .map(|s| s.highest_block.saturating_sub(s.current_block));
        let lagging = behind_blocks.is_some_and(|b| b > t.blocks)
            || status.behind_seconds.is_some_and(|s| s > t.seconds);
        Self {
            engine_version: status.engine_version.clone(),
            limits: status.limits,
            endpoint_limits: status.endpoint_limits,
            warnings: status.warnings.clone(),
            peers: status.peers,
            behind_seconds: status.behind_seconds,
            behind_blocks,
            lagging,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use erigolem_primitives::SyncProgress;

    fn status(sync: Option<(u64, u64)>, behind_seconds: Option<u64>) -> NodeStatus {
        serde_json::from_value::<NodeStatus>(serde_json::json!({
            "instance": "node-1", "url": "http://x/node-1/", "ws_url": "ws://x/node-1/", "network": "mainnet",
            "engine": "erigon", "mode": "dedicated", "auth": {"user": "node-1", "password": "p"},
            "state": "running", "block": 1, "sync": null, "peers": 3,
        }))
        .map(|mut s| {
            s.sync = sync.map(|(current, highest)| SyncProgress {
                starting_block: 0,
                current_block: current,
                highest_block: highest,
                stages: Vec::new(),
            });
            s.behind_seconds = behind_seconds;
            s
        })
        .unwrap()
    }

    #[test]
    fn lagging_is_more_than_n_blocks_or_s_seconds_behind() {
        let t = Thresholds {
            blocks: 40,
            seconds: 120,
        };
        // (sync current/highest, head age, lagging)
        let table = [
            (None, Some(12), false),
            (None, None, false),
            (None, Some(121), true),
            (Some((100, 140)), Some(10), false),
            (Some((100, 141)), Some(10), true),
            (Some((100, 141)), None, true),
            (None, Some(120), false),
        ];
        for (sync, age, lagging) in table {
            let live = LiveStatus::of(&status(sync, age), t);
            assert_eq!(live.lagging, lagging, "{sync:?} {age:?}");
            assert_eq!(live.behind_blocks, sync.map(|(c, h)| h - c));
        }
    }
}
