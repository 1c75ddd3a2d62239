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
use futures::StreamExt;

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
        .route("/nodes/{id}/usage", get(usage))
        .route("/nodes/{id}/logs", get(logs))
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
    let replaced_by = match node.state {
        NodeState::Failed => state.store.replacement_of(&node.id).await?,
        _ => None,
    };
    let alerts = crate::alerts::active(state, &node.id).await?;
    view_with(state, node, owner, replaced_by, alerts).await
}

/// [`view`] with the node's replacement and active alerts already known (a list finds them among
/// its own rows, and reads its owner's active alerts in one query: a replacement has its
/// predecessor's owner).
async fn view_with(
    state: &AppState,
    node: NodeRecord,
    owner: &str,
    replaced_by: Option<String>,
    alerts: Vec<erigolem_api::Alert>,
) -> Result<NodeView, ApiError> {
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
    let replaced_by = replaced_by.filter(|_| node.state == NodeState::Failed);
    let health = state.health(&node.id).filter(|_| live);
    let status = state
        .live(&node.id)
        .filter(|_| node.state == NodeState::Running)
        .unwrap_or_default();
    let stored = |what: &str, text: &str| {
        ApiError::internal(format!("node {}: stored {what} {text:?} unknown", node.id))
    };
    let mode = node.mode.parse().map_err(|_| stored("mode", &node.mode))?;
    let prune = node
        .prune
        .parse()
        .map_err(|_| stored("prune", &node.prune))?;
    let access = crate::access::Access::from_stored(node.access.as_ref())
        .map_err(|e| ApiError::internal(format!("node {}: {e}", node.id)))?;
    let [methods, allow_origins, allow_ips] = access.view();
    // Written from STATUS as a SyncProgress; anything else is shown as no progress.
    let sync = node.sync.and_then(|v| serde_json::from_value(v).ok());
    Ok(NodeView {
        id: node.id,
        name: node.name,
        network: node.network,
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
        endpoint_limits: status.endpoint_limits,
        methods,
        allow_origins,
        allow_ips,
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
        alerts,
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
    let access = crate::access::Access::parse(body.methods, body.allow_origins, body.allow_ips)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidAllowlist, e.0))?;
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
    let alert_rules = body
        .alerts
        .map(|rules| rules.validate())
        .transpose()
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidAlertRules, e.to_string()))?;
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
        access: access.to_stored(),
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
    if let Some(rules) = &alert_rules {
        state
            .store
            .set_alert_rules(&node.id, rules, erigolem_store::now_ms())
            .await?;
    }
    // Leased to this replica in the insert's transaction.
    state.leases.adopt(&node.id, 1);
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
    let nodes = state.store.nodes(&user.address).await?;
    // One pass instead of a lookup per failed node.
    let mut replacements: std::collections::HashMap<String, String> = nodes
        .iter()
        .filter_map(|n| Some((n.replaces.clone()?, n.id.clone())))
        .collect();
    let mut alerts: std::collections::HashMap<String, Vec<erigolem_api::Alert>> =
        Default::default();
    for a in state.store.active_alerts_of(&user.address).await? {
        alerts
            .entry(a.node_id.clone())
            .or_default()
            .push(crate::alerts::view(&a));
    }
    let mut out = Vec::with_capacity(nodes.len());
    for node in nodes {
        let replaced_by = replacements.remove(&node.id);
        let alerts = alerts.remove(&node.id).unwrap_or_default();
        out.push(view_with(&state, node, &user.address, replaced_by, alerts).await?);
    }
    Ok(Json(out))
}

pub(crate) async fn owned(
    state: &AppState,
    id: &str,
    user: &AuthUser,
) -> Result<NodeRecord, ApiError> {
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
    crate::leases::user_request(&state, &id, Event::StopAsked).await?;
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
    match crate::leases::user_request(&state, &id, Event::DeleteAsked).await? {
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

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsageQuery {
    /// `1h` (per minute, the default), `6h` (per 5 minutes), `24h` (per 15 minutes) or `7d`
    /// (per hour).
    #[param(value_type = Option<erigolem_api::UsageWindow>)]
    window: Option<String>,
}

/// What the node's endpoint served over a window: requests by method, errors, refusals, bytes,
/// latency percentiles, and its height against the network's head, per step.
#[utoipa::path(get, path = "/api/v1/nodes/{id}/usage", tag = "nodes", params(UsageQuery),
    responses((status = 200, body = erigolem_api::NodeUsage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn usage(
    State(state): State<Arc<AppState>>,
    user: AuthUser,
    Path(id): Path<String>,
    query: Result<axum::extract::Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<erigolem_api::NodeUsage>, ApiError> {
    let axum::extract::Query(query) = query?;
    let window = match query.window.as_deref() {
        None => erigolem_api::UsageWindow::default(),
        Some(text) => erigolem_api::UsageWindow::parse(text).ok_or_else(|| {
            let known: Vec<&str> = erigolem_api::UsageWindow::ALL
                .iter()
                .map(|w| w.as_str())
                .collect();
            ApiError::bad_request(
                ErrorCode::InvalidWindow,
                format!(
                    "window {:?} is not one of {}",
                    erigolem_store::cap_text(text, 32),
                    known.join(", ")
                ),
            )
        })?,
    };
    owned(&state, &id, &user).await?;
    let to = erigolem_store::now_ms();
    let from = crate::usage::window_start(window, to);
    let samples = state
        .store
        .usage(&id, crate::usage::tier(window), from)
        .await?;
    let (points, totals) = crate::usage::points(&samples, window);
    Ok(Json(erigolem_api::NodeUsage {
        node_id: id,
        window,
        step_secs: window.step_secs(),
        from,
        to,
        totals,
        points,
    }))
}

/// Lines `GET /nodes/{id}/logs` gives by default, and at most.
const LOG_LINES_DEFAULT: usize = 100;
pub(crate) const LOG_LINES_MAX: usize = 1_000;
/// How often a followed log is read again.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// How many of the last lines a followed log is read with, to find where the previous read
/// ended (LOGS gives the last lines, not an offset: the longest overlap is taken; a line that
/// was not in the previous read is always new).
const FOLLOW_WINDOW: usize = LOG_LINES_MAX;

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogsQuery {
    /// How many of the last lines (1–1000, default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    lines: Option<String>,
    /// Keep the answer open as `text/event-stream`, with `event: lines` for each read that
    /// found new lines (until the node stops or the session ends).
    follow: Option<bool>,
}

/// The running node's last log lines (the runtime's `LOGS`), its password and anything that
/// looks like a credential replaced by `[redacted]`.
#[utoipa::path(get, path = "/api/v1/nodes/{id}/logs", tag = "nodes", params(LogsQuery),
    responses((status = 200, body = erigolem_api::NodeLogs, description = "The lines; with `follow=true` a text/event-stream of `event: lines` with NodeLogs data"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub(crate) async fn logs(
    State(state): State<Arc<AppState>>,
    user: AuthUser,
    Path(id): Path<String>,
    query: Result<axum::extract::Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    let axum::extract::Query(query) = query?;
    let lines = match query.lines.as_deref() {
        None => LOG_LINES_DEFAULT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=LOG_LINES_MAX).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    ErrorCode::InvalidLines,
                    format!(
                        "lines must be a number from 1 to {LOG_LINES_MAX}, not {:?}",
                        erigolem_store::cap_text(text, 32)
                    ),
                )
            })?,
    };
    let node = owned(&state, &id, &user).await?;
    let backend = state
        .backend
        .clone()
        .filter(|_| node.state == NodeState::Running)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::NotRunning,
                format!("the node is {}: only a running node has logs", node.state),
            )
        })?;
    let password = state.store.password(&id, &user.address).await?;
    let secrets: Vec<String> = password.into_iter().collect();
    let read = {
        let backend = backend.clone();
        let id = id.clone();
        move |lines: usize| {
            let backend = backend.clone();
            let id = id.clone();
            let secrets = secrets.clone();
            async move {
                let text = backend.logs(&id, lines).await.map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        ErrorCode::BackendFailed,
                        format!("the node's runtime did not give its log: {e}"),
                    )
                })?;
                let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
                Ok::<Vec<String>, ApiError>(
                    text.lines()
                        .map(|l| crate::logs::redact(l, &secrets))
                        .collect(),
                )
            }
        }
    };
    let first = read(lines).await?;
    if !query.follow.unwrap_or(false) {
        return Ok(Json(erigolem_api::NodeLogs {
            node_id: id,
            lines: first,
        })
        .into_response());
    }
    // A followed log is one of the user's streams: capped with them, ended at sign-out.
    let sub = state
        .hub
        .subscribe(&user.address, &user.token_hash)
        .await
        .map_err(|e| match e {
            crate::feed::SubscribeError::TooMany(_) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyStreams,
                format!("{e}: close one first"),
            ),
            other => ApiError::internal(other),
        })?;
    let store = state.store.clone();
    let owner = user.address.clone();
    let event = |node_id: &str, lines: &[String]| {
        axum::response::sse::Event::default()
            .event("lines")
            .json_data(erigolem_api::NodeLogs {
                node_id: node_id.to_owned(),
                lines: lines.to_vec(),
            })
            .ok()
    };
    let opening = event(&id, &first);
    // The followed reads compare with a wider window than the opening one: read it once now.
    let seen = read(FOLLOW_WINDOW).await?;
    let stream = async_stream_lines(read, store, owner, id, seen, sub, event);
    let stream = futures::stream::iter(opening)
        .chain(stream)
        .map(Ok::<_, std::convert::Infallible>);
    let keep_alive = (state.config.limits.idle_timeout / 3).min(std::time::Duration::from_secs(15));
    Ok(axum::response::sse::Sse::new(stream)
        .keep_alive(axum::response::sse::KeepAlive::new().interval(keep_alive))
        .into_response())
}

/// The new lines of a followed log, read every [`FOLLOW_EVERY`], until the node is no longer
/// running, its runtime stops answering, or the session's streams are closed.
fn async_stream_lines<R, F>(
    read: R,
    store: erigolem_store::Store,
    owner: String,
    id: String,
    first: Vec<String>,
    sub: crate::feed::Subscription,
    event: impl Fn(&str, &[String]) -> Option<axum::response::sse::Event> + Send + 'static,
) -> impl futures::Stream<Item = axum::response::sse::Event> + Send
where
    R: Fn(usize) -> F + Send + 'static,
    F: std::future::Future<Output = Result<Vec<String>, ApiError>> + Send,
{
    futures::stream::unfold(
        (read, store, owner, id, first, sub, event),
        |(read, store, owner, id, mut seen, mut sub, event)| async move {
            loop {
                tokio::select! {
                    _ = &mut sub.closed => return None,
                    _ = tokio::time::sleep(FOLLOW_EVERY) => {}
                }
                let running = matches!(
                    store.node(&id, &owner).await,
                    Ok(Some(node)) if node.state == NodeState::Running
                );
                if !running {
                    return None;
                }
                let now = read(FOLLOW_WINDOW).await.ok()?;
                let fresh = crate::logs::new_lines(&seen, &now).to_vec();
                seen = now;
                if fresh.is_empty() {
                    continue;
                }
                let out = event(&id, &fresh)?;
                return Some((out, (read, store, owner, id, seen, sub, event)));
            }
        },
    )
}
