//! `GET /api/v1/billing`: what nodes may cost on this server (defaults and caps) and what the
//! caller spent this period, where nodes are paid for.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use erigolem_lifecycle::Glm;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::AuthUser;
use crate::{ApiError, AppState};

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new().route("/billing", get(billing))
}

/// GLM amounts are decimal strings.
#[derive(Serialize, ToSchema)]
pub(crate) struct BillingTerms {
    /// Whether nodes are paid for here (the golem backend); the rest only then.
    pays: bool,
    currency: &'static str,
    /// Per node (shared with its replacements): the default and the most one may ask for.
    #[schema(value_type = String)]
    budget: Glm,
    #[schema(value_type = Option<String>)]
    max_price_per_hour: Option<Glm>,
    #[schema(value_type = Option<String>)]
    max_start_fee: Option<Glm>,
    #[schema(value_type = Option<String>)]
    max_price_per_request: Option<Glm>,
    /// Offers are compared on their cost for this long (unless a node says otherwise).
    expected_hours: u32,
    expected_requests_per_hour: u64,
    /// Fixed GLM allowed above start fee + price × time served.
    #[schema(value_type = String)]
    payment_slack: Glm,
    max_replacements: u32,
    /// The spend caps' period, and when the current one started (unix ms).
    spend_period_secs: u64,
    period_started_at: i64,
    you: Spend,
    server: Spend,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Spend {
    /// GLM accepted this period (for the server: only whether the cap is reached is shown).
    #[schema(value_type = Option<String>)]
    spent: Option<Glm>,
    #[schema(value_type = Option<String>)]
    cap: Option<Glm>,
    reached: bool,
}

/// The money terms of this server and the caller's spend this period.
#[utoipa::path(get, path = "/api/v1/billing", tag = "nodes", responses((status = 200, body = BillingTerms), (status = 401, body = super::ErrorBody)))]
pub(crate) async fn billing(
    State(state): State<Arc<AppState>>,
    user: AuthUser,
) -> Result<Json<BillingTerms>, ApiError> {
    let policy = &state.config.payments;
    let now = erigolem_store::now_ms();
    let (mine, server) = policy.ledgers(&state.store, &user.address, now).await?;
    let reached = |l: &erigolem_lifecycle::Ledger| l.cap.as_ref().is_some_and(|c| &l.spent >= c);
    Ok(Json(BillingTerms {
        pays: state.backend.as_ref().is_some_and(|b| b.payer().is_some()),
        currency: "GLM",
        budget: policy.budget.clone(),
        max_price_per_hour: policy.caps.max_price_per_hour.clone(),
        max_start_fee: policy.caps.max_start_fee.clone(),
        max_price_per_request: policy.caps.max_price_per_request.clone(),
        expected_hours: policy.expected.hours,
        expected_requests_per_hour: policy.expected.requests_per_hour,
        payment_slack: policy.slack.clone(),
        max_replacements: policy.max_replacements,
        spend_period_secs: policy.spend_period.as_secs(),
        period_started_at: policy.period_start(now),
        you: Spend {
            reached: reached(&mine),
            spent: Some(mine.spent),
            cap: mine.cap,
        },
        server: Spend {
            reached: reached(&server),
            spent: None,
            cap: server.cap,
        },
    }))
}
