//! `GET /api/v1/billing`: what nodes may cost on this server (defaults and caps) and what the
//! caller spent this period, where nodes are paid for.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use erigolem_api::{BillingTerms, ErrorBody, Spend};

use super::auth::AuthUser;
use crate::{ApiError, AppState};

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new().route("/billing", get(billing))
}

/// The money terms of this server and the caller's spend this period.
#[utoipa::path(get, path = "/api/v1/billing", tag = "nodes", responses((status = 200, body = BillingTerms), (status = 401, body = ErrorBody)))]
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
        currency: "GLM".to_owned(),
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
