//! Who may create a node, decided in one place before `POST /nodes` stores anything: the
//! admission policy (`open`, or an allow-list of addresses), then, where nodes cost money, the
//! per-user and server-wide spend caps of the period (`crate::money`: the server's
//! `PaymentPolicy` and the spend ledgers in the store). The per-user node cap is not here: it is
//! checked atomically with the insert (`Store::insert_node_capped`).

use axum::http::StatusCode;

use crate::security::{admits, not_admitted};
use crate::{ApiError, AppState};

pub(crate) async fn admit_create(state: &AppState, owner: &str) -> Result<(), ApiError> {
    if !admits(&state.config.admission, owner) {
        return Err(not_admitted());
    }
    if state.backend.as_ref().is_some_and(|b| b.payer().is_some()) {
        let (mine, server) = state
            .config
            .payments
            .ledgers(&state.store, owner, erigolem_store::now_ms())
            .await?;
        if let Some(why) = crate::money::cap_reached(&mine, &server) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                erigolem_api::ErrorCode::SpendCapReached,
                why,
            ));
        }
    }
    Ok(())
}
