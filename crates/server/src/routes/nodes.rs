//! Nodes of the signed-in user: create, list, show, stop, delete; and the networks on offer.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use erigolem_api::{CreateNode, Credentials, ErrorBody, ErrorCode, Node as NodeView};
use erigolem_primitives::Mode;
use erigolem_store::{NewNode, NodeRecord, NodeState};

use erigolem_lifecycle::{Conflict, Event};

use super::auth::AuthUser;
use crate::backend::NetworkOffer;
use crate::reconciler::{self, Handled};
use crate::{ApiError, AppState};

/// Longest node name accepted.
const MAX_NAME_CHARS: usize = 64;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/networks", get(networks))
        .route("/nodes", get(list).post(create))
        .route("/nodes/{id}", get(show).delete(remove))
        .route("/nodes/{id}/stop", post(stop))
        .route("/nodes/{id}/credentials/rotate", post(rotate))
}

/// The networks nodes can be started for.
#[utoipa::path(get, path = "/api/v1/networks", tag = "nodes", responses((status = 200, body = Vec<NetworkOffer>)))]
pub(crate) async fn networks(State(state): State<Arc<AppState>>) -> Json<Vec<NetworkOffer>> {
    Json(
        state
            .backend
            .as_ref()
            .map(|b| b.networks())
            .unwrap_or_default(),
    )
}

async fn view(state: &AppState, node: NodeRecord, owner: &str) -> Result<NodeView, ApiError> {
    // Credentials only while the endpoint exists, and only ever to the owner (queries are owner-scoped).
    let auth = match (&node.username, node.state) {
        (Some(user), NodeState::Running | NodeState::Starting) => state
            .store
            .password(&node.id, owner)
            .await?
            .map(|password| Credentials {
                user: user.clone(),
                password,
            }),
        _ => None,
    };
    let live = matches!(node.state, NodeState::Running | NodeState::Starting);
    let engine = state.backend.as_ref().and_then(|b| {
        b.networks()
            .into_iter()
            .find(|o| o.network.to_string() == node.network)
            .map(|o| o.engine)
    });
    let held = match &state.backend {
        Some(b) => b.holds(&node.id).await,
        None => false,
    };
    let billing = match (
        &node.plan_id,
        state.backend.as_ref().and_then(|b| b.payer()),
    ) {
        (Some(plan_id), Some(_)) => match state.store.plan(plan_id).await? {
            Some(plan) => crate::money::billing(
                &state.store.node_deals(&node.id).await?,
                &plan,
                node.state == NodeState::Running,
                &state.config.payments.slack,
                erigolem_store::now_ms(),
            ),
            None => None,
        },
        _ => None,
    };
    let replaced_by = match node.state {
        NodeState::Failed => state.store.replacement_of(&node.id).await?,
        _ => None,
    };
    let health = state.health(&node.id).filter(|_| live);
    let status = state
        .live(&node.id)
        .filter(|_| node.state == NodeState::Running)
        .unwrap_or_default();
    let stored = |what: &str, text: &str| {
        ApiError::internal(format!("node {}: stored {what} {text:?} unknown", node.id))
    };
    let network = node
        .network
        .parse()
        .map_err(|_| stored("network", &node.network))?;
    let mode = node.mode.parse().map_err(|_| stored("mode", &node.mode))?;
    let prune = node
        .prune
        .parse()
        .map_err(|_| stored("prune", &node.prune))?;
    // Written from STATUS as a SyncProgress; anything else is shown as no progress.
    let sync = node.sync.and_then(|v| serde_json::from_value(v).ok());
    Ok(NodeView {
        id: node.id,
        name: node.name,
        network,
        engine,
        mode,
        prune,
        state: node.state,
        reason: node.reason,
        url: node.url.filter(|_| live),
        ws_url: node.ws_url.filter(|_| live),
        auth,
        billing,
        held,
        replaces: node.replaces,
        replaced_by,
        health,
        engine_version: status.engine_version,
        limits: status.limits,
        warnings: status.warnings,
        peers: status.peers,
        behind_seconds: status.behind_seconds,
        behind_blocks: status.behind_blocks,
        lagging: status.lagging,
        block: node.block,
        sync,
        created_at: node.created_at,
        updated_at: node.updated_at,
        stopped_at: node.stopped_at,
    })
}

/// Starts a node; it is `pending` at once and moves on in the background (watch `GET /nodes/{id}`).
#[utoipa::path(post, path = "/api/v1/nodes", tag = "nodes", request_body = CreateNode,
    responses((status = 201, body = NodeView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    user: AuthUser,
    body: Result<Json<CreateNode>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(body) = body?;
    crate::admission::admit_create(&state, &user.address).await?;
    let name = match body.name {
        Some(name) => {
            let name = name.trim().to_owned();
            if name.is_empty()
                || name.chars().count() > MAX_NAME_CHARS
                || name.chars().any(char::is_control)
            {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidName,
                    format!("a name has 1-{MAX_NAME_CHARS} characters and no control characters"),
                ));
            }
            name
        }
        None => format!("{}-node", body.network),
    };
    let offers = state
        .backend
        .as_ref()
        .map(|b| b.networks())
        .unwrap_or_default();
    let any = state
        .backend
        .as_ref()
        .is_some_and(|b| b.accepts_any_network());
    let fallback;
    let offer = match offers.iter().find(|o| o.network == body.network) {
        Some(offer) => Some(offer),
        // The market may have no offer for it right now: the node looks for one when it starts.
        None if any => {
            // A node of its own unless asked otherwise: every provider can start one.
            fallback =
                crate::backend::network_offer(body.network, vec![Mode::Dedicated, Mode::Shared]);
            Some(&fallback)
        }
        None => None,
    };
    let Some(offer) = offer else {
        let served: Vec<String> = offers.iter().map(|o| o.network.to_string()).collect();
        return Err(ApiError::bad_request(
            ErrorCode::UnsupportedNetwork,
            format!(
                "network {} is not offered here (offered: {})",
                body.network,
                served.join(", ")
            ),
        ));
    };
    let mode = match body.mode {
        Some(mode) if offer.modes.contains(&mode) => mode,
        Some(mode) => {
            return Err(ApiError::bad_request(
                ErrorCode::UnsupportedMode,
                format!("mode {mode} is not offered for {}", body.network),
            ))
        }
        None => offer.modes[0],
    };
    let prune = body.prune.unwrap_or_default();
    if !offer.prunes.is_empty() && !offer.prunes.contains(&prune) {
        let offered: Vec<&str> = offer.prunes.iter().map(|p| p.as_str()).collect();
        return Err(ApiError::bad_request(
            ErrorCode::UnsupportedPrune,
            format!(
                "prune mode {prune} is not offered for {} (offered: {})",
                body.network,
                offered.join(", ")
            ),
        ));
    }
    let policy = &state.config.payments;
    let pays = state.backend.as_ref().is_some_and(|b| b.payer().is_some());
    let asked = crate::money::AskedTerms {
        budget: body.budget,
        max_price_per_hour: body.max_price_per_hour,
        max_start_fee: body.max_start_fee,
        expected_hours: body.expected_hours,
        auto_replace: body.auto_replace,
    };
    let plan = policy.plan(pays, asked).map_err(|e| match e {
        crate::money::TermsError::NotSupported => {
            ApiError::bad_request(ErrorCode::NotSupported, e.to_string())
        }
        _ => ApiError::bad_request(ErrorCode::InvalidTerms, e.to_string()),
    })?;
    // (Spend caps were checked by `admission::admit_create`.) The per-user cap is checked in the same statement as the insert (see Store::insert_node_capped).
    let new = NewNode {
        owner: user.address.clone(),
        name,
        network: body.network.to_string(),
        mode: mode.to_string(),
        prune: prune.to_string(),
    };
    let (node, _) = match state
        .store
        .insert_node_with_plan(&new, &plan, Some(state.config.max_active_nodes))
        .await
    {
        Err(erigolem_store::StoreError::TooManyNodes { active, max }) => {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyNodes,
                format!("you have {active} active nodes; the limit is {max}"),
            ))
        }
        other => other?,
    };
    state.notify_owner(&node.owner);
    // Answered as created (`pending`); it moves on at once.
    reconciler::handle(&state, &node.id, Event::Created).await?;
    Ok((
        StatusCode::CREATED,
        Json(view(&state, node, &user.address).await?),
    ))
}

/// The caller's nodes, newest first.
#[utoipa::path(get, path = "/api/v1/nodes", tag = "nodes", responses((status = 200, body = Vec<NodeView>), (status = 401, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    user: AuthUser,
) -> Result<Json<Vec<NodeView>>, ApiError> {
    let mut out = Vec::new();
    for node in state.store.nodes(&user.address).await? {
        out.push(view(&state, node, &user.address).await?);
    }
    Ok(Json(out))
}

async fn owned(state: &AppState, id: &str, user: &AuthUser) -> Result<NodeRecord, ApiError> {
    state
        .store
        .node(id, &user.address)
        .await?
        .ok_or_else(not_found)
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such node")
}

/// One node of the caller (404 for anyone else's).
#[utoipa::path(get, path = "/api/v1/nodes/{id}", tag = "nodes", responses((status = 200, body = NodeView), (status = 404, body = ErrorBody)))]
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<NodeView>, ApiError> {
    let node = owned(&state, &id, &user).await?;
    Ok(Json(view(&state, node, &user.address).await?))
}

/// Stops a node; it moves to `stopping`, then `stopped`. A failed node that still holds an
/// agreement (or a runtime) has it ended and stays failed.
#[utoipa::path(post, path = "/api/v1/nodes/{id}/stop", tag = "nodes", responses((status = 202, body = NodeView), (status = 404, body = ErrorBody)))]
pub(crate) async fn stop(
    State(state): State<Arc<AppState>>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    owned(&state, &id, &user).await?;
    reconciler::handle(&state, &id, Event::StopAsked).await?;
    let node = owned(&state, &id, &user).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(view(&state, node, &user.address).await?),
    ))
}

/// Deletes a stopped (or failed) node from the list; whatever the backend still holds for it is
/// stopped first.
#[utoipa::path(delete, path = "/api/v1/nodes/{id}", tag = "nodes", responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub(crate) async fn remove(
    State(state): State<Arc<AppState>>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    owned(&state, &id, &user).await?;
    match reconciler::handle(&state, &id, Event::DeleteAsked).await? {
        Handled::Deleted | Handled::Missing => Ok(StatusCode::NO_CONTENT),
        Handled::Conflict(Conflict::NotStopped(state)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::NotStopped,
            format!("the node is {state}: stop it first"),
        )),
        Handled::StopFailed(why) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::StopFailed,
            format!("the node could not be stopped, so it was not deleted: {why}"),
        )),
        Handled::Done => Err(ApiError::internal("a delete decided nothing")),
    }
}

/// A new password for a running node; the old one is refused from now on.
#[utoipa::path(post, path = "/api/v1/nodes/{id}/credentials/rotate", tag = "nodes",
    responses((status = 200, body = NodeView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn rotate(
    State(state): State<Arc<AppState>>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<NodeView>, ApiError> {
    let node = owned(&state, &id, &user).await?;
    let backend = state
        .backend
        .as_ref()
        .filter(|_| node.state == NodeState::Running)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::NotRunning,
                format!(
                    "the node is {}: only a running node has credentials",
                    node.state
                ),
            )
        })?;
    let credentials = backend.rotate(&id).await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::BackendFailed,
            format!("the node did not rotate its credentials: {e}"),
        )
    })?;
    state
        .store
        .set_password(&id, credentials.password.expose())
        .await?;
    tracing::info!(node = %id, "credentials rotated");
    let node = owned(&state, &id, &user).await?;
    Ok(Json(view(&state, node, &user.address).await?))
}
