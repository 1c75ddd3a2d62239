//! Where nodes run. `local`: this machine is the provider (the server spawns `ya-runtime-erigon`
//! per node, speaking the runtime API as an exe-unit does). `golem`: providers on the Golem market
//! run them, through the requestor's yagna.

use erigolem_engine::DiskEstimate;
use erigolem_primitives::{EngineKind, Mode, Network, NodeStatus, Prune, StartArgs};
use serde::Serialize;

pub mod golem;
pub mod local;

/// A network this backend can serve, and how.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NetworkOffer {
    #[schema(value_type = String)]
    pub network: Network,
    #[schema(value_type = Vec<String>)]
    pub modes: Vec<Mode>,
    #[schema(value_type = String)]
    pub engine: EngineKind,
    /// What providers ask (golem backend only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<PriceRange>,
    /// Prune modes a node of this network can have (none for the dev chain).
    #[schema(value_type = Vec<String>)]
    pub prunes: Vec<Prune>,
    /// The engine's release, where the backend knows it (the local backend asks the binary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
    /// Disk one node takes, per prune mode: Erigon's published figures
    /// (`{prune, bytes, basis: measured|at_most, source}`).
    #[schema(value_type = Vec<Object>)]
    pub disk: Vec<DiskEstimate>,
}

impl NetworkOffer {
    /// `network` in `modes`, with every prune mode of its engine and their disk estimates.
    pub fn new(network: Network, modes: Vec<Mode>) -> Self {
        let engine = erigolem_engine::engine_for(network);
        let prunes = match engine {
            EngineKind::Erigon => Prune::ALL.to_vec(),
            EngineKind::Anvil => Vec::new(),
        };
        Self {
            network,
            modes,
            engine,
            price: None,
            engine_version: None,
            disk: Vec::new(),
            prunes: Vec::new(),
        }
        .with_prunes(prunes)
    }

    /// Only these prune modes (and their disk estimates).
    pub fn with_prunes(mut self, prunes: Vec<Prune>) -> Self {
        self.disk = prunes
            .iter()
            .filter_map(|p| erigolem_engine::disk_estimate(self.network, *p))
            .collect();
        self.prunes = prunes;
        self
    }
}

/// The price range of the offers for a network on the market.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PriceRange {
    pub min_per_hour: f64,
    pub max_per_hour: f64,
    pub currency: String,
    pub providers: usize,
}

/// What a node on Golem costs: the agreed price, what was paid, and how long the budget lasts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Billing {
    pub provider_id: String,
    pub provider_name: Option<String>,
    pub agreement_id: String,
    pub price_per_hour: f64,
    pub start_fee: f64,
    /// GLM accepted so far.
    pub spent: f64,
    pub budget: f64,
    /// Seconds the rest of the budget pays for, while the node runs.
    pub runway_secs: Option<u64>,
    /// The final invoice was accepted.
    pub settled: bool,
    /// The last payment request above the agreed terms, refused (not paid), and why.
    pub refused: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The node could not be started; the text is for the user.
    #[error("{0}")]
    Start(String),
    /// The node's endpoint is still held by a runtime that is ending (e.g. the one of a server that
    /// just died): try again shortly.
    #[error("the node's previous runtime is still shutting down")]
    InstanceBusy,
    #[error("node {0} is not running on this backend")]
    Unknown(String),
    #[error("{0}")]
    Other(String),
}

/// What the user asked for a node beyond its network: on backends that pay for nodes, its budget
/// and price cap; and whether a failed node is replaced. Kept in the node's `backend_ref`.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, Serialize, utoipa::ToSchema)]
pub struct NodeTerms {
    /// GLM set aside for this node (at most the server's budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<f64>,
    /// Providers asking more GLM per hour are not taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price_per_hour: Option<f64>,
    /// A node that fails while running is replaced by a new one (same name and network).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_replace: bool,
}

impl NodeTerms {
    pub fn from_backend_ref(value: Option<&serde_json::Value>) -> Self {
        value
            .and_then(|v| v.get("terms"))
            .and_then(|t| serde_json::from_value(t.clone()).ok())
            .unwrap_or_default()
    }

    pub fn to_backend_ref(&self) -> serde_json::Value {
        serde_json::json!({ "terms": self })
    }
}

#[async_trait::async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// The networks (and modes) nodes can be started for.
    fn networks(&self) -> Vec<NetworkOffer>;
    /// Starts the node with id `node_id`; returns its STATUS once it answers.
    async fn start(
        &self,
        node_id: &str,
        args: StartArgs,
        terms: &NodeTerms,
    ) -> Result<NodeStatus, BackendError>;
    async fn status(&self, node_id: &str) -> Result<NodeStatus, BackendError>;
    /// Stops the node: credentials revoked, endpoint removed, node process gone.
    async fn stop(&self, node_id: &str) -> Result<(), BackendError>;
    /// Replaces the node's password; the old one stops working at once.
    async fn rotate(&self, node_id: &str)
        -> Result<erigolem_primitives::Credentials, BackendError>;
    /// Price and spend of a node, where the backend pays for nodes.
    fn billing(&self, _node_id: &str) -> Option<Billing> {
        None
    }
    /// Whether a node may be asked for on a network `networks()` does not list now (the market
    /// changes: the backend looks for providers when the node starts).
    fn accepts_any_network(&self) -> bool {
        false
    }
    /// Whether nodes cost money here (budgets and price caps apply).
    fn pays(&self) -> bool {
        false
    }
    /// Running nodes that must end now, and why (e.g. their budget is used up).
    fn ending(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}
