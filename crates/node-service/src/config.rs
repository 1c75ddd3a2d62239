//! The runtime's config file (the SDK's JSON config, `ya-runtime-erigon.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use erigolem_engine::{AnvilEngine, ErigonEngine, PortBlock};
use erigolem_gateway::GatewayConfig;
use erigolem_guard::GuardLimits;
use erigolem_primitives::paths::absolute_from;
use erigolem_primitives::{MethodPattern, Mode, Network, Prune, RpcLimits};
use serde::{Deserialize, Serialize};

/// Everything the runtime needs to know about its provider machine. See `conf/ya-runtime-erigon.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Instances' data dirs, logs and locks live here (`instances/`, `ports/`).
    pub data_dir: PathBuf,
    /// Ports for dedicated instances, `[start, end)`; each instance takes a block of
    /// `PortBlock::LEN` (12) consecutive ports.
    pub port_range: PortRange,
    /// The base URL users reach Nginx at, e.g. `https://node.example.org:8443`. An instance's
    /// endpoint is `<public_url>/<instance>/` (and the same with `ws(s)://`).
    pub public_url: String,
    /// The Nginx that fronts the instances.
    pub nginx: GatewayConfig,
    /// Engine binaries; an absent engine means its networks are not offered.
    #[serde(default)]
    pub engines: Engines,
    /// Shared (provider-kept, synced) nodes: network → their local JSON-RPC URL.
    #[serde(default)]
    pub shared: BTreeMap<Network, String>,
    #[serde(default)]
    pub limits: Limits,
    /// JSON-RPC limits of dedicated Erigon nodes (`null` keeps Erigon's own default).
    #[serde(default = "dedicated_rpc_limits")]
    pub rpc_limits: RpcLimits,
    /// What `HEALTH` asks Erigon's `/health` for.
    #[serde(default)]
    pub health: HealthChecks,
    /// The endpoint guard: limits per endpoint and the provider's method deny lists.
    #[serde(default)]
    pub guard: GuardSettings,
}

/// The provider's settings of every endpoint's guard (runtime config `guard`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardSettings {
    /// Limits of an endpoint on a shared node (all fields, when given).
    pub shared: GuardLimits,
    /// Limits of an endpoint on a dedicated node (all fields, when given).
    pub dedicated: GuardLimits,
    /// Methods refused on every endpoint (`name` or `namespace_*`), on top of the engine's own
    /// deny list.
    pub deny: Vec<MethodPattern>,
    /// Methods refused on shared nodes' endpoints. Default: `debug_*`, `trace_*`.
    pub shared_deny: Vec<MethodPattern>,
}

impl Default for GuardSettings {
    fn default() -> Self {
        let policy = erigolem_guard::PolicySettings::default();
        Self {
            shared: GuardLimits::SHARED,
            dedicated: GuardLimits::DEDICATED,
            deny: policy.deny,
            shared_deny: policy.shared_deny,
        }
    }
}

impl GuardSettings {
    pub fn limits(&self, mode: Mode) -> GuardLimits {
        match mode {
            Mode::Shared => self.shared,
            Mode::Dedicated => self.dedicated,
        }
    }

    pub fn policy(&self) -> erigolem_guard::PolicySettings {
        erigolem_guard::PolicySettings {
            deny: self.deny.clone(),
            shared_deny: self.shared_deny.clone(),
        }
    }
}

/// Raised limits for a node one user has to themselves. Erigon's defaults (block range 1,000,
/// 20,000 logs, batches of 100 run 2 at a time; `cmd/utils/flags.go`) protect a node many
/// strangers share; a dedicated node's user expects what managed providers allow (10,000-block
/// `eth_getLogs` ranges are the common ceiling) and may only hurt themselves.
pub fn dedicated_rpc_limits() -> RpcLimits {
    RpcLimits {
        block_range: Some(10_000),
        logs_max_results: Some(100_000),
        batch_limit: Some(1_000),
        batch_concurrency: Some(4),
        max_concurrency: None,
    }
}

/// The checks of Erigon's `/health` that `HEALTH` asks for (`X-ERIGON-HEALTHCHECK`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthChecks {
    /// `min_peer_count<N>`.
    pub min_peers: u64,
    /// `max_seconds_behind<S>`: the head block at most this old.
    pub max_seconds_behind: u64,
}

impl Default for HealthChecks {
    fn default() -> Self {
        Self {
            min_peers: 1,
            max_seconds_behind: 120,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    /// The port blocks of the range, in order.
    pub fn blocks(self) -> impl Iterator<Item = PortBlock> {
        (self.start..self.end)
            .step_by(PortBlock::LEN as usize)
            .filter(move |b| u32::from(*b) + u32::from(PortBlock::LEN) <= u32::from(self.end))
            .map(|base| PortBlock { base })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Engines {
    #[serde(default)]
    pub erigon: Option<ErigonEngine>,
    #[serde(default)]
    pub anvil: Option<AnvilEngine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Instances (dedicated and shared) this host serves at once.
    pub max_instances: u32,
    /// How long a dedicated node may take until its RPC answers.
    pub start_timeout_secs: u64,
    /// Time between SIGTERM and SIGKILL when a node is stopped.
    pub stop_grace_secs: u64,
    /// Consecutive crashes after which a node is `failed`.
    pub max_restarts: u32,
    /// Bytes that must stay free on the data dir's filesystem: a dedicated start is refused when
    /// it would leave less, and a running dedicated node is stopped (STATUS `failed`, saying
    /// why) once free space falls below it, before the disk is full.
    pub min_free_disk_bytes: u64,
    /// A dedicated Erigon node also needs Erigon's published size for its network and prune mode
    /// (`erigolem_engine::disk_estimate`), less what other instances' nodes were already
    /// promised: `prune: archive` is refused where it cannot fit.
    pub disk_estimates: bool,
    /// A node's log rotates at this size; `log_files_kept` rotated files are kept.
    pub log_max_bytes: u64,
    pub log_files_kept: u32,
    /// The prune modes this provider lets dedicated Erigon nodes use (e.g. `["full", "minimal"]`
    /// to never host an archive node); empty: every mode the Erigon release has. Offers list only
    /// these, and a start asking for another is refused.
    pub prunes: Vec<Prune>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_instances: 32,
            start_timeout_secs: 120,
            stop_grace_secs: 60,
            max_restarts: 3,
            min_free_disk_bytes: 2 * 1024 * 1024 * 1024,
            disk_estimates: true,
            log_max_bytes: erigolem_supervisor::LogFile::DEFAULT_MAX_BYTES,
            log_files_kept: erigolem_supervisor::LogFile::DEFAULT_KEEP,
            prunes: Vec::new(),
        }
    }
}

impl Default for RuntimeConfig {
    /// The layout `erigolem-provider setup` writes on a Debian provider.
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/erigolem/instances"),
            port_range: PortRange {
                start: 40_000,
                end: 41_000,
            },
            public_url: "http://127.0.0.1:8545".to_owned(),
            nginx: GatewayConfig {
                dir: PathBuf::from("/etc/nginx/erigolem"),
                nginx_bin: PathBuf::from("/usr/sbin/nginx"),
                nginx_conf: PathBuf::from("/etc/nginx/nginx.conf"),
                pid_file: PathBuf::from("/run/nginx.pid"),
                password_group: Some("www-data".to_owned()),
            },
            engines: Engines {
                erigon: Some(ErigonEngine {
                    binary: PathBuf::from("/usr/local/bin/erigon"),
                    rpcdaemon: None,
                }),
                anvil: None,
            },
            shared: BTreeMap::new(),
            limits: Limits::default(),
            guard: GuardSettings::default(),
            rpc_limits: dedicated_rpc_limits(),
            health: HealthChecks::default(),
        }
    }
}

impl RuntimeConfig {
    /// Every path of the config resolved against `base` (the working directory the runtime was
    /// started in), once, before any of them is used or handed to a node process.
    pub fn absolutize(mut self, base: &Path) -> Self {
        let abs = |p: &mut PathBuf| *p = absolute_from(base, p);
        abs(&mut self.data_dir);
        abs(&mut self.nginx.dir);
        abs(&mut self.nginx.nginx_bin);
        abs(&mut self.nginx.nginx_conf);
        abs(&mut self.nginx.pid_file);
        if let Some(erigon) = &mut self.engines.erigon {
            abs(&mut erigon.binary);
            if let Some(rpcdaemon) = &mut erigon.rpcdaemon {
                abs(rpcdaemon);
            }
        }
        if let Some(anvil) = &mut self.engines.anvil {
            abs(&mut anvil.binary);
        }
        self
    }

    /// The networks this host's config can serve, and in which modes (before asking the engine
    /// binaries whether they run: see `NodeService::engines`).
    pub fn offered(&self) -> BTreeMap<Network, Vec<Mode>> {
        let mut out: BTreeMap<Network, Vec<Mode>> = BTreeMap::new();
        for network in Network::ALL {
            let dedicated = match network {
                Network::Dev => self.engines.anvil.is_some(),
                _ => self.engines.erigon.is_some(),
            };
            if self.shared.contains_key(&network) {
                out.entry(network).or_default().push(Mode::Shared);
            }
            if dedicated {
                out.entry(network).or_default().push(Mode::Dedicated);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn documented_example_parses() {
        let text = include_str!("../../../conf/ya-runtime-erigon.json");
        let config: RuntimeConfig = serde_json::from_str(text).unwrap();
        assert_eq!(config.shared.len(), 2);
        let offered = config.offered();
        assert_eq!(
            offered[&Network::Mainnet],
            vec![Mode::Shared, Mode::Dedicated]
        );
        assert_eq!(offered[&Network::Dev], vec![Mode::Dedicated]);
        assert_eq!(config.port_range.blocks().count(), 100);
        assert_eq!(config.rpc_limits, dedicated_rpc_limits());
    }

    #[test]
    fn relative_paths_resolve_against_the_start_directory() {
        let mut config = RuntimeConfig {
            data_dir: PathBuf::from("state"),
            ..RuntimeConfig::default()
        };
        config.nginx.dir = PathBuf::from("./nginx/gw");
        config.engines.anvil = Some(AnvilEngine {
            binary: PathBuf::from(".tools/bin/anvil"),
            block_time: 1,
        });
        let config = config.absolutize(Path::new("/srv/p"));
        assert_eq!(config.data_dir, Path::new("/srv/p/state"));
        assert_eq!(config.nginx.dir, Path::new("/srv/p/nginx/gw"));
        assert_eq!(config.nginx.nginx_bin, Path::new("/usr/sbin/nginx"));
        assert_eq!(
            config.engines.anvil.unwrap().binary,
            Path::new("/srv/p/.tools/bin/anvil")
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_str::<RuntimeConfig>(r#"{"data_dir":"/x","prot_range":{}}"#)
            .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `prot_range`"),
            "{err}"
        );
    }
}
