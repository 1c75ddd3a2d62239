//! The simulated chain and its JSON-RPC, `/health` included.
//!
//! The node catches up from block 0 to `target` at `rate` blocks/s; a node at the tip has a head
//! block as old as its distance to the network's head (`slot` seconds per block). Told to fall
//! behind (`FAKE_ERIGON_LAG_AFTER_SECS`), its head freezes: the network goes on (one block per
//! slot), so `eth_syncing` reports the gap and the head block's timestamp stays where it was.
//! Time is wall-clock time from the start recorded in the datadir, so a fake `rpcdaemon` started
//! on the same datadir sees the same chain.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What the node is, shared with a fake `rpcdaemon` through `fake-erigon.node.json` in the datadir.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Chain {
    /// Unix milliseconds at start.
    pub(crate) started_ms: u64,
    pub(crate) target: u64,
    pub(crate) rate: f64,
    pub(crate) peers: u64,
    pub(crate) chain_id: u64,
    pub(crate) slot_secs: u64,
    pub(crate) lag_after_secs: Option<f64>,
    pub(crate) version: String,
}

/// The RPC limits the fake enforces (`None` = unlimited / no such flag in this release).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    pub(crate) batch: Option<u64>,
    pub(crate) block_range: Option<u64>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The chain as seen at one moment.
struct View {
    /// The node's head.
    current: u64,
    /// The network's head.
    highest: u64,
    /// The node's head block's timestamp (Unix seconds).
    head_ts: u64,
}

impl Chain {
    fn elapsed(&self, now_ms: u64) -> f64 {
        now_ms.saturating_sub(self.started_ms) as f64 / 1000.0
    }

    fn caught_up(&self, secs: f64) -> u64 {
        // `as` saturates for floats, so huge or negative products are harmless.
        ((secs * self.rate) as u64).min(self.target)
    }

    fn view(&self) -> View {
        let now = now_ms();
        let t = self.elapsed(now);
        let slot = self.slot_secs.max(1);
        match self.lag_after_secs.filter(|after| t > *after) {
            None => {
                let current = self.caught_up(t);
                View {
                    current,
                    highest: self.target,
                    head_ts: (now / 1000).saturating_sub((self.target - current) * slot),
                }
            }
            Some(after) => {
                let current = self.caught_up(after);
                let frozen_at = (self.started_ms + (after * 1000.0) as u64) / 1000;
                View {
                    current,
                    highest: self.target + ((t - after) as u64) / slot,
                    head_ts: frozen_at.saturating_sub((self.target - current) * slot),
                }
            }
        }
    }

    pub(crate) fn current_block(&self) -> u64 {
        self.view().current
    }

    fn block(&self, number: u64, v: &View) -> Value {
        let ts = v
            .head_ts
            .saturating_sub((v.current - number) * self.slot_secs.max(1));
        json!({
            "number": hex(number),
            "hash": format!("0x{number:064x}"),
            "parentHash": format!("0x{:064x}", number.saturating_sub(1)),
            "timestamp": hex(ts),
            "transactions": [],
        })
    }

    /// A block tag or number of a request, against the node's head.
    fn block_number(param: Option<&Value>, current: u64) -> Option<u64> {
        match param.and_then(Value::as_str) {
            None | Some("latest" | "safe" | "finalized" | "pending") => Some(current),
            Some("earliest") => Some(0),
            Some(h) => u64::from_str_radix(h.strip_prefix("0x")?, 16).ok(),
        }
    }

    fn call(&self, method: &str, params: &Value, limits: &Limits) -> Result<Value, (i64, String)> {
        let v = self.view();
        Ok(match method {
            "eth_blockNumber" => hex(v.current),
            "eth_syncing" => {
                if v.current >= v.highest {
                    Value::Bool(false)
                } else {
                    json!({
                        "startingBlock": "0x0",
                        "currentBlock": hex(v.current),
                        "highestBlock": hex(v.highest),
                        "stages": [
                            {"stage_name": "Headers", "block_number": hex(v.highest)},
                            {"stage_name": "Execution", "block_number": hex(v.current)},
                        ],
                    })
                }
            }
            "eth_getBlockByNumber" => match Self::block_number(params.get(0), v.current) {
                Some(n) if n <= v.current => self.block(n, &v),
                Some(_) => Value::Null,
                None => {
                    return Err((
                        -32602,
                        "invalid argument 0: hex string without 0x prefix".into(),
                    ))
                }
            },
            "eth_getLogs" => {
                let filter = params.get(0).cloned().unwrap_or(Value::Null);
                let from =
                    Self::block_number(filter.get("fromBlock"), v.current).unwrap_or(v.current);
                let to = Self::block_number(filter.get("toBlock"), v.current).unwrap_or(v.current);
                // rpc/jsonrpc: "query block range exceeds server limit, narrow your filter: N"
                // (PR #19721); 0 disables the limit.
                if let Some(limit) = limits.block_range.filter(|l| *l > 0) {
                    if to.saturating_sub(from) > limit {
                        return Err((
                            -32000,
                            format!("query block range exceeds server limit, narrow your filter: {limit}"),
                        ));
                    }
                }
                json!([])
            }
            "net_peerCount" => hex(self.peers),
            "web3_clientVersion" => json!(format!("erigon/{}/linux-amd64/go1.24.3", self.version)),
            "eth_chainId" => hex(self.chain_id),
            "net_version" => json!(self.chain_id.to_string()),
            _ => {
                return Err((
                    -32601,
                    format!("the method {method} does not exist/is not available"),
                ))
            }
        })
    }

    /// Answers one JSON-RPC request object.
    fn answer(&self, req: &Value, limits: &Limits) -> Value {
        let id = req.get("id").cloned().unwrap_or(Value::Null);
        let error = |code: i64, message: String| json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
        let Some(method) = req.get("method").and_then(Value::as_str) else {
            return error(-32600, "invalid request".into());
        };
        let params = req.get("params").cloned().unwrap_or(json!([]));
        match self.call(method, &params, limits) {
            Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Err((code, message)) => error(code, message),
        }
    }

    /// Answers a raw JSON-RPC payload: a single request or a batch.
    pub(crate) fn handle(&self, body: &[u8], limits: &Limits) -> Value {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(reqs)) if reqs.is_empty() => {
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "empty batch"}})
            }
            Ok(Value::Array(reqs)) => {
                // rpc/handler.go: "batch limit %d exceeded: %d requests given" (issue #7072).
                if let Some(limit) = limits.batch.filter(|l| (reqs.len() as u64) > *l) {
                    let message = format!(
                        "batch limit {limit} exceeded: {} requests given",
                        reqs.len()
                    );
                    return json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": message}});
                }
                Value::Array(reqs.iter().map(|r| self.answer(r, limits)).collect())
            }
            Ok(req) => self.answer(&req, limits),
            Err(e) => {
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": format!("parse error: {e}")}})
            }
        }
    }

    /// `GET /health` as `cmd/rpcdaemon/health/health.go` answers it: the checks named in
    /// `X-ERIGON-HEALTHCHECK` headers (`synced`, `min_peer_count<N>`, `check_block<N>`,
    /// `max_seconds_behind<S>`), else the JSON body's `min_peer_count` / `known_block`. Each
    /// check is `HEALTHY`, `DISABLED` or `ERROR: …`; any error makes it a 500.
    pub(crate) fn health(&self, headers: &[String], body: &[u8]) -> (u16, Value) {
        let v = self.view();
        let mut out = BTreeMap::new();
        let mut failed = false;
        let mut verdict =
            |out: &mut BTreeMap<&str, String>, key, result: Option<Result<(), String>>| {
                let text = match result {
                    None => "DISABLED".to_owned(),
                    Some(Ok(())) => "HEALTHY".to_owned(),
                    Some(Err(e)) => {
                        failed = true;
                        format!("ERROR: {e}")
                    }
                };
                out.insert(key, text);
            };
        let peers = |min: u64| {
            (self.peers >= min)
                .then_some(())
                .ok_or_else(|| format!("not enough peers: {} (minimum {min})", self.peers))
        };
        let block = |n: u64| {
            (n <= v.current)
                .then_some(())
                .ok_or_else(|| "no known block with number".to_owned())
        };
        if headers.is_empty() {
            let body: Result<Value, _> = serde_json::from_slice(body);
            let (query, min, known) = match &body {
                Ok(b) => (
                    Some(Ok(())),
                    b.get("min_peer_count").and_then(Value::as_u64),
                    b.get("known_block").and_then(Value::as_u64),
                ),
                Err(e) => (Some(Err(e.to_string())), None, None),
            };
            verdict(&mut out, "healthcheck_query", query);
            verdict(&mut out, "min_peer_count", min.map(peers));
            verdict(&mut out, "check_block", known.map(block));
        } else {
            let (mut synced, mut min, mut check, mut behind) = (None, None, None, None);
            for h in headers.iter().map(|h| h.to_ascii_lowercase()) {
                let number = |rest: &str| {
                    rest.parse::<i64>()
                        .map_err(|e| format!("strconv.Atoi: parsing {rest:?}: {e}"))
                };
                if h == "synced" {
                    synced = Some(if v.current >= v.highest {
                        Ok(())
                    } else {
                        Err("not synced".to_owned())
                    });
                } else if let Some(rest) = h.strip_prefix("min_peer_count") {
                    min = Some(number(rest).and_then(|n| peers(n.max(0) as u64)));
                } else if let Some(rest) = h.strip_prefix("check_block") {
                    check = Some(number(rest).and_then(|n| block(n.max(0) as u64)));
                } else if let Some(rest) = h.strip_prefix("max_seconds_behind") {
                    behind = Some(number(rest).and_then(|s| {
                        if s < 0 {
                            return Err("bad header value".to_owned());
                        }
                        let need = (now_ms() / 1000) as i64 - s;
                        let got = v.head_ts as i64;
                        (got >= need).then_some(()).ok_or_else(|| {
                            format!("timestamp too old: got ts: {got}, need: {need}")
                        })
                    }));
                }
            }
            verdict(&mut out, "synced", synced);
            verdict(&mut out, "min_peer_count", min);
            verdict(&mut out, "check_block", check);
            verdict(&mut out, "max_seconds_behind", behind);
        }
        (if failed { 500 } else { 200 }, json!(out))
    }
}

fn hex(n: u64) -> Value {
    Value::String(format!("{n:#x}"))
}
