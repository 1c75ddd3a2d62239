//! The runtime's config file (the SDK's JSON config, `ya-runtime-erigon.json`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use erigolem_engine::{AnvilEngine, ErigonEngine, PortBlock};
use erigolem_gateway::GatewayConfig;
use erigolem_guard::GuardLimits;
use erigolem_primitives::{MethodPattern, Mode, Network};
use serde::{Deserialize, Serialize};

/// Everything the runtime needs to know about its provider machine. See `conf/ya-runtime-erigon.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Instances' data dirs, logs and locks live here (`instances/`, `ports/`).
    pub data_dir: PathBuf,
    /// Ports for dedicated instances, `[start, end)`; each instance takes a block of
    /// `PortBlock::LEN` (10) consecutive ports.
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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_instances: 32,
            start_timeout_secs: 120,
            stop_grace_secs: 60,
            max_restarts: 3,
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
        }
    }
}

impl RuntimeConfig {
    /// The networks this host can serve, and in which modes.
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
