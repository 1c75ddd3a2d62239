//! Where nodes run. `local`: this machine is the provider (the server spawns `ya-runtime-erigon`
//! per node, speaking the runtime API as an exe-unit does). The `golem` backend will implement the
//! same trait over the Golem market.

use erigolem_primitives::{EngineKind, Mode, Network, NodeStatus, StartArgs};
use serde::Serialize;

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

#[async_trait::async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// The networks (and modes) nodes can be started for.
    fn networks(&self) -> Vec<NetworkOffer>;
    /// Starts the node with id `node_id`; returns its STATUS once it answers.
    async fn start(&self, node_id: &str, args: StartArgs) -> Result<NodeStatus, BackendError>;
    async fn status(&self, node_id: &str) -> Result<NodeStatus, BackendError>;
    /// Stops the node: credentials revoked, endpoint removed, node process gone.
    async fn stop(&self, node_id: &str) -> Result<(), BackendError>;
    /// Replaces the node's password; the old one stops working at once.
    async fn rotate(&self, node_id: &str)
        -> Result<erigolem_primitives::Credentials, BackendError>;
}
