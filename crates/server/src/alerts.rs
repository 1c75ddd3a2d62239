//! Carries out `erigolem_lifecycle::alert::decide` for the nodes this replica holds: each STATUS
//! poll (lag, runway) and each failure, replacement or stop is decided against the node's rules
//! and its active alerts (from the store: a replica that takes a node over knows what is active),
//! and the alerts to fire or resolve are stored, with their webhook deliveries in the same
//! transaction. Only the holder of a node's lease polls it and handles its events, and the store
//! keeps at most one active alert per node and kind, so each alert fires once.

use std::sync::Arc;

use erigolem_api::{Alert, WebhookEvent, WebhookEventType};
use erigolem_lifecycle::alert::{self, AlertAction, AlertState, Input};
use erigolem_store::{AlertRecord, NewDelivery, NodeRecord, NodeState, StoreError};

use crate::AppState;

/// How many alerts `GET /nodes/{id}/alerts` lists as recent.
pub(crate) const RECENT: i64 = 50;

pub(crate) fn view(a: &AlertRecord) -> Alert {
    Alert {
        id: a.id,
        node_id: a.node_id.clone(),
        kind: a.kind,
        message: a.message.clone(),
        fired_at: a.fired_at,
        resolved_at: a.resolved_at,
    }
}

/// A webhook delivery of `event` (its id is new; the body is what is signed and sent).
pub(crate) fn delivery(event: WebhookEventType, alert: Option<Alert>, now: i64) -> NewDelivery {
    let id = uuid::Uuid::now_v7().to_string();
    let body = WebhookEvent {
        id: id.clone(),
        kind: event,
        created_at: now,
        alert,
    };
    NewDelivery {
        id,
        event: event.as_str().to_owned(),
        body: serde_json::to_string(&body).unwrap_or_default(),
    }
}

/// The node's active alerts as the API shows them.
pub(crate) async fn active(state: &AppState, node_id: &str) -> Result<Vec<Alert>, StoreError> {
    Ok(state
        .store
        .active_alerts(node_id)
        .await?
        .iter()
        .map(view)
        .collect())
}

/// Decides on `input` for `node` and stores what fires or resolves; the active alerts after.
pub(crate) async fn handle(
    state: &AppState,
    node: &NodeRecord,
    input: Input,
) -> Result<Vec<Alert>, StoreError> {
    let rules = state.store.alert_rules(&node.id).await?;
    let stored = state.store.active_alerts(&node.id).await?;
    // Clear streaks are the holder's memory: a replica taking over starts them again (a resolve
    // comes a few polls later; nothing fires twice: the active alerts are in the store).
    let clears = state
        .alert_clears
        .lock()
        .map(|c| c.clone())
        .unwrap_or_default();
    let current = AlertState {
        active: stored
            .iter()
            .map(|a| {
                let clear = clears.get(&(node.id.clone(), a.kind)).copied().unwrap_or(0);
                (a.kind, clear)
            })
            .collect(),
        caught_up: state.store.alerts_caught_up(&node.id).await?,
    };
    let (next, actions) = alert::decide(&rules, &current, &input);
    if next.caught_up && !current.caught_up {
        state
            .store
            .set_alerts_caught_up(&node.id, erigolem_store::now_ms())
            .await?;
    }
    if let Ok(mut c) = state.alert_clears.lock() {
        c.retain(|(id, _), _| id != &node.id);
        for (kind, n) in &next.active {
            c.insert((node.id.clone(), *kind), *n);
        }
    }
    let mut queued = false;
    for action in actions {
        let now = erigolem_store::now_ms();
        match action {
            AlertAction::Fire { kind, message } => {
                let fired = state
                    .store
                    .fire_alert(&node.id, &node.owner, kind, &message, now, |a| {
                        queued = true;
                        delivery(WebhookEventType::AlertFired, Some(view(a)), now)
                    })
                    .await?;
                if fired.is_some() {
                    tracing::warn!(node = %node.id, owner = %node.owner, kind = kind.as_str(), "alert: {message}");
                    metrics::counter!("erigolem_node_alerts_total", "kind" => kind.as_str())
                        .increment(1);
                }
            }
            AlertAction::Resolve { kind } => {
                let resolved = state
                    .store
                    .resolve_alert(&node.id, kind, now, |a| {
                        queued = true;
                        delivery(WebhookEventType::AlertResolved, Some(view(a)), now)
                    })
                    .await?;
                if resolved.is_some() {
                    tracing::info!(node = %node.id, kind = kind.as_str(), "alert resolved");
                }
            }
        }
    }
    if queued {
        state.deliveries.notify_one();
    }
    active(state, &node.id).await
}

/// [`handle`] for a STATUS poll of a running node: its lag, and its runway where it has a budget.
pub(crate) async fn on_poll(
    state: &AppState,
    node: &NodeRecord,
    live: &crate::lag::LiveStatus,
) -> Result<Vec<Alert>, StoreError> {
    let sample = alert::Sample {
        behind_blocks: live.behind_blocks,
        behind_seconds: live.behind_seconds,
        runway_secs: runway(state, node).await?,
    };
    handle(state, node, Input::Sample(sample)).await
}

/// Seconds the rest of the node's budget pays for (nodes that are paid for, with a budget).
async fn runway(state: &AppState, node: &NodeRecord) -> Result<Option<u64>, StoreError> {
    let (Some(plan_id), Some(_)) = (
        &node.plan_id,
        state.backend.as_ref().and_then(|b| b.payer()),
    ) else {
        return Ok(None);
    };
    let Some(plan) = state.store.plan(plan_id).await? else {
        return Ok(None);
    };
    let billing = crate::money::billing(
        &state.store.node_deals(&node.id).await?,
        &plan,
        node.state == NodeState::Running,
        &state.config.payments.slack,
        erigolem_store::now_ms(),
    );
    Ok(billing.and_then(|b| b.runway_secs))
}

/// [`handle`] in the background, for an event about the node (failed, replaced, stopped).
pub(crate) async fn on_event(state: &Arc<AppState>, node: &NodeRecord, input: Input) {
    if let Err(e) = handle(state, node, input).await {
        tracing::error!(node = %node.id, "alert bookkeeping failed: {e}");
    }
}
