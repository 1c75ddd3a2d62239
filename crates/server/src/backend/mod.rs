//! Where nodes run. `local`: this machine is the provider (the server spawns `ya-runtime-erigon`
//! per node, speaking the runtime API as an exe-unit does). `golem`: providers on the Golem market
//! run them, through the requestor's yagna. Backends carry out what the lifecycle core
//! (`erigolem-lifecycle`) decides: start, poll, stop; and on Golem, accept or refuse payment
//! documents. They decide nothing about money or states themselves.

use erigolem_engine::{DiskBasis, DiskEstimate};
use erigolem_lifecycle::{Caps, DocumentKind, Expected, Glm};
use erigolem_primitives::{EngineKind, Mode, Network, NodeStatus, Prune, StartArgs};

pub mod golem;
pub mod local;

pub use erigolem_api::{NetworkOffer, PriceRange};

/// `network` in `modes`, with every prune mode of its engine and their disk estimates.
pub fn network_offer(network: Network, modes: Vec<Mode>) -> NetworkOffer {
    let engine = erigolem_engine::engine_for(network);
    let prunes = match engine {
        EngineKind::Erigon => Prune::ALL.to_vec(),
        EngineKind::Anvil => Vec::new(),
    };
    with_prunes(
        NetworkOffer {
            network,
            modes,
            engine,
            price: None,
            engine_version: None,
            disk: Vec::new(),
            prunes: Vec::new(),
        },
        prunes,
    )
}

/// The offer with only these prune modes (and their disk estimates).
pub fn with_prunes(mut offer: NetworkOffer, prunes: Vec<Prune>) -> NetworkOffer {
    offer.disk = prunes
        .iter()
        .filter_map(|p| erigolem_engine::disk_estimate(offer.network, *p))
        .map(disk_view)
        .collect();
    offer.prunes = prunes;
    offer
}

fn disk_view(d: DiskEstimate) -> erigolem_api::DiskEstimate {
    erigolem_api::DiskEstimate {
        prune: d.prune,
        bytes: d.bytes,
        basis: match d.basis {
            DiskBasis::Measured => erigolem_api::DiskBasis::Measured,
            DiskBasis::AtMost => erigolem_api::DiskBasis::AtMost,
        },
        source: d.source.to_owned(),
    }
}

/// Why a backend could not do what it was asked. Matched by variant, never by text.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The node could not be started; the text is for the user.
    #[error("{0}")]
    Start(String),
    /// The node's endpoint is still held by a runtime that is ending (e.g. the one of a server that
    /// just died): try again shortly.
    #[error("the node's previous runtime is still shutting down")]
    InstanceBusy,
    /// The backend holds nothing for this node (never started here, or stopped already).
    #[error("node {0} is not running on this backend")]
    Unknown(String),
    /// The provider (or the runtime) did not answer in time.
    #[error("no answer within {0} s")]
    Timeout(u64),
    /// The requestor's yagna or the runtime answered with an error.
    #[error("{0}")]
    Other(String),
}

/// What a start may spend and accept, computed by the reconciler from the node's plan and the
/// server's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartTerms {
    /// The node's plan (budget, caps, replacements): its first node's id.
    pub plan_id: String,
    pub owner: String,
    /// GLM the plan may still spend; `None` where nodes are free.
    pub budget_left: Option<Glm>,
    /// The server's caps tightened by the user's.
    pub caps: Caps,
    pub expected: Option<Expected>,
    /// Providers this plan had already (never taken again).
    pub excluded_providers: Vec<String>,
}

/// A debit note or invoice the requestor received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentDocument {
    pub id: String,
    pub kind: DocumentKind,
    pub agreement_id: String,
    /// What it asks, as received.
    pub amount_text: String,
    /// Parsed strictly: `Err` explains why it is not an amount of GLM.
    pub amount: Result<Glm, String>,
}

/// The money side of a paying backend: documents come in, each is accepted or refused once (the
/// payment loop decides with the lifecycle core and records it in the store first).
#[async_trait::async_trait]
pub trait Payer: Send + Sync + std::fmt::Debug {
    /// Documents received after `since`; waits a little for new ones. `since` moves past the last
    /// one's time.
    async fn documents(&self, since: &mut Cursor) -> Result<Vec<PaymentDocument>, BackendError>;
    /// Accepts it in full (yagna accepts only the whole amount) against `allocation_id`.
    async fn accept(
        &self,
        document: &PaymentDocument,
        allocation_id: &str,
    ) -> Result<(), BackendError>;
    /// Refuses it with `reason` (where the protocol can; else it stays unaccepted, so unpaid).
    async fn refuse(&self, document: &PaymentDocument, reason: &str) -> Result<(), BackendError>;
    /// The agreement was paid in full: its budget set-aside is released.
    async fn release(&self, allocation_id: &str);
}

/// Where the payment loop has read up to, per kind of document (unix microseconds; an event is
/// read once its time is passed, so the cursor moves to just after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub debit_notes: i64,
    pub invoices: i64,
}

#[async_trait::async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// The networks (and modes) nodes can be started for.
    fn networks(&self) -> Vec<NetworkOffer>;
    /// Starts the node with id `node_id`; returns its first STATUS once it answers.
    async fn start(
        &self,
        node_id: &str,
        args: StartArgs,
        terms: &StartTerms,
    ) -> Result<NodeStatus, BackendError>;
    /// Picks a node up again after a server restart (same endpoint, same credentials).
    async fn resume(&self, node_id: &str, args: StartArgs) -> Result<NodeStatus, BackendError>;
    async fn status(&self, node_id: &str) -> Result<NodeStatus, BackendError>;
    /// Stops the node: credentials revoked, endpoint removed, node process gone; on Golem the
    /// activity destroyed and the agreement terminated. [`BackendError::Unknown`] when it holds
    /// nothing for the node.
    async fn stop(&self, node_id: &str) -> Result<(), BackendError>;
    /// Whether it still holds something for the node (a runtime, an open agreement).
    async fn holds(&self, node_id: &str) -> bool;
    /// Replaces the node's password; the old one stops working at once.
    async fn rotate(&self, node_id: &str)
        -> Result<erigolem_primitives::Credentials, BackendError>;
    /// The last `lines` lines of the node's log (the runtime's `LOGS`), as the runtime gives them.
    async fn logs(&self, node_id: &str, _lines: usize) -> Result<String, BackendError> {
        Err(BackendError::Other(format!(
            "node {node_id}: this backend does not read logs"
        )))
    }
    /// Sets a running node's password back to `password` (after a restart of the server, the
    /// credentials its owner has). Passed over the runtime API, never on a command line.
    async fn restore_password(
        &self,
        node_id: &str,
        _password: erigolem_primitives::EndpointPassword,
    ) -> Result<(), BackendError> {
        Err(BackendError::Other(format!(
            "node {node_id}: this backend does not restore passwords"
        )))
    }
    /// Whether a node may be asked for on a network `networks()` does not list now (the market
    /// changes: the backend looks for providers when the node starts).
    fn accepts_any_network(&self) -> bool {
        false
    }
    /// The money side, where nodes cost money (budgets and caps apply).
    fn payer(&self) -> Option<&dyn Payer> {
        None
    }
}
