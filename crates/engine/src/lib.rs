//! Node engines: how to run Erigon 3 (one process with embedded RPC, or the Erigon 2 style erigon +
//! rpcdaemon pair) and anvil (the dev chain) for one instance on its own ports and data dir, and
//! how to tell over JSON-RPC that a node is ready and healthy.

use std::path::{Path, PathBuf};

use erigolem_primitives::{EngineKind, Network, Prune};
use erigolem_supervisor::ProcessSpec;
use serde::{Deserialize, Serialize};

mod rpc;
pub use rpc::{RpcClient, RpcError};

/// The ports of one dedicated instance: a contiguous block starting at `base`.
///
/// Every port a node opens is here, so that several instances run side by side; only `http` is
/// ever exposed (through Nginx), and everything binds to 127.0.0.1 except the p2p ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBlock {
    pub base: u16,
}

impl PortBlock {
    /// Ports per instance.
    pub const LEN: u16 = 12;

    /// JSON-RPC over HTTP (and WebSocket, on the same port).
    pub fn http(self) -> u16 {
        self.base
    }
    /// `--ws.port`: kept distinct although Erigon 3 serves WebSocket on the HTTP port.
    pub fn ws(self) -> u16 {
        self.base + 1
    }
    pub fn authrpc(self) -> u16 {
        self.base + 2
    }
    pub fn private_api(self) -> u16 {
        self.base + 3
    }
    pub fn torrent(self) -> u16 {
        self.base + 4
    }
    /// devp2p; `p2p_allowed` gives the ports for the further eth protocol versions.
    pub fn p2p(self) -> u16 {
        self.base + 5
    }
    pub fn p2p_allowed(self) -> [u16; 2] {
        [self.base + 5, self.base + 6]
    }
    /// Caplin (the embedded consensus client): discovery UDP and TCP, and its sentinel.
    pub fn caplin_discovery(self) -> u16 {
        self.base + 7
    }
    pub fn caplin_discovery_tcp(self) -> u16 {
        self.base + 8
    }
    pub fn sentinel(self) -> u16 {
        self.base + 9
    }
    /// Caplin's beacon API (served by newer Erigon 3 releases by default).
    pub fn beacon_api(self) -> u16 {
        self.base + 10
    }
}

/// The JSON-RPC namespaces an instance serves.
pub const ERIGON_HTTP_API: &str = "eth,erigon,web3,net,debug,trace,txpool";

/// How to run Erigon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErigonEngine {
    /// The `erigon` binary.
    pub binary: PathBuf,
    /// Erigon 2 layout: a separate `rpcdaemon` connected over the private API. Erigon 3 embeds
    /// the RPC server, so this is normally absent.
    #[serde(default)]
    pub rpcdaemon: Option<PathBuf>,
}

impl ErigonEngine {
    /// The networks Erigon serves here (`dev` is served by anvil).
    pub fn networks() -> impl Iterator<Item = Network> {
        Network::ALL.into_iter().filter(|n| *n != Network::Dev)
    }

    /// The processes of one instance: `erigon` alone (Erigon 3), or `erigon` then `rpcdaemon`.
    /// The RPC answers on `ports.http()`.
    pub fn processes(
        &self,
        network: Network,
        prune: Prune,
        datadir: &Path,
        ports: PortBlock,
    ) -> Vec<ProcessSpec> {
        let mut erigon = vec![
            format!("--datadir={}", datadir.display()),
            format!("--chain={network}"),
            format!("--prune.mode={prune}"),
            format!("--port={}", ports.p2p()),
            format!("--p2p.allowed-ports={}", join(ports.p2p_allowed())),
            format!("--authrpc.addr=127.0.0.1"),
            format!("--authrpc.port={}", ports.authrpc()),
            format!("--torrent.port={}", ports.torrent()),
            format!("--private.api.addr=127.0.0.1:{}", ports.private_api()),
            format!("--caplin.discovery.port={}", ports.caplin_discovery()),
            format!(
                "--caplin.discovery.tcpport={}",
                ports.caplin_discovery_tcp()
            ),
            format!("--sentinel.port={}", ports.sentinel()),
            format!("--beacon.api.port={}", ports.beacon_api()),
            "--nat=none".to_owned(),
            format!("--log.dir.path={}", datadir.join("logs").display()),
        ];
        let rpc = vec![
            "--http".to_owned(),
            "--http.addr=127.0.0.1".to_owned(),
            format!("--http.port={}", ports.http()),
            format!("--http.api={ERIGON_HTTP_API}"),
            "--ws".to_owned(),
            format!("--ws.port={}", ports.ws()),
        ];
        match &self.rpcdaemon {
            None => {
                erigon.extend(rpc);
                vec![ProcessSpec::new(&self.binary).args(erigon)]
            }
            Some(rpcdaemon) => {
                // The node serves no RPC itself; rpcdaemon reads its datadir and private API.
                erigon.push("--http=false".to_owned());
                let mut daemon = vec![
                    format!("--datadir={}", datadir.display()),
                    format!("--private.api.addr=127.0.0.1:{}", ports.private_api()),
                ];
                daemon.extend(rpc.into_iter().filter(|a| !a.starts_with("--ws.port")));
                vec![
                    ProcessSpec::new(&self.binary).args(erigon),
                    ProcessSpec::new(rpcdaemon).args(daemon),
                ]
            }
        }
    }
}

/// How to run anvil, the dev chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnvilEngine {
    pub binary: PathBuf,
    /// Seconds between blocks (a dev chain whose height grows, like a real one).
    #[serde(default = "default_block_time")]
    pub block_time: u32,
}

fn default_block_time() -> u32 {
    1
}

impl AnvilEngine {
    /// The anvil process of one instance. Its chain state is dumped to the data dir periodically and
    /// on exit, and loaded on start, so a restarted dev chain resumes where it was.
    pub fn process(&self, datadir: &Path, ports: PortBlock) -> ProcessSpec {
        let state = datadir.join("anvil-state.json");
        ProcessSpec::new(&self.binary).args([
            "--host".to_owned(),
            "127.0.0.1".to_owned(),
            "--port".to_owned(),
            ports.http().to_string(),
            "--chain-id".to_owned(),
            Network::Dev.chain_id().to_string(),
            "--block-time".to_owned(),
            self.block_time.to_string(),
            "--state".to_owned(),
            state.display().to_string(),
            "--state-interval".to_owned(),
            "10".to_owned(),
        ])
    }
}

/// The engine that serves `network`.
pub fn engine_for(network: Network) -> EngineKind {
    match network {
        Network::Dev => EngineKind::Anvil,
        _ => EngineKind::Erigon,
    }
}

fn join(ports: impl IntoIterator<Item = u16>) -> String {
    ports
        .into_iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",")
}
