//! Alerts of a node (`/nodes/{id}/alerts`) and the user's webhook they are delivered to
//! (`/me/webhook`, its deliveries).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use erigolem_lifecycle::alert::{AlertRules, AlertType};

/// One alert: fired at `fired_at`, active until `resolved_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    pub id: i64,
    pub node_id: String,
    pub kind: AlertType,
    pub message: String,
    /// Unix milliseconds.
    pub fired_at: i64,
    #[schema(required)]
    pub resolved_at: Option<i64>,
}

/// `GET`/`PUT /nodes/{id}/alerts`: the node's rules, its active alerts and the recent ones
/// (newest first, active ones included).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeAlerts {
    pub node_id: String,
    pub rules: AlertRules,
    pub active: Vec<Alert>,
    pub recent: Vec<Alert>,
}

/// `PUT /me/webhook`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetWebhook {
    /// `http(s)://…`, at most 2048 bytes, without credentials; public addresses only unless
    /// the operator allows private ones.
    pub url: String,
    /// A new signing secret even if the webhook has one (the old one stops working at once).
    #[serde(default)]
    pub rotate_secret: bool,
}

/// `GET /me/webhook` (and `PUT`'s answer).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Webhook {
    pub url: String,
    /// Only in the answer that created or rotated it: it is not shown again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub secret_rotated_at: i64,
}

/// What a delivery carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum WebhookEventType {
    #[serde(rename = "alert.fired")]
    AlertFired,
    #[serde(rename = "alert.resolved")]
    AlertResolved,
    #[serde(rename = "test")]
    Test,
}

impl WebhookEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEventType::AlertFired => "alert.fired",
            WebhookEventType::AlertResolved => "alert.resolved",
            WebhookEventType::Test => "test",
        }
    }
}

/// The JSON body POSTed to the webhook, signed in `X-Erigolem-Signature: t=<unix seconds>,v1=<hex
/// HMAC-SHA256 over "<t>.<body>" with the secret>`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookEvent {
    /// The delivery's id (also `X-Erigolem-Delivery`): the same on every retry.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: WebhookEventType,
    /// Unix milliseconds.
    pub created_at: i64,
    #[schema(required)]
    pub alert: Option<Alert>,
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its (next) attempt.
    Pending,
    Delivered,
    /// Every attempt failed (or the webhook was removed).
    GaveUp,
}

/// One delivery in `GET /me/webhook/deliveries` (newest first).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookDelivery {
    pub id: String,
    pub event: WebhookEventType,
    pub state: DeliveryState,
    pub attempts: u32,
    /// The last attempt's HTTP status, or why it got none.
    #[schema(required)]
    pub last_status: Option<u16>,
    #[schema(required)]
    pub last_error: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    #[schema(required)]
    pub next_attempt_at: Option<i64>,
    #[schema(required)]
    pub delivered_at: Option<i64>,
}
