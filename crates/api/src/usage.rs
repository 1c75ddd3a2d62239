//! What a node's endpoint served over time: `GET /nodes/{id}/usage?window=…` and the usage deltas
//! of `event: progress`. Counts come from the runtime's STATUS `usage` (the endpoint guard's
//! counters); latencies are the upper bounds of the guard's histogram buckets.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::MethodCounts;

/// How far back `GET /nodes/{id}/usage` looks; each window has its own step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum UsageWindow {
    /// The last hour, per minute.
    #[default]
    #[serde(rename = "1h")]
    Hour,
    /// The last 6 hours, per 5 minutes.
    #[serde(rename = "6h")]
    SixHours,
    /// The last 24 hours, per 15 minutes.
    #[serde(rename = "24h")]
    Day,
    /// The last 7 days, per hour.
    #[serde(rename = "7d")]
    Week,
}

impl UsageWindow {
    pub const ALL: [UsageWindow; 4] = [
        UsageWindow::Hour,
        UsageWindow::SixHours,
        UsageWindow::Day,
        UsageWindow::Week,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UsageWindow::Hour => "1h",
            UsageWindow::SixHours => "6h",
            UsageWindow::Day => "24h",
            UsageWindow::Week => "7d",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.as_str() == text)
    }

    /// The window's length in seconds.
    pub fn secs(self) -> u64 {
        match self {
            UsageWindow::Hour => 3_600,
            UsageWindow::SixHours => 6 * 3_600,
            UsageWindow::Day => 24 * 3_600,
            UsageWindow::Week => 7 * 24 * 3_600,
        }
    }

    /// The length of one point in seconds.
    pub fn step_secs(self) -> u64 {
        match self {
            UsageWindow::Hour => 60,
            UsageWindow::SixHours => 300,
            UsageWindow::Day => 900,
            UsageWindow::Week => 3_600,
        }
    }
}

/// What an endpoint served between two polls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageDelta {
    /// Seconds between the two polls.
    pub secs: u64,
    /// JSON-RPC calls answered.
    pub requests: u64,
    /// Calls answered with a JSON-RPC error, or not answered.
    pub errors: u64,
    /// Calls the endpoint refused (credentials, methods, limits, allowlists).
    pub refused: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// `requests` by method: the runtime's most frequent ones, and `other`.
    pub methods: MethodCounts,
    /// Median and 99th percentile latency (µs, a bucket's upper bound) of these calls.
    #[schema(required)]
    pub latency_p50_us: Option<u64>,
    #[schema(required)]
    pub latency_p99_us: Option<u64>,
}

/// One step of a usage window (the counts are sums over the step).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsagePoint {
    /// Start of the step, unix milliseconds.
    pub at: i64,
    pub requests: u64,
    pub errors: u64,
    pub refused: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub methods: MethodCounts,
    #[schema(required)]
    pub latency_p50_us: Option<u64>,
    #[schema(required)]
    pub latency_p99_us: Option<u64>,
    /// The node's height at the step's last sample, and the network's head then
    /// (height + blocks behind).
    #[schema(required)]
    pub block: Option<u64>,
    #[schema(required)]
    pub head: Option<u64>,
    /// The largest head-block age seen in the step, in seconds.
    #[schema(required)]
    pub behind_seconds: Option<u64>,
}

/// Sums over the whole window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageTotals {
    pub requests: u64,
    pub errors: u64,
    pub refused: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub methods: MethodCounts,
    #[schema(required)]
    pub latency_p50_us: Option<u64>,
    #[schema(required)]
    pub latency_p99_us: Option<u64>,
}

/// `GET /nodes/{id}/usage`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeUsage {
    pub node_id: String,
    pub window: UsageWindow,
    pub step_secs: u64,
    /// The window's bounds, unix milliseconds.
    pub from: i64,
    pub to: i64,
    pub totals: UsageTotals,
    /// Steps that saw a sample, oldest first (steps without one are left out).
    pub points: Vec<UsagePoint>,
}
