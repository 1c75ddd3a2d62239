use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use erigolem_primitives::{Health, SyncProgress, SyncStage};
use serde_json::{json, Value};

/// A small JSON-RPC client for readiness and health probes of one node.
#[derive(Debug, Clone)]
pub struct RpcClient {
    http: reqwest::Client,
    url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("{url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{method}: {message}")]
    Rpc { method: String, message: String },
    #[error("{method}: unexpected answer {value}")]
    Decode { method: String, value: Value },
}

impl RpcClient {
    pub fn new(url: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(2)
            .build()
            .unwrap_or_default();
        Self {
            http,
            url: url.into(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let transport = |source| RpcError::Transport {
            url: self.url.clone(),
            source,
        };
        let resp = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(RpcError::Status {
                url: self.url.clone(),
                status: resp.status().as_u16(),
            });
        }
        let mut answer: Value = resp.json().await.map_err(transport)?;
        if let Some(err) = answer.get("error") {
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("error")
                .to_owned();
            return Err(RpcError::Rpc {
                method: method.to_owned(),
                message,
            });
        }
        Ok(answer
            .get_mut("result")
            .map(Value::take)
            .unwrap_or(Value::Null))
    }

    async fn quantity(&self, method: &str) -> Result<u64, RpcError> {
        let value = self.call(method, json!([])).await?;
        quantity(&value).ok_or_else(|| RpcError::Decode {
            method: method.to_owned(),
            value,
        })
    }

    pub async fn block_number(&self) -> Result<u64, RpcError> {
        self.quantity("eth_blockNumber").await
    }

    pub async fn chain_id(&self) -> Result<u64, RpcError> {
        self.quantity("eth_chainId").await
    }

    pub async fn peer_count(&self) -> Result<u64, RpcError> {
        self.quantity("net_peerCount").await
    }

    /// `eth_syncing`: `None` when the node is in sync.
    pub async fn syncing(&self) -> Result<Option<SyncProgress>, RpcError> {
        let value = self.call("eth_syncing", json!([])).await?;
        parse_syncing(&value).ok_or_else(|| RpcError::Decode {
            method: "eth_syncing".into(),
            value,
        })
    }

    /// The head block's number and timestamp (`eth_getBlockByNumber("latest", false)`).
    pub async fn head(&self) -> Result<Head, RpcError> {
        let value = self
            .call("eth_getBlockByNumber", json!(["latest", false]))
            .await?;
        let field = |name: &str| value.get(name).and_then(quantity);
        match (field("number"), field("timestamp")) {
            (Some(number), Some(timestamp)) => Ok(Head { number, timestamp }),
            _ => Err(RpcError::Decode {
                method: "eth_getBlockByNumber".into(),
                value,
            }),
        }
    }

    /// Erigon's `/health` endpoint with the checks of `query` (`X-ERIGON-HEALTHCHECK` headers, as
    /// `cmd/rpcdaemon/health/health.go` reads them): each check's verdict (`HEALTHY`, `DISABLED`
    /// or `ERROR: …`) and whether all passed (HTTP 200; 500 when one failed).
    pub async fn erigon_health(
        &self,
        query: &ErigonHealthQuery,
    ) -> Result<(bool, BTreeMap<String, String>), RpcError> {
        let url = format!("{}/health", self.url.trim_end_matches('/'));
        let mut req = self.http.get(&url);
        if query.synced {
            req = req.header(HEALTH_HEADER, "synced");
        }
        if let Some(n) = query.min_peer_count {
            req = req.header(HEALTH_HEADER, format!("min_peer_count{n}"));
        }
        if let Some(s) = query.max_seconds_behind {
            req = req.header(HEALTH_HEADER, format!("max_seconds_behind{s}"));
        }
        let transport = |source| RpcError::Transport {
            url: url.clone(),
            source,
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        if !matches!(status.as_u16(), 200 | 500) {
            return Err(RpcError::Status {
                url: url.clone(),
                status: status.as_u16(),
            });
        }
        let checks: BTreeMap<String, String> = resp.json().await.map_err(transport)?;
        Ok((status.is_success(), checks))
    }

    /// Does the node answer JSON-RPC at all?
    pub async fn is_ready(&self) -> bool {
        self.chain_id().await.is_ok()
    }

    /// Block height, sync state, peers (where the engine has them), how far behind the chain the
    /// head is, and latency; with `erigon`, Erigon's own `/health` verdicts, which then decide
    /// `healthy`.
    pub async fn health(&self, erigon: Option<&ErigonHealthQuery>) -> Health {
        let started = Instant::now();
        let head = self.head().await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let behind_seconds = head.as_ref().ok().map(Head::behind_seconds);
        let block = head.map(|h| h.number);
        let checks = async {
            match erigon {
                Some(q) => Some(self.erigon_health(q).await),
                None => None,
            }
        };
        let (syncing, peers, version, checks) = tokio::join!(
            self.syncing(),
            self.peer_count(),
            self.call("web3_clientVersion", json!([])),
            checks
        );
        let mut error = block.as_ref().err().map(ToString::to_string);
        let rpc_ok = block.is_ok();
        let syncing = syncing.ok().map(|s| s.is_some());
        let mut healthy = block.is_ok() && syncing.is_some();
        let checks = match checks {
            None => None,
            Some(Ok((passed, checks))) => {
                healthy &= passed;
                Some(checks)
            }
            Some(Err(e)) => {
                healthy = false;
                error.get_or_insert_with(|| format!("/health: {e}"));
                None
            }
        };
        Health {
            healthy,
            rpc: block.is_ok(),
            block: block.ok(),
            syncing,
            peers: peers.ok(),
            client_version: version.ok().and_then(|v| v.as_str().map(str::to_owned)),
            latency_ms: rpc_ok.then_some(latency_ms),
            behind_seconds,
            checks,
            error,
        }
    }
}

/// The header Erigon's `/health` reads its checks from.
const HEALTH_HEADER: &str = "X-ERIGON-HEALTHCHECK";

/// Which of Erigon's `/health` checks to ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErigonHealthQuery {
    /// `synced`: `eth_syncing` is false.
    pub synced: bool,
    /// `min_peer_count<N>`.
    pub min_peer_count: Option<u64>,
    /// `max_seconds_behind<S>`: the head block is at most S seconds old.
    pub max_seconds_behind: Option<u64>,
}

/// A node's head block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub number: u64,
    /// Unix seconds.
    pub timestamp: u64,
}

impl Head {
    /// Seconds between now and the head's timestamp (0 if it is in the future).
    pub fn behind_seconds(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        now.saturating_sub(self.timestamp)
    }
}

/// A `0x…` quantity.
pub(crate) fn quantity(value: &Value) -> Option<u64> {
    u64::from_str_radix(value.as_str()?.strip_prefix("0x")?, 16).ok()
}

/// `eth_syncing`'s answer: `false`, or an object (with Erigon's `stages`). `Some(None)` = in sync.
fn parse_syncing(value: &Value) -> Option<Option<SyncProgress>> {
    if value == &Value::Bool(false) {
        return Some(None);
    }
    let field = |name: &str| value.get(name).and_then(quantity);
    let stages = value
        .get("stages")
        .and_then(Value::as_array)
        .map(|stages| {
            stages
                .iter()
                .filter_map(|s| {
                    Some(SyncStage {
                        name: s.get("stage_name")?.as_str()?.to_owned(),
                        block: quantity(s.get("block_number")?)?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Some(SyncProgress {
        starting_block: field("startingBlock").unwrap_or(0),
        current_block: field("currentBlock")?,
        highest_block: field("highestBlock")?,
        stages,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn syncing_shapes() {
        assert_eq!(parse_syncing(&json!(false)), Some(None));
        let erigon = json!({"startingBlock":"0x0","currentBlock":"0x10","highestBlock":"0x20",
            "stages":[{"stage_name":"Headers","block_number":"0x20"},{"stage_name":"Execution","block_number":"0x10"}]});
        let p = parse_syncing(&erigon).unwrap().unwrap();
        assert_eq!((p.current_block, p.highest_block), (16, 32));
        assert_eq!(
            p.stages[1],
            SyncStage {
                name: "Execution".into(),
                block: 16
            }
        );
        assert_eq!(parse_syncing(&json!({"x":1})), None);
        assert_eq!(parse_syncing(&json!(true)), None);
    }
}
