//! Node engines: how to run Erigon (one process with embedded RPC, or erigon + rpcdaemon) and
//! anvil (the dev chain) for one instance on its own ports and data dir, which Erigon release a
//! binary is and what its command line accepts, how much disk a node takes, and how to tell over
//! JSON-RPC (and Erigon's `/health`) that a node is ready and healthy.

use std::path::{Path, PathBuf};

use erigolem_primitives::{EngineKind, Network, Prune, RpcLimits};
use erigolem_supervisor::ProcessSpec;
use serde::{Deserialize, Serialize};

mod disk;
mod rpc;
mod version;
pub use disk::{disk_estimate, DiskBasis, DiskEstimate};
pub use rpc::{ErigonHealthQuery, Head, RpcClient, RpcError};
pub use version::{
    detect as detect_version, run_version, ErigonVersion, Family, FlagSet, VersionError,
    NEWEST_KNOWN,
};

/// The ports of one dedicated instance: a contiguous block starting at `base`.
///
/// Every port a node opens is here, so that several instances run side by side; only `http` is
/// ever exposed (through Nginx), and everything binds to 127.0.0.1 except the p2p ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBlock {
    pub base: u16,
}

impl PortBlock {
    /// Ports per instance: the 11 listeners an Erigon release opens (below), plus one spare so a
    /// listener a future release adds fits without moving every block.
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
    /// devp2p (`--port`, TCP and UDP).
    pub fn p2p(self) -> u16 {
        self.base + 5
    }
    /// The ports of `listeners` devp2p servers: before Erigon 3.5 one per eth protocol version,
    /// picked from `--p2p.allowed-ports`.
    pub fn p2p_allowed(self, listeners: u8) -> Vec<u16> {
        (0..u16::from(listeners.clamp(1, 2)))
            .map(|i| self.base + 5 + i)
            .collect()
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
    /// Caplin's beacon API.
    pub fn beacon_api(self) -> u16 {
        self.base + 10
    }
}

/// The JSON-RPC namespaces an instance serves.
pub const ERIGON_HTTP_API: &str = "eth,erigon,web3,net,debug,trace,txpool";

/// How to run Erigon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErigonEngine {
    /// The `erigon` binary.
    pub binary: PathBuf,
    /// A separate `rpcdaemon` connected over the private API (the Erigon 2 layout). Erigon 3
    /// embeds the RPC server, so this is normally absent.
    #[serde(default)]
    pub rpcdaemon: Option<PathBuf>,
}

/// An Erigon binary's release and what its command line accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErigonRelease {
    pub version: ErigonVersion,
    pub flags: FlagSet,
    /// Set when the release is newer than the runtime knows (its newest known flags are used).
    pub warning: Option<String>,
}

impl ErigonRelease {
    pub fn new(version: ErigonVersion) -> Result<Self, VersionError> {
        let (flags, warning) = FlagSet::of(&version)?;
        Ok(Self {
            version,
            flags,
            warning,
        })
    }

    /// The limits a node of this release runs with when the provider asks for `wanted`: what the
    /// release has no flag for is dropped (`None`).
    pub fn effective_limits(&self, wanted: &RpcLimits) -> RpcLimits {
        let f = &self.flags;
        RpcLimits {
            block_range: wanted.block_range.filter(|_| f.block_range_limit),
            logs_max_results: wanted.logs_max_results.filter(|_| f.logs_max_results),
            batch_limit: wanted.batch_limit,
            batch_concurrency: wanted.batch_concurrency,
            max_concurrency: wanted.max_concurrency.filter(|_| f.max_concurrency),
        }
    }
}

/// Why a node cannot be run with an Erigon release.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgvError {
    #[error("Erigon {version} does not serve {network} (it serves {served})")]
    Network {
        version: String,
        network: Network,
        served: String,
    },
    #[error("Erigon {version} has no prune mode {prune} (it has {supported})")]
    Prune {
        version: String,
        prune: Prune,
        supported: String,
    },
}

/// One Erigon node to run.
#[derive(Debug, Clone, Copy)]
pub struct ErigonNode<'a> {
    pub network: Network,
    pub prune: Prune,
    pub datadir: &'a Path,
    pub ports: PortBlock,
    /// What the provider wants; flags the release lacks are left out.
    pub limits: &'a RpcLimits,
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl ErigonEngine {
    /// The processes of one instance for `release`: `erigon` alone, or `erigon` then `rpcdaemon`.
    /// The RPC answers on `node.ports.http()`. Pure: the argv follows from the release's flag set.
    pub fn processes(
        &self,
        release: &ErigonRelease,
        node: &ErigonNode<'_>,
    ) -> Result<Vec<ProcessSpec>, ArgvError> {
        let f = &release.flags;
        let version = release.version.to_string();
        if !f.chains.contains(&node.network) {
            return Err(ArgvError::Network {
                version,
                network: node.network,
                served: list(f.chains),
            });
        }
        if !f.prune_modes.contains(&node.prune) {
            return Err(ArgvError::Prune {
                version,
                prune: node.prune,
                supported: list(f.prune_modes),
            });
        }
        let (ports, datadir) = (node.ports, node.datadir);
        let mut erigon = vec![
            format!("--datadir={}", datadir.display()),
            format!("--chain={}", node.network),
        ];
        match f.family {
            Family::Erigon3 => erigon.push(format!("--prune.mode={}", node.prune)),
            // Erigon 2's pruned node: history, receipts, tx index and call traces of the last 90k blocks.
            Family::Erigon2 if node.prune == Prune::Full => erigon.push("--prune=hrtc".to_owned()),
            Family::Erigon2 => {}
        }
        erigon.push(format!("--port={}", ports.p2p()));
        if f.p2p_listeners > 1 {
            let allowed: Vec<String> = ports
                .p2p_allowed(f.p2p_listeners)
                .iter()
                .map(u16::to_string)
                .collect();
            erigon.push(format!("--p2p.allowed-ports={}", allowed.join(",")));
        }
        erigon.extend([
            "--authrpc.addr=127.0.0.1".to_owned(),
            format!("--authrpc.port={}", ports.authrpc()),
            format!("--torrent.port={}", ports.torrent()),
            format!("--private.api.addr=127.0.0.1:{}", ports.private_api()),
            format!("--caplin.discovery.port={}", ports.caplin_discovery()),
            format!(
                "--caplin.discovery.tcpport={}",
                ports.caplin_discovery_tcp()
            ),
            format!("--sentinel.port={}", ports.sentinel()),
        ]);
        if f.beacon_api {
            erigon.push(format!("--beacon.api.port={}", ports.beacon_api()));
        }
        if f.mcp {
            // Not exposed to users, unauthenticated to every local process, and one more listener
            // per instance: off (docs/erigon-flags.md, "MCP").
            erigon.push("--mcp.disable".to_owned());
        }
        erigon.extend([
            "--nat=none".to_owned(),
            format!("--log.dir.path={}", datadir.join("logs").display()),
        ]);
        let limits = release.effective_limits(node.limits);
        let mut rpc = vec![
            "--http".to_owned(),
            "--http.addr=127.0.0.1".to_owned(),
            format!("--http.port={}", ports.http()),
            format!("--http.api={ERIGON_HTTP_API}"),
            "--ws".to_owned(),
        ];
        let limit_flags = [
            ("rpc.batch.limit", limits.batch_limit),
            ("rpc.batch.concurrency", limits.batch_concurrency),
            ("rpc.blockrange.limit", limits.block_range),
            ("rpc.logs.maxresults", limits.logs_max_results),
            ("rpc.max.concurrency", limits.max_concurrency),
        ];
        rpc.extend(
            limit_flags
                .into_iter()
                .filter_map(|(flag, value)| value.map(|v| format!("--{flag}={v}"))),
        );
        match &self.rpcdaemon {
            None => {
                erigon.push(format!("--ws.port={}", ports.ws()));
                erigon.extend(rpc);
                Ok(vec![ProcessSpec::new(&self.binary).args(erigon)])
            }
            Some(rpcdaemon) => {
                // The node serves no RPC itself; rpcdaemon reads its datadir and private API.
                erigon.push("--http=false".to_owned());
                let mut daemon = vec![
                    format!("--datadir={}", datadir.display()),
                    format!("--private.api.addr=127.0.0.1:{}", ports.private_api()),
                ];
                daemon.extend(rpc);
                Ok(vec![
                    ProcessSpec::new(&self.binary).args(erigon),
                    ProcessSpec::new(rpcdaemon).args(daemon),
                ])
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
