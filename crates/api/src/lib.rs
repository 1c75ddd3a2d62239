//! The REST API's contract (`/api/v1`): every request and response body, server-sent event and
//! error code, used as they are by the server (which derives its OpenAPI document from them) and
//! by the Rust client; the web UI's TypeScript types are generated from that document
//! (`scripts/api-types.sh`). Change a shape here and both sides change with it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use erigolem_lifecycle::{Glm, NodeState};
pub use erigolem_primitives::{
    EndpointLimits, EngineKind, Mode, Network, Prune, RpcLimits, SyncProgress, SyncStage,
};

mod alerts;
mod error;
mod usage;
pub use alerts::{
    Alert, AlertRules, AlertType, DeliveryState, NodeAlerts, SetWebhook, Webhook, WebhookDelivery,
    WebhookEvent, WebhookEventType,
};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use usage::{NodeUsage, UsageDelta, UsagePoint, UsageTotals, UsageWindow};

/// `GET /auth/nonce`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NonceResponse {
    pub nonce: String,
    /// Unix milliseconds after which the nonce is refused.
    pub expires_at: i64,
}

/// `POST /auth/login`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The EIP-4361 message, exactly as signed.
    pub message: String,
    /// The EIP-191 `personal_sign` signature, 0x-prefixed hex.
    pub signature: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    pub address: String,
    /// For the CLI: send as `Authorization: Bearer <token>`. Browsers use the cookie.
    pub token: String,
    pub expires_at: i64,
}

/// `GET /me`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MeResponse {
    pub address: String,
}

/// What one disk estimate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiskBasis {
    /// Erigon measured a synced node of this network and mode.
    Measured,
    /// Not measured by Erigon; at most this much.
    AtMost,
}

/// Disk one node of a network takes in one prune mode (Erigon's published figures).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiskEstimate {
    pub prune: Prune,
    /// Bytes (decimal units, as Erigon publishes them).
    pub bytes: u64,
    pub basis: DiskBasis,
    /// Where the figure comes from.
    pub source: String,
}

/// The price range of the offers for a network on the market.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PriceRange {
    pub min_per_hour: Glm,
    pub max_per_hour: Glm,
    /// The lowest start fee among them.
    pub min_start_fee: Glm,
    pub currency: String,
    pub providers: usize,
}

/// A network nodes can be started for here, and how (`GET /networks`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NetworkOffer {
    pub network: Network,
    pub modes: Vec<Mode>,
    pub engine: EngineKind,
    /// What providers ask (golem backend only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<PriceRange>,
    /// Prune modes a node of this network can have (none for the dev chain).
    #[serde(default)]
    pub prunes: Vec<Prune>,
    /// The engine's release, where the backend knows it (the local backend asks the binary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
    /// Disk one node takes, per prune mode.
    #[serde(default)]
    pub disk: Vec<DiskEstimate>,
}

/// The endpoint's HTTP basic-auth credentials.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

/// What a node on Golem costs: the agreed price, what was paid, and how long the budget lasts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Billing {
    pub provider_id: String,
    /// What the provider calls itself: shown, never trusted (allow/deny lists use node ids).
    #[schema(required)]
    pub provider_name: Option<String>,
    pub agreement_id: String,
    pub price_per_hour: Glm,
    pub start_fee: Glm,
    #[schema(required)]
    pub price_per_request: Option<Glm>,
    /// GLM accepted on this node's agreements.
    pub spent: Glm,
    /// GLM accepted on the node and its replacements: what counts against the budget.
    pub budget_spent: Glm,
    /// The budget of the node and its replacements.
    pub budget: Glm,
    /// The most its current agreement may be paid now: start fee + price × time served + slack.
    pub payable: Glm,
    /// Seconds of service so far (from the first answer to the stop or failure).
    pub served_secs: u64,
    /// Seconds the rest of the budget pays for, while the node runs.
    #[schema(required)]
    pub runway_secs: Option<u64>,
    /// The final invoice was accepted.
    pub settled: bool,
    /// The last payment request refused (not paid), and why.
    #[schema(required)]
    pub refused: Option<String>,
}

/// A node as its owner sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Node {
    pub id: String,
    pub name: String,
    /// One of [`Network`]'s names; or a network no longer served (`holesky`) for a node stored
    /// before it was retired (such a node fails with why, and is still listed).
    #[schema(example = "dev")]
    pub network: String,
    /// The engine the backend serves the network with (`anvil` for the dev chain).
    #[schema(required)]
    pub engine: Option<EngineKind>,
    pub mode: Mode,
    pub prune: Prune,
    pub state: NodeState,
    #[schema(required)]
    pub reason: Option<String>,
    #[schema(required)]
    pub url: Option<String>,
    #[schema(required)]
    pub ws_url: Option<String>,
    #[schema(required)]
    pub auth: Option<Credentials>,
    /// Price, spend and budget of a node on Golem.
    #[schema(required)]
    pub billing: Option<Billing>,
    /// The backend still holds something for the node (an open agreement, a runtime): a failed
    /// node that holds one can be stopped to end it.
    #[serde(default)]
    #[schema(required)]
    pub held: bool,
    /// The failed node this one replaced, and the node that replaced this one.
    #[schema(required)]
    pub replaces: Option<String>,
    #[schema(required)]
    pub replaced_by: Option<String>,
    /// Set while a running node's STATUS polls fail (it is failed after 3), with why.
    #[schema(required)]
    pub health: Option<String>,
    /// The engine's release the node runs (e.g. Erigon `3.6.1`), from its last STATUS.
    #[schema(required)]
    pub engine_version: Option<String>,
    /// The JSON-RPC limits the node enforces (`null` fields: none in its release).
    #[schema(required)]
    pub limits: Option<RpcLimits>,
    /// The limits its endpoint enforces per call (rate, concurrency, body and batch size), from
    /// its last STATUS while it runs.
    #[serde(default)]
    #[schema(required)]
    pub endpoint_limits: Option<EndpointLimits>,
    /// The only JSON-RPC methods its endpoint serves (names or `namespace_*`), as asked at
    /// create time; `null`: whatever the provider allows.
    #[serde(default)]
    #[schema(required)]
    pub methods: Option<Vec<String>>,
    /// The only browser origins (`Origin` header) its endpoint serves; `null`: any.
    #[serde(default)]
    #[schema(required)]
    pub allow_origins: Option<Vec<String>>,
    /// The only client addresses (IPs, CIDR blocks) its endpoint serves; `null`: any.
    #[serde(default)]
    #[schema(required)]
    pub allow_ips: Option<Vec<String>>,
    /// What the operator's runtime warns about (e.g. an Erigon newer than it knows).
    #[serde(default)]
    #[schema(required)]
    pub warnings: Vec<String>,
    #[schema(required)]
    pub peers: Option<u64>,
    /// Age of the node's head block in seconds.
    #[schema(required)]
    pub behind_seconds: Option<u64>,
    /// Blocks between the node's head and the network's, while it syncs.
    #[schema(required)]
    pub behind_blocks: Option<u64>,
    /// More than the server's thresholds behind (`--lag-blocks`, `--lag-seconds`).
    #[serde(default)]
    #[schema(required)]
    pub lagging: bool,
    #[schema(required)]
    pub block: Option<i64>,
    #[schema(required)]
    pub sync: Option<SyncProgress>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
    #[schema(required)]
    pub stopped_at: Option<i64>,
    /// The node's active alerts (`GET /nodes/{id}/alerts` has the rules and the recent ones).
    #[serde(default)]
    #[schema(required)]
    pub alerts: Vec<Alert>,
}

/// `POST /nodes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNode {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[schema(example = "dev")]
    pub network: Network,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<Prune>,
    /// Where nodes are paid for (golem): GLM for the node and its replacements (at most the
    /// server's budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Glm>,
    /// Where nodes are paid for: the highest price per hour to accept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price_per_hour: Option<Glm>,
    /// Where nodes are paid for: the highest start fee to accept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_start_fee: Option<Glm>,
    /// Where nodes are paid for: how many hours the node will run, which offers are compared on
    /// (start fee + price × hours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_hours: Option<u32>,
    /// Replace the node with a new one (same name and network, another provider, the same budget)
    /// if it fails while running; at most the server's number of replacements.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_replace: bool,
    /// The node's alert rules (default: [`AlertRules::default`]); changeable later with
    /// `PUT /nodes/{id}/alerts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<AlertRules>,
    /// Serve only these JSON-RPC methods: names (`eth_call`) or namespaces (`eth_*`), 1-100 of
    /// them; the provider's deny list applies either way. Absent: whatever the provider allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = json!(["eth_*", "net_version"]))]
    pub methods: Option<Vec<String>>,
    /// Serve only requests with one of these `Origin`s: `scheme://host[:port]`, or
    /// `https://*.example.org` for every subdomain, 1-100 of them; requests without an `Origin`
    /// are refused too. Absent: any origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = json!(["https://app.example.org"]))]
    pub allow_origins: Option<Vec<String>>,
    /// Serve only clients at these addresses: IPs or CIDR blocks (IPv4 or IPv6), 1-100 of them,
    /// as the provider's Nginx sees them. Absent: any address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = json!(["203.0.113.7", "10.0.0.0/8"]))]
    pub allow_ips: Option<Vec<String>>,
}

impl CreateNode {
    /// A node of `network` with the server's defaults for the rest.
    pub fn new(network: Network) -> Self {
        Self {
            name: None,
            network,
            mode: None,
            prune: None,
            budget: None,
            max_price_per_hour: None,
            max_start_fee: None,
            expected_hours: None,
            auto_replace: false,
            alerts: None,
            methods: None,
            allow_origins: None,
            allow_ips: None,
        }
    }
}

/// A spend and its cap over the current period.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Spend {
    /// GLM accepted this period (for the server: only whether the cap is reached is shown).
    #[schema(required)]
    pub spent: Option<Glm>,
    #[schema(required)]
    pub cap: Option<Glm>,
    pub reached: bool,
}

/// `GET /billing`: what nodes may cost here, and what the caller spent this period.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BillingTerms {
    /// Whether nodes are paid for here (the golem backend); the rest only then.
    pub pays: bool,
    pub currency: String,
    /// Per node (shared with its replacements): the default and the most one may ask for.
    pub budget: Glm,
    #[schema(required)]
    pub max_price_per_hour: Option<Glm>,
    #[schema(required)]
    pub max_start_fee: Option<Glm>,
    #[schema(required)]
    pub max_price_per_request: Option<Glm>,
    /// Offers are compared on their cost for this long (unless a node says otherwise).
    pub expected_hours: u32,
    pub expected_requests_per_hour: u64,
    /// Fixed GLM allowed above start fee + price × time served.
    pub payment_slack: Glm,
    pub max_replacements: u32,
    /// The spend caps' period, and when the current one started (unix ms).
    pub spend_period_secs: u64,
    pub period_started_at: i64,
    pub you: Spend,
    pub server: Spend,
}

/// `event: transition` on `GET /events`: a node entered `state` (the SSE id is `id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TransitionEvent {
    pub id: i64,
    pub node_id: String,
    pub state: NodeState,
    #[schema(required)]
    pub reason: Option<String>,
    /// Unix milliseconds.
    pub at: i64,
}

/// `event: progress` on `GET /events`: a running node's latest poll (no SSE id: not replayed,
/// the next one supersedes it).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProgressEvent {
    pub node_id: String,
    #[schema(required)]
    pub block: Option<i64>,
    #[schema(required)]
    pub sync: Option<SyncProgress>,
    /// Why the node is unhealthy (its STATUS polls fail), or null when it answers.
    #[schema(required)]
    pub health: Option<String>,
    /// Age of the node's head block in seconds.
    #[schema(required)]
    pub behind_seconds: Option<u64>,
    /// Blocks between the node's head and the network's (while it syncs).
    #[schema(required)]
    pub behind_blocks: Option<u64>,
    #[schema(required)]
    pub peers: Option<u64>,
    /// More than the server's thresholds behind (`--lag-blocks`, `--lag-seconds`).
    #[serde(default)]
    #[schema(required)]
    pub lagging: bool,
    /// What the endpoint served since the previous poll (null before the first, or when the
    /// runtime reports no usage).
    #[serde(default)]
    #[schema(required)]
    pub usage: Option<UsageDelta>,
    /// The node's active alerts as of this poll.
    #[serde(default)]
    #[schema(required)]
    pub alerts: Vec<Alert>,
    /// Unix milliseconds.
    pub at: i64,
}

/// One server-sent event of `GET /events`: the SSE `event:` field is the tag, `data:` the body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum NodeEvent {
    Transition(TransitionEvent),
    Progress(Box<ProgressEvent>),
}

impl NodeEvent {
    /// The SSE `event:` name.
    pub fn name(&self) -> &'static str {
        match self {
            NodeEvent::Transition(_) => "transition",
            NodeEvent::Progress(_) => "progress",
        }
    }
}

/// Keeps the map type one name in the document.
pub type MethodCounts = BTreeMap<String, u64>;

/// `GET /nodes/{id}/logs`: the node's last log lines, oldest first, secrets replaced by
/// `[redacted]`. With `follow=true` the answer is a server-sent event stream of
/// `event: lines`, each `data:` one of these with the lines new since the last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeLogs {
    pub node_id: String,
    pub lines: Vec<String>,
}
