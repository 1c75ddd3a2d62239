//! Who may create a node, decided in one place before `POST /nodes` stores anything: the
//! admission policy (`open`, or an allow-list of addresses), then the backend's own limits for
//! the user (where nodes cost money: the per-user and server-wide spend caps, through
//! [`Backend::admit`](crate::backend::Backend::admit)). The per-user node cap is not here: it is
//! checked atomically with the insert (`Store::insert_node_capped`).
//!
//! Spend caps (issue 13) plug in there: their figures belong to the paying backend's config
//! (`GolemConfig`: a per-user and a server-wide cap per period, in GLM as decimals) and their
//! check to `GolemBackend::admit`, refusing with the reason the user sees.

use axum::http::StatusCode;

use crate::security::{admits, not_admitted};
use crate::{ApiError, AppState};

pub(crate) async fn admit_create(state: &AppState, owner: &str) -> Result<(), ApiError> {
    if !admits(&state.config.admission, owner) {
        return Err(not_admitted());
    }
    if let Some(backend) = &state.backend {
        backend.admit(owner).await.map_err(|reason| {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "spend_cap_reached", reason)
        })?;
    }
    Ok(())
}
