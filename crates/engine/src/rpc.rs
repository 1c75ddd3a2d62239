use std::time::{Duration, Instant};

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

    /// Does the node answer JSON-RPC at all?
    pub async fn is_ready(&self) -> bool {
        self.chain_id().await.is_ok()
    }

    /// Block height, sync state, peers (where the engine has them) and latency.
    pub async fn health(&self) -> Health {
        let started = Instant::now();
        let block = self.block_number().await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let (syncing, peers, version) = tokio::join!(
            self.syncing(),
            self.peer_count(),
            self.call("web3_clientVersion", json!([]))
        );
        let error = block.as_ref().err().map(ToString::to_string);
        let syncing = syncing.ok().map(|s| s.is_some());
        Health {
            healthy: block.is_ok() && syncing.is_some(),
            rpc: block.is_ok(),
            block: block.ok(),
            syncing,
            peers: peers.ok(),
            client_version: version.ok().and_then(|v| v.as_str().map(str::to_owned)),
            latency_ms: error.is_none().then_some(latency_ms),
            error,
        }
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
