//! Carries out the lifecycle core's decisions (`erigolem_lifecycle::node::decide`): every event
//! about a node — from the API, a start that returned, a STATUS poll, the payment loop, a restart —
//! goes through [`handle`], which reads the node's facts, asks the core, records the next state
//! with a compare-and-set on the state it decided from (deciding again if the node moved on), and
//! executes the actions with the backend. Nothing here decides what a state or a payment means.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use erigolem_lifecycle::alert::Input as AlertInput;
use erigolem_lifecycle::bound::{self, EndingFacts};
use erigolem_lifecycle::node::{self, Action, AlertKind, Conflict, Event, Facts, StopOutcome};
use erigolem_lifecycle::{text, Expected, Glm};
use erigolem_primitives::{InstanceName, NodeState as RuntimeState, StartArgs};
use erigolem_store::{NewNode, NodeRecord, NodeState, StoreError};

use crate::backend::{BackendError, StartTerms};
use crate::AppState;

/// How long a recovering node waits for its previous runtime to let go of its endpoint.
const RECOVERY_WAIT: Duration = Duration::from_secs(60);

/// How often running nodes' STATUS is polled for block height and sync progress.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// What became of an event.
#[derive(Debug)]
pub(crate) enum Handled {
    /// Decided and carried out.
    Done,
    /// Refused (e.g. deleting a live node).
    Conflict(Conflict),
    /// The node was deleted.
    Deleted,
    /// There is no such node.
    Missing,
    /// A stop that had to finish first (before a delete) did not.
    StopFailed(String),
}

/// Decides on `event` for node `id` and carries the decision out. (Boxed: carrying a decision
/// out may handle further events, e.g. a stop's outcome.)
pub(crate) fn handle<'a>(
    state: &'a Arc<AppState>,
    id: &'a str,
    event: Event,
) -> futures::future::BoxFuture<'a, Result<Handled, StoreError>> {
    Box::pin(decide_and_execute(state, id, event))
}

async fn decide_and_execute(
    state: &Arc<AppState>,
    id: &str,
    event: Event,
) -> Result<Handled, StoreError> {
    // A node that moves on between our read and our write is decided on again, a few times.
    for _ in 0..5 {
        let Some(node) = state.store.node_by_id(id).await? else {
            return Ok(Handled::Missing);
        };
        let facts = facts(state, &node).await?;
        let decision = match node::decide(&facts, &event) {
            Ok(d) => d,
            Err(conflict) => return Ok(Handled::Conflict(conflict)),
        };
        let node = match &decision.next {
            Some((to, reason)) => {
                let reason = reason.as_deref().map(text::provider_text);
                match state
                    .store
                    .transition_from(id, node.state, *to, reason.as_deref())
                    .await
                {
                    Ok(n) => {
                        state.notify_owner(&n.owner);
                        n
                    }
                    Err(StoreError::IllegalTransition { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            None => node,
        };
        return execute(state, node, decision.actions).await;
    }
    tracing::warn!(node = %id, ?event, "the node kept changing; the event was dropped");
    Ok(Handled::Done)
}

/// Logs what went wrong in a background handling.
pub(crate) fn spawn_handle(state: Arc<AppState>, id: String, event: Event) {
    crate::spawn_until(state.shutting_down.subscribe(), async move {
        if let Err(e) = handle(&state, &id, event).await {
            tracing::error!(node = %id, "bookkeeping failed: {e}");
        }
    });
}

async fn facts(state: &AppState, node: &NodeRecord) -> Result<Facts, StoreError> {
    let held = match &state.backend {
        Some(b) => b.holds(&node.id).await,
        None => false,
    };
    let may_replace = match &node.plan_id {
        Some(plan) => state
            .store
            .plan(plan)
            .await?
            .is_some_and(|p| p.may_replace()),
        None => false,
    };
    Ok(Facts {
        state: node.state,
        held,
        misses: state.misses(&node.id),
        may_replace,
    })
}

async fn execute(
    state: &Arc<AppState>,
    node: NodeRecord,
    actions: Vec<Action>,
) -> Result<Handled, StoreError> {
    let deleting = actions.contains(&Action::Delete);
    for action in actions {
        match action {
            Action::Start => {
                let (state, node) = (state.clone(), node.clone());
                crate::spawn_until(state.shutting_down.subscribe(), async move {
                    if let Err(e) = run_start(&state, &node).await {
                        tracing::error!(node = %node.id, "start bookkeeping failed: {e}");
                    }
                });
            }
            Action::Resume => {
                let (state, node) = (state.clone(), node.clone());
                crate::spawn_until(state.shutting_down.subscribe(), async move {
                    if let Err(e) = run_resume(&state, &node).await {
                        tracing::error!(node = %node.id, "recovery bookkeeping failed: {e}");
                    }
                });
            }
            Action::Stop => {
                // Billing is frozen at the decision, however long the backend takes.
                state
                    .store
                    .freeze_billing(&node.id, erigolem_store::now_ms())
                    .await?;
                state.clear_health(&node.id);
                crate::alerts::on_event(state, &node, AlertInput::Stopped).await;
                let Some(backend) = state.backend.clone() else {
                    continue;
                };
                if deleting {
                    // A delete waits for the stop: nothing of the node may be left running.
                    match backend.stop(&node.id).await {
                        Ok(()) | Err(BackendError::Unknown(_)) => {}
                        Err(e) => return Ok(Handled::StopFailed(e.to_string())),
                    }
                } else {
                    let (state, id) = (state.clone(), node.id.clone());
                    crate::spawn_until(state.shutting_down.subscribe(), async move {
                        let outcome = match backend.stop(&id).await {
                            Ok(()) => StopOutcome::Stopped,
                            Err(BackendError::Unknown(_)) => StopOutcome::Gone,
                            Err(e) => StopOutcome::Failed(e.to_string()),
                        };
                        if let Err(e) = handle(&state, &id, Event::StopDone(outcome)).await {
                            tracing::error!(node = %id, "stop bookkeeping failed: {e}");
                        }
                    });
                }
            }
            Action::Delete => {
                state.store.delete_node(&node.id, &node.owner).await?;
                state.clear_health(&node.id);
                state.notify_owner(&node.owner);
                return Ok(Handled::Deleted);
            }
            Action::Replace { reason } => replace(state, &node, &reason).await?,
            Action::Alert { kind, message } => alert(state, &node, kind, &message).await,
            Action::Unhealthy { message } => {
                let misses = state.add_miss(&node.id, &message);
                tracing::warn!(node = %node.id, misses, "unhealthy: {message}");
                let alerts = crate::alerts::active(state, &node.id)
                    .await
                    .unwrap_or_default();
                send_progress(state, &node, Some(message), None, alerts).await;
            }
            Action::Healthy => state.clear_health(&node.id),
        }
    }
    Ok(Handled::Done)
}

/// The node failed: its alert is decided on under its rules (stored, logged, counted in
/// `/metrics` and delivered to the owner's webhook: `crate::alerts`).
async fn alert(state: &Arc<AppState>, node: &NodeRecord, kind: AlertKind, message: &str) {
    let input = match kind {
        AlertKind::Failed => AlertInput::Failed(message.to_owned()),
        AlertKind::Replaced => AlertInput::Replaced {
            by: String::new(),
            reason: message.to_owned(),
        },
    };
    crate::alerts::on_event(state, node, input).await;
}

/// What a start may spend: the plan's budget left, the server's caps tightened by the user's, the
/// expected time, and the providers the plan already had.
async fn start_terms(state: &AppState, node: &NodeRecord) -> Result<StartTerms, StoreError> {
    let policy = &state.config.payments;
    let plan = match &node.plan_id {
        Some(id) => state.store.plan(id).await?,
        None => None,
    };
    let Some(plan) = plan else {
        return Ok(StartTerms {
            plan_id: node.id.clone(),
            owner: node.owner.clone(),
            ..StartTerms::default()
        });
    };
    let user_caps = erigolem_lifecycle::Caps {
        max_price_per_hour: plan.max_price_per_hour.clone(),
        max_start_fee: plan.max_start_fee.clone(),
        max_price_per_request: None,
    };
    let budget_left = plan
        .budget
        .as_ref()
        .map(|b: &Glm| b.saturating_sub(&plan.spent));
    Ok(StartTerms {
        plan_id: plan.id.clone(),
        owner: node.owner.clone(),
        budget_left,
        caps: user_caps.tightest(&policy.caps),
        expected: Some(Expected {
            hours: plan.expected_hours.unwrap_or(policy.expected.hours),
            requests_per_hour: policy.expected.requests_per_hour,
        }),
        excluded_providers: state.store.plan_providers(&plan.id).await?,
    })
}

async fn run_start(state: &Arc<AppState>, node: &NodeRecord) -> Result<(), StoreError> {
    let Some(backend) = state.backend.clone() else {
        return Ok(());
    };
    let args = match start_args(node) {
        Ok(args) => args,
        Err(reason) => {
            handle(state, &node.id, Event::StartFailed { reason }).await?;
            return Ok(());
        }
    };
    let terms = start_terms(state, node).await?;
    let started = Instant::now();
    match backend.start(&node.id, args, &terms).await {
        Ok(status) => {
            metrics::histogram!("erigolem_node_start_seconds")
                .record(started.elapsed().as_secs_f64());
            state
                .store
                .set_endpoint(
                    &node.id,
                    &status.url,
                    Some(&status.ws_url),
                    &status.auth.user,
                    status.auth.password.expose(),
                    Some(status.instance.as_str()),
                    node.backend_ref.as_ref(),
                )
                .await?;
            record_progress(state, node, &status).await?;
            handle(state, &node.id, Event::Started).await?;
        }
        Err(e) => {
            let reason = e.to_string();
            tracing::warn!(node = %node.id, "start failed: {reason}");
            handle(state, &node.id, Event::StartFailed { reason }).await?;
        }
    }
    Ok(())
}

/// The runtime's start arguments for `node`: the node id is the instance name, so the endpoint's
/// URL is the same every time the node is started. A stored node whose network is no longer
/// served (holesky) gets the reason, never another network. (Never its password: see
/// `Backend::restore_password`.)
fn start_args(node: &NodeRecord) -> Result<StartArgs, String> {
    let network = node
        .network
        .parse()
        .map_err(|e: serde_json::Error| e.to_string())?;
    let mut args = StartArgs {
        network: Some(network),
        mode: node.mode.parse().ok(),
        prune: node.prune.parse().ok(),
        instance: InstanceName::new(node.id.clone()).ok(),
        ..StartArgs::default()
    };
    crate::access::Access::from_stored(node.access.as_ref())?.apply(&mut args);
    Ok(args)
}

/// After a restart: the node is picked up again by the backend (on Golem: the same agreement;
/// locally: a new runtime with the same URL and password, once the old one let go of it).
async fn run_resume(state: &Arc<AppState>, node: &NodeRecord) -> Result<(), StoreError> {
    let Some(backend) = state.backend.clone() else {
        return Ok(());
    };
    let password = state.store.password(&node.id, &node.owner).await?;
    let args = match start_args(node) {
        Ok(args) => args,
        Err(reason) => {
            handle(state, &node.id, Event::ResumeFailed { reason }).await?;
            return Ok(());
        }
    };
    // The old server's runtimes end on their own (stdin EOF) and release the node's endpoint
    // only once they removed it; until then the new start is refused as busy.
    let deadline = Instant::now() + RECOVERY_WAIT;
    let result = loop {
        // Picking a node up asks its STATUS (on Golem, through its activity): a poll.
        state.leases.polled(&node.id);
        match backend.resume(&node.id, args.clone()).await {
            Err(BackendError::InstanceBusy) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => break other,
        }
    };
    // A node started anew has a fresh password; its owner has the stored one: set that again,
    // over the runtime API (never on a command line). A node picked up where it ran (Golem) has
    // its own already.
    let result = match (result, password) {
        (Ok(status), Some(password)) if status.auth.password.expose() != password => {
            let restored = match erigolem_primitives::EndpointPassword::new(password) {
                Ok(password) => backend.restore_password(&node.id, password).await,
                Err(e) => Err(BackendError::Other(format!("the stored password: {e}"))),
            };
            match restored {
                Ok(()) => Ok(status),
                // Not with credentials nobody has: the failure below stops it.
                Err(e) => Err(e),
            }
        }
        (result, _) => result,
    };
    match result {
        Ok(status) => {
            tracing::info!(node = %node.id, url = %status.url, "node picked up after a restart");
            record_progress(state, node, &status).await?;
            state.notify_owner(&node.owner);
        }
        Err(e) => {
            handle(
                state,
                &node.id,
                Event::ResumeFailed {
                    reason: e.to_string(),
                },
            )
            .await?;
        }
    }
    Ok(())
}

/// A new node on the failed one's plan (same owner, name, network, mode; same budget, counted
/// once), started at once; the plan's providers so far are never taken again.
async fn replace(
    state: &Arc<AppState>,
    failed: &NodeRecord,
    reason: &str,
) -> Result<(), StoreError> {
    let new = NewNode {
        owner: failed.owner.clone(),
        name: failed.name.clone(),
        network: failed.network.clone(),
        mode: failed.mode.clone(),
        prune: failed.prune.clone(),
        access: failed.access.clone(),
    };
    let reason = text::provider_text(reason);
    match state.store.replace_node(failed, &new, &reason).await? {
        Some(node) => {
            // Leased to this replica in the same transaction.
            state.leases.adopt(&node.id, 1);
            state.notify_owner(&node.owner);
            crate::alerts::on_event(
                state,
                failed,
                AlertInput::Replaced {
                    by: node.id.clone(),
                    reason: reason.to_string(),
                },
            )
            .await;
            spawn_handle(state.clone(), node.id, Event::Created);
        }
        None => tracing::info!(node = %failed.id, "not replaced: its plan has no replacement left"),
    }
    Ok(())
}

/// Stores the node's block height and sync progress and tells its owner's event streams.
async fn record_progress(
    state: &AppState,
    node: &NodeRecord,
    status: &erigolem_primitives::NodeStatus,
) -> Result<(), StoreError> {
    let sync = erigolem_store::cap_sync(
        status
            .sync
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok()),
    );
    let block = status.block.map(|b| b as i64);
    state
        .store
        .set_progress(&node.id, block, sync.clone())
        .await?;
    let thresholds = crate::lag::Thresholds {
        blocks: state.config.lag_blocks,
        seconds: state.config.lag_seconds,
    };
    let live = crate::lag::LiveStatus::of(status, thresholds);
    if let Ok(mut all) = state.live.lock() {
        all.insert(node.id.clone(), live.clone());
    }
    // Alerts, like usage, never hold up the node's life.
    let alerts = match crate::alerts::on_poll(state, node, &live).await {
        Ok(alerts) => alerts,
        Err(e) => {
            tracing::warn!(node = %node.id, "alerts not decided: {e}");
            Vec::new()
        }
    };
    // Usage is for looking at: a failure to store it never holds up the node's life.
    let usage = match record_usage(state, &node.id, status, &live).await {
        Ok(usage) => usage,
        Err(e) => {
            tracing::warn!(node = %node.id, "usage not recorded: {e}");
            None
        }
    };
    let node = NodeRecord {
        block,
        sync,
        ..node.clone()
    };
    send_progress(state, &node, state.health(&node.id), usage, alerts).await;
    Ok(())
}

/// Adds what the endpoint served since the last poll (and the poll's height and lag) to the
/// node's usage in the store; the difference, for `event: progress`.
async fn record_usage(
    state: &AppState,
    node_id: &str,
    status: &erigolem_primitives::NodeStatus,
    live: &crate::lag::LiveStatus,
) -> Result<Option<erigolem_api::UsageDelta>, StoreError> {
    let now = erigolem_store::now_ms();
    let remembered = state
        .usage_cursors
        .lock()
        .ok()
        .and_then(|c| c.get(node_id).cloned());
    let previous = match (&remembered, &status.usage) {
        (Some((usage, _)), _) => Some(usage.clone()),
        // After a restart of this server: where the stored usage left off.
        (None, Some(_)) => state
            .store
            .usage_cursor(node_id)
            .await?
            .and_then(|v| serde_json::from_value(v).ok()),
        (None, None) => None,
    };
    let mut sample = match &status.usage {
        Some(now_usage) => crate::usage::delta(&previous.unwrap_or_default(), now_usage),
        None => erigolem_store::UsageSample::default(),
    };
    sample.at = now;
    sample.block = status.block;
    sample.head = status.block.map(|b| b + live.behind_blocks.unwrap_or(0));
    sample.behind_seconds = live.behind_seconds;
    let cursor = status
        .usage
        .as_ref()
        .and_then(|u| serde_json::to_value(u).ok());
    state
        .store
        .add_usage(node_id, &sample, cursor.as_ref())
        .await?;
    let Some(usage) = status.usage.clone() else {
        return Ok(None);
    };
    if let Ok(mut cursors) = state.usage_cursors.lock() {
        cursors.insert(node_id.to_owned(), (usage, now));
    }
    let secs = remembered.map_or(0, |(_, at)| ((now - at).max(0) / 1_000) as u64);
    Ok(Some(crate::usage::delta_view(&sample, secs)))
}

/// To the owner's event streams here, and on the other replicas.
async fn send_progress(
    state: &AppState,
    node: &NodeRecord,
    health: Option<String>,
    usage: Option<erigolem_api::UsageDelta>,
    alerts: Vec<erigolem_api::Alert>,
) {
    let live = state.live(&node.id).unwrap_or_default();
    let progress = crate::routes::events::Progress {
        owner: node.owner.clone(),
        event: erigolem_api::ProgressEvent {
            node_id: node.id.clone(),
            block: node.block,
            sync: node
                .sync
                .clone()
                .and_then(|v| serde_json::from_value(v).ok()),
            health,
            behind_seconds: live.behind_seconds,
            behind_blocks: live.behind_blocks,
            peers: live.peers,
            lagging: live.lagging,
            usage,
            alerts,
            at: erigolem_store::now_ms(),
        },
    };
    crate::leases::share_progress(state, &progress, live).await;
    // No receivers (nobody watching) is not an error.
    let _ = state.progress.send(progress);
}

/// Polls the running nodes this replica holds (each on its own, so a silent provider delays
/// nobody else) and checks whether their money or agreement runs out.
pub(crate) fn spawn_poller(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    crate::spawn_until(state.shutting_down.subscribe(), async move {
        if state.backend.is_none() {
            return;
        }
        let polling: Arc<std::sync::Mutex<HashSet<String>>> = Default::default();
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        loop {
            tick.tick().await;
            let Ok(mut nodes) = state.store.nodes_in_states(&[NodeState::Running]).await else {
                continue;
            };
            state.forget_health_except(&nodes);
            state.leases.forget_polls_except(&nodes);
            if let Ok(mut live) = state.live.lock() {
                live.retain(|id, _| nodes.iter().any(|n| &n.id == id));
            }
            // The others' nodes are polled by the replicas holding them.
            nodes.retain(|n| state.leases.holds(&n.id));
            if let Ok(mut cursors) = state.usage_cursors.lock() {
                cursors.retain(|id, _| nodes.iter().any(|n| &n.id == id));
            }
            for node in nodes {
                if let Err(e) = check_ending(&state, &node).await {
                    tracing::warn!(node = %node.id, "ending check: {e}");
                }
                let fresh = polling
                    .lock()
                    .map(|mut p| p.insert(node.id.clone()))
                    .unwrap_or(false);
                if !fresh {
                    continue;
                }
                let (state, polling) = (state.clone(), polling.clone());
                crate::spawn_until(state.shutting_down.subscribe(), async move {
                    if let Err(e) = poll(&state, &node).await {
                        tracing::error!(node = %node.id, "poll bookkeeping failed: {e}");
                    }
                    if let Ok(mut p) = polling.lock() {
                        p.remove(&node.id);
                    }
                });
            }
        }
    })
}

async fn poll(state: &Arc<AppState>, node: &NodeRecord) -> Result<(), StoreError> {
    let Some(backend) = state.backend.clone() else {
        return Ok(());
    };
    state.leases.polled(&node.id);
    let status = backend.status(&node.id).await;
    let event = match status {
        Ok(status) if status.state == RuntimeState::Failed => {
            let reason = status.error.as_deref().unwrap_or("the node failed");
            Event::Status {
                failed: Some(text::provider_text(reason)),
            }
        }
        Ok(status) => {
            record_progress(state, node, &status).await?;
            Event::Status { failed: None }
        }
        Err(e) => Event::MissedPoll {
            error: text::provider_text(&e.to_string()),
        },
    };
    handle(state, &node.id, event).await?;
    Ok(())
}

/// Stops a running node (with the reason) before its budget, its owner's or the server's spend
/// cap, or its agreement runs out.
async fn check_ending(state: &Arc<AppState>, node: &NodeRecord) -> Result<(), StoreError> {
    let Some(plan_id) = &node.plan_id else {
        return Ok(());
    };
    let Some(deal) = state.store.live_deal(&node.id).await? else {
        return Ok(());
    };
    let Some(plan) = state.store.plan(plan_id).await? else {
        return Ok(());
    };
    let Some(budget) = &plan.budget else {
        return Ok(());
    };
    let policy = &state.config.payments;
    let now = erigolem_store::now_ms();
    let (user, server) = policy.ledgers(&state.store, &node.owner, now).await?;
    let reason = bound::must_end(&EndingFacts {
        price: &deal.price,
        service: &deal.service,
        accepted: &deal.accepted,
        budget,
        budget_spent: &plan.spent,
        user: &user,
        server: &server,
        agreement_ends_at: deal.expires_at,
        now,
        slack: &policy.slack,
    });
    if let Some(reason) = reason {
        tracing::info!(node = %node.id, %reason, "stopping");
        spawn_handle(state.clone(), node.id.clone(), Event::Ending { reason });
    }
    Ok(())
}
