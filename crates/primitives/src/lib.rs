//! Shared types of Erigolem: networks, start arguments, node state and the runtime's STATUS document.
//!
//! These are the contract between the provider runtime (`ya-runtime-erigon`), the requestor server
//! and the UI (DESIGN.md §2); their JSON shapes are part of the public protocol.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

mod access;
mod instance;
mod usage;
pub use access::{
    is_method_name, InvalidPattern, IpBlock, MethodPattern, OriginPattern, MAX_ALLOWLIST,
};
pub mod paths;
pub use instance::{InstanceName, InvalidInstanceName};
pub use usage::{LatencyHistogram, Refused, Usage, LATENCY_BOUNDS_US, OTHER_METHODS, TOP_METHODS};

/// An Ethereum network a node can serve.
///
/// Holesky is gone: the network was shut down (ethereum.org, 2025-09) and Erigon removed it
/// (erigontech/erigon PR #17685, in 3.3). Asking for it is refused with that reason
/// ([`Network::retired`]), never mistaken for another network.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    Mainnet,
    Sepolia,
    Hoodi,
    /// A local development chain (anvil); blocks are produced on a timer.
    Dev,
}

impl Network {
    pub const ALL: [Network; 4] = [
        Network::Mainnet,
        Network::Sepolia,
        Network::Hoodi,
        Network::Dev,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Network::Mainnet => "mainnet",
            Network::Sepolia => "sepolia",
            Network::Hoodi => "hoodi",
            Network::Dev => "dev",
        }
    }

    /// The EIP-155 chain id.
    pub fn chain_id(self) -> u64 {
        match self {
            Network::Mainnet => 1,
            Network::Sepolia => 11_155_111,
            Network::Hoodi => 560_048,
            Network::Dev => 1337,
        }
    }

    /// Why a network that was once served is not any more (`None` for names never served).
    pub fn retired(name: &str) -> Option<&'static str> {
        match name {
            "holesky" => Some(
                "network holesky was shut down and is no longer served \
                 (Erigon removed it, erigontech/erigon PR #17685); use hoodi or sepolia instead",
            ),
            _ => None,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.as_str() == name)
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<str>::deserialize(d)?;
        if let Some(network) = Network::from_name(&name) {
            return Ok(network);
        }
        if let Some(why) = Network::retired(&name) {
            return Err(serde::de::Error::custom(why));
        }
        const NAMES: &[&str] = &["mainnet", "sepolia", "hoodi", "dev"];
        Err(serde::de::Error::unknown_variant(&name, NAMES))
    }
}

/// How an activity gets its node.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A synced node the provider keeps running; the activity gets its own credentials in front of it.
    Shared,
    /// A node spawned for this activity alone (own data dir, own ports).
    Dedicated,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::Shared, Mode::Dedicated];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Shared => "shared",
            Mode::Dedicated => "dedicated",
        }
    }
}

/// Erigon 3's `--prune.mode`: what history a node keeps (docs.erigon.tech, "Sync modes").
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Prune {
    /// Recent state and blocks (Erigon's default).
    #[default]
    Full,
    /// All historical state.
    Archive,
    /// Only recent blocks and the latest state: the smallest node.
    Minimal,
    /// Every block and transaction, but no historical state (Erigon 3.1+).
    Blocks,
}

impl Prune {
    pub const ALL: [Prune; 4] = [Prune::Full, Prune::Archive, Prune::Minimal, Prune::Blocks];

    pub fn as_str(self) -> &'static str {
        match self {
            Prune::Full => "full",
            Prune::Archive => "archive",
            Prune::Minimal => "minimal",
            Prune::Blocks => "blocks",
        }
    }
}

macro_rules! display_from_str {
    ($($ty:ty),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = serde_json::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                serde_json::from_value(serde_json::Value::String(s.to_owned()))
            }
        }
    )*};
}
display_from_str!(Network, Mode, Prune);

/// Arguments of the runtime's `start` command; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartArgs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<Prune>,
    /// Name of the endpoint path (`/<instance>/`); generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceName>,
    // No password here: `start`'s arguments are the runtime's command line, which every local
    // user can read (/proc/<pid>/cmdline). A caller restoring an endpoint's password sends it
    // with `run ROTATE <password>`, over the runtime API (the runtime's stdin).
    /// Serve only these JSON-RPC methods (names or namespaces: `["eth_*", "net_version"]`); the
    /// provider's deny list applies either way. Absent: whatever the provider allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<MethodPattern>>,
    /// Serve only requests whose `Origin` header is one of these (browser dapps); requests without
    /// an `Origin` are refused too. Absent: any origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_origins: Option<Vec<OriginPattern>>,
    /// Serve only clients at these addresses (IPs or CIDR blocks), as the provider's Nginx saw
    /// them. Absent: any address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_ips: Option<Vec<IpBlock>>,
}

/// A caller-chosen endpoint password (`run ROTATE <password>`): 22-128 characters of
/// `[A-Za-z0-9_-]` (≥ 128 bits).
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EndpointPassword(Secret);

impl EndpointPassword {
    pub fn new(password: impl Into<String>) -> Result<Self, String> {
        let password = password.into();
        let valid = (22..=128).contains(&password.len())
            && password
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(Self(Secret::new(password)))
        } else {
            Err("a password has 22-128 characters of A-Z, a-z, 0-9, '-' and '_'".to_owned())
        }
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl fmt::Debug for EndpointPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EndpointPassword(***)")
    }
}

impl<'de> Deserialize<'de> for EndpointPassword {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Why start arguments were refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid start arguments: {0}")]
pub struct InvalidStartArgs(#[from] serde_json::Error);

impl StartArgs {
    /// Parses the `start` command's arguments: nothing, or one JSON object (possibly split over
    /// several argv words by the caller).
    pub fn parse(words: &[String]) -> Result<Self, InvalidStartArgs> {
        let text = words.join(" ");
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let args: Self = serde_json::from_str(&text)?;
        for (name, len) in [
            ("methods", args.methods.as_ref().map(Vec::len)),
            ("allow_origins", args.allow_origins.as_ref().map(Vec::len)),
            ("allow_ips", args.allow_ips.as_ref().map(Vec::len)),
        ] {
            if len.is_some_and(|n| n > MAX_ALLOWLIST) {
                return Err(InvalidStartArgs(
                    <serde_json::Error as serde::de::Error>::custom(format!(
                        "{name} has more than {MAX_ALLOWLIST} entries"
                    )),
                ));
            }
        }
        Ok(args)
    }
}

/// A secret string: serialized as itself, never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// HTTP basic-auth credentials of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub user: String,
    pub password: Secret,
}

/// Where a node is in its life, as the runtime sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Starting,
    Syncing,
    Running,
    Failed,
    Stopped,
}

/// One stage of Erigon's staged sync.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStage {
    pub name: String,
    pub block: u64,
}

/// Sync progress, from `eth_syncing`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncProgress {
    pub starting_block: u64,
    pub current_block: u64,
    pub highest_block: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<SyncStage>,
}

/// The engine behind an endpoint.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Erigon,
    Anvil,
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EngineKind::Erigon => "erigon",
            EngineKind::Anvil => "anvil",
        })
    }
}

/// The JSON-RPC limits a node enforces (Erigon's `--rpc.*` flags). In the runtime config they are
/// what the provider wants; in STATUS what the node actually runs with, `null` where its Erigon
/// release has no such limit (or, for `max_concurrency`, keeps Erigon's own default).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcLimits {
    /// Most blocks one `eth_getLogs` / `trace_filter` range may span (`--rpc.blockrange.limit`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required))]
    pub block_range: Option<u64>,
    /// Most logs one query returns (`--rpc.logs.maxresults`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required))]
    pub logs_max_results: Option<u64>,
    /// Most requests in one JSON-RPC batch (`--rpc.batch.limit`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required))]
    pub batch_limit: Option<u64>,
    /// Requests of one batch served in parallel (`--rpc.batch.concurrency`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required))]
    pub batch_concurrency: Option<u64>,
    /// Requests served at once before new ones wait (`--rpc.max.concurrency`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required))]
    pub max_concurrency: Option<u64>,
}

/// What an endpoint's guard lets one activity do (the provider's guard limits for the node's
/// mode), as STATUS reports them: over one, a call is refused at once (HTTP 429).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointLimits {
    /// Sustained JSON-RPC calls per second (HTTP requests and WebSocket messages alike).
    pub requests_per_sec: u32,
    /// Calls that may come at once above the sustained rate.
    pub burst: u32,
    /// Calls being answered at once.
    pub max_concurrent: u32,
    /// Largest HTTP body or WebSocket message, in bytes.
    pub max_body_bytes: u32,
    /// Most calls in one batch.
    pub max_batch: u32,
    /// WebSockets open at once.
    pub max_websockets: u32,
}

/// The answer of `run STATUS`: one JSON object on stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub instance: InstanceName,
    pub url: String,
    pub ws_url: String,
    pub network: Network,
    pub engine: EngineKind,
    pub mode: Mode,
    pub auth: Credentials,
    pub state: NodeState,
    pub block: Option<u64>,
    pub sync: Option<SyncProgress>,
    #[serde(default)]
    pub peers: Option<u64>,
    /// Seconds between now and the timestamp of the node's head block: how far behind the chain
    /// it is (a synced Ethereum node stays within a slot or two, 12-24 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind_seconds: Option<u64>,
    /// The engine's release as its binary reports it (e.g. `3.6.1` for Erigon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
    /// The JSON-RPC limits the node enforces (dedicated Erigon nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<RpcLimits>,
    /// The limits the endpoint's guard enforces for this activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_limits: Option<EndpointLimits>,
    /// Things the operator should know that do not stop the node (e.g. an Erigon newer than
    /// this runtime knows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// How often the node process was restarted after exiting unexpectedly.
    #[serde(default)]
    pub restarts: u32,
    /// Why the node failed (with the last lines of its log), or the last crash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the endpoint served since it started (counted by the runtime's endpoint guard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// The answer of `run HEALTH`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub healthy: bool,
    pub rpc: bool,
    pub block: Option<u64>,
    pub syncing: Option<bool>,
    pub peers: Option<u64>,
    pub client_version: Option<String>,
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind_seconds: Option<u64>,
    /// Erigon's own `/health` verdicts (`synced`, `min_peer_count`, `max_seconds_behind`, …:
    /// `HEALTHY`, `DISABLED` or `ERROR: …`), where the node has that endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn start_args_parse() {
        assert_eq!(StartArgs::parse(&[]).unwrap(), StartArgs::default());
        let args = StartArgs::parse(&[r#"{"network":"sepolia","mode":"shared"}"#.into()]).unwrap();
        assert_eq!(args.network, Some(Network::Sepolia));
        assert_eq!(args.mode, Some(Mode::Shared));
        // An exe script may split the JSON into several words.
        let split = ["{\"network\":".to_string(), "\"dev\"}".to_string()];
        assert_eq!(
            StartArgs::parse(&split).unwrap().network,
            Some(Network::Dev)
        );
    }

    #[test]
    fn start_args_errors_name_the_problem() {
        let err = StartArgs::parse(&[r#"{"network":"ropsten"}"#.into()]).unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `ropsten`"),
            "{err}"
        );
        let err = StartArgs::parse(&[r#"{"mode":"solo"}"#.into()]).unwrap_err();
        assert!(err.to_string().contains("`shared`"), "{err}");
        let err = StartArgs::parse(&[r#"{"netwrok":"dev"}"#.into()]).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        assert!(StartArgs::parse(&["{not json".into()]).is_err());
        let err = StartArgs::parse(&[r#"{"instance":"a;b"}"#.into()]).unwrap_err();
        assert!(err.to_string().contains("instance name"), "{err}");
    }

    #[test]
    fn allowlists_are_validated_entry_by_entry() {
        let args = StartArgs::parse(&[
            r#"{"methods":["eth_*","net_version"],"allow_origins":["https://app.example.org"],"allow_ips":["10.0.0.0/8","203.0.113.7"]}"#.into(),
        ])
        .unwrap();
        assert_eq!(args.methods.unwrap().len(), 2);
        assert_eq!(args.allow_ips.unwrap()[1].to_string(), "203.0.113.7");
        for (bad, says) in [
            (r#"{"methods":["eth call"]}"#, "invalid method pattern"),
            (r#"{"allow_origins":["app.example.org"]}"#, "invalid origin"),
            (
                r#"{"allow_ips":["10.0.0.0/40"]}"#,
                "invalid IP allowlist entry",
            ),
            (r#"{"methods":"eth_*"}"#, "invalid type"),
        ] {
            let err = StartArgs::parse(&[bad.into()]).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let many: Vec<String> = (0..=MAX_ALLOWLIST).map(|i| format!("m{i}_x")).collect();
        let json = serde_json::json!({ "methods": many }).to_string();
        let err = StartArgs::parse(&[json]).unwrap_err().to_string();
        assert!(err.contains("more than 100"), "{err}");
    }

    #[test]
    fn chosen_passwords_must_be_strong() {
        let ok = EndpointPassword::new("abcdefghijklmnopqrstuv").unwrap();
        assert_eq!(ok.expose(), "abcdefghijklmnopqrstuv");
        for bad in [
            "short",
            "abcdefghijklmnopqrstu:",
            "abcdefghijklmnopqrst\nuv",
        ] {
            assert!(EndpointPassword::new(bad).is_err(), "{bad:?} accepted");
        }
        // A password is never a start argument (the command line is world-readable).
        let err =
            StartArgs::parse(&[r#"{"password":"abcdefghijklmnopqrstuv"}"#.into()]).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let c = Credentials {
            user: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(serde_json::to_string(&c).unwrap().contains("hunter2"));
    }

    #[test]
    fn network_round_trip() {
        for n in Network::ALL {
            assert_eq!(n.as_str().parse::<Network>().unwrap(), n);
        }
        assert!("goerli".parse::<Network>().is_err());
    }

    #[test]
    fn holesky_is_refused_with_the_reason() {
        let err = StartArgs::parse(&[r#"{"network":"holesky"}"#.into()]).unwrap_err();
        assert!(err.to_string().contains("holesky was shut down"), "{err}");
        let err = "holesky".parse::<Network>().unwrap_err();
        assert!(err.to_string().contains("hoodi or sepolia"), "{err}");
        assert!(!Network::ALL.iter().any(|n| n.as_str() == "holesky"));
    }

    #[test]
    fn prune_modes_round_trip() {
        for p in Prune::ALL {
            assert_eq!(p.as_str().parse::<Prune>().unwrap(), p);
        }
        assert_eq!("blocks".parse::<Prune>().unwrap(), Prune::Blocks);
    }
}
