//! Drives nodes through their states with the backend, recording every transition: start
//! (pending → starting → running | failed), stop (→ stopping → stopped), and progress polling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use erigolem_primitives::{InstanceName, NodeState as RuntimeState, StartArgs};
use erigolem_store::{NodeRecord, NodeState, StoreError};

use crate::backend::{BackendError, NodeTerms};
use crate::AppState;

/// How long a recovering node waits for its previous runtime to let go of its endpoint.
const RECOVERY_WAIT: Duration = Duration::from_secs(60);

/// Consecutive failed STATUS polls after which a running node is failed.
const UNHEALTHY_LIMIT: u32 = 3;

/// How often running nodes' STATUS is polled for block height and sync progress.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Starts `node` in the background.
pub(crate) fn start(state: Arc<AppState>, node: NodeRecord) {
    tokio::spawn(async move {
        if let Err(e) = run_start(&state, &node).await {
            tracing::error!(node = %node.id, "start bookkeeping failed: {e}");
        }
    });
}

async fn run_start(state: &AppState, node: &NodeRecord) -> Result<(), StoreError> {
    let Some(backend) = &state.backend else {
        return Ok(());
    };
    state
        .transition(&node.id, NodeState::Starting, None)
        .await?;
    let args = match start_args(node, None) {
        Ok(args) => args,
        Err(reason) => {
            state
                .transition(&node.id, NodeState::Failed, Some(&reason))
                .await?;
            return Ok(());
        }
    };
    let terms = NodeTerms::from_backend_ref(node.backend_ref.as_ref());
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
            match state.transition(&node.id, NodeState::Running, None).await {
                Ok(_) => {}
                // Stopped while it was starting: finish the stop now that there is something to stop.
                Err(StoreError::IllegalTransition { .. }) => {
                    let result = backend.stop(&node.id).await;
                    finish_stop(state, &node.id, result.err().map(|e| e.to_string())).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(e) => {
            let reason = e.to_string();
            tracing::warn!(node = %node.id, "start failed: {reason}");
            state
                .transition(&node.id, NodeState::Failed, Some(&reason))
                .await?;
        }
    }
    Ok(())
}

/// The runtime's start arguments for `node`: the node id is the instance name, so the endpoint's
/// URL is the same every time the node is started; `password` restores its credentials. A stored
/// node whose network is no longer served (holesky) gets the reason, never another network.
fn start_args(node: &NodeRecord, password: Option<String>) -> Result<StartArgs, String> {
    let network = node
        .network
        .parse()
        .map_err(|e: serde_json::Error| e.to_string())?;
    Ok(StartArgs {
        network: Some(network),
        mode: node.mode.parse().ok(),
        prune: node.prune.parse().ok(),
        instance: InstanceName::new(node.id.clone()).ok(),
        password: password.and_then(|p| erigolem_primitives::EndpointPassword::new(p).ok()),
        ..StartArgs::default()
    })
}

/// Stops a node: a running one through the backend, one still starting when its start returns.
/// Stops a running node for a reason of the server's (not the user's), recorded on its transitions.
pub(crate) async fn stop_because(
    state: Arc<AppState>,
    id: &str,
    reason: &str,
) -> Result<(), StoreError> {
    state
        .transition(id, NodeState::Stopping, Some(reason))
        .await?;
    let result = match &state.backend {
        Some(backend) => backend.stop(id).await.err().map(|e| e.to_string()),
        None => None,
    };
    match result {
        Some(e) if !e.contains("is not running on this backend") => {
            let reason = format!("{reason}; the stop failed: {e}");
            state
                .transition(id, NodeState::Failed, Some(&reason))
                .await?;
        }
        _ => {
            state
                .transition(id, NodeState::Stopped, Some(reason))
                .await?;
        }
    }
    Ok(())
}

pub(crate) async fn stop(state: Arc<AppState>, node: NodeRecord) -> Result<(), StoreError> {
    match node.state {
        NodeState::Pending | NodeState::Starting => {
            state
                .transition(&node.id, NodeState::Stopping, None)
                .await?;
            if node.state == NodeState::Pending && state.backend.is_none() {
                finish_stop(&state, &node.id, None).await?;
            }
        }
        NodeState::Running | NodeState::Failed => {
            state
                .transition(&node.id, NodeState::Stopping, None)
                .await?;
            tokio::spawn(async move {
                let result = match &state.backend {
                    Some(backend) => backend.stop(&node.id).await.err().map(|e| e.to_string()),
                    None => None,
                };
                if let Err(e) = finish_stop(&state, &node.id, result).await {
                    tracing::error!(node = %node.id, "stop bookkeeping failed: {e}");
                }
            });
        }
        NodeState::Stopping | NodeState::Stopped => {}
    }
    Ok(())
}

async fn finish_stop(state: &AppState, id: &str, error: Option<String>) -> Result<(), StoreError> {
    match error {
        // A node the backend no longer knows is gone already.
        Some(e) if !e.contains("is not running on this backend") => {
            state
                .transition(id, NodeState::Failed, Some(&format!("stop failed: {e}")))
                .await?;
        }
        _ => {
            state.transition(id, NodeState::Stopped, None).await?;
        }
    }
    Ok(())
}

/// A new node with the failed one's owner, name, network, mode and terms; started at once (on
/// Golem: on another provider, as the failed one's is not answering). Returns its id.
async fn replace(state: &Arc<AppState>, failed: &NodeRecord) -> Result<String, StoreError> {
    let node = state
        .store
        .insert_node(&erigolem_store::NewNode {
            owner: failed.owner.clone(),
            name: failed.name.clone(),
            network: failed.network.clone(),
            mode: failed.mode.clone(),
            prune: failed.prune.clone(),
        })
        .await?;
    if let Some(r) = &failed.backend_ref {
        state.store.set_backend_ref(&node.id, r).await?;
    }
    let node = erigolem_store::NodeRecord {
        backend_ref: failed.backend_ref.clone(),
        ..node
    };
    state.notify();
    let id = node.id.clone();
    start(state.clone(), node);
    Ok(id)
}

/// Stores the node's block height and sync progress and tells its owner's event streams.
async fn record_progress(
    state: &AppState,
    node: &NodeRecord,
    status: &erigolem_primitives::NodeStatus,
) -> Result<(), StoreError> {
    let sync = status
        .sync
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok());
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
    // No receivers (nobody watching) is not an error.
    let _ = state.progress.send(crate::routes::events::Progress {
        owner: node.owner.clone(),
        node_id: node.id.clone(),
        block,
        sync,
        health: state.health(&node.id),
        behind_seconds: live.behind_seconds,
        behind_blocks: live.behind_blocks,
        peers: live.peers,
        lagging: live.lagging,
        at: erigolem_store::now_ms(),
    });
    Ok(())
}

/// Polls running nodes; a node whose runtime reports it failed is marked failed with the reason.
pub(crate) fn spawn_poller(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(backend) = state.backend.clone() else {
            return;
        };
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        // Consecutive STATUS failures per node: a provider that stops answering fails the node.
        let mut misses: std::collections::HashMap<String, u32> = Default::default();
        loop {
            tick.tick().await;
            let Ok(nodes) = state.store.nodes_in_states(&[NodeState::Running]).await else {
                continue;
            };
            misses.retain(|id, _| nodes.iter().any(|n| &n.id == id));
            if let Ok(mut live) = state.live.lock() {
                live.retain(|id, _| nodes.iter().any(|n| &n.id == id));
            }
            for (id, reason) in backend.ending() {
                if nodes.iter().any(|n| n.id == id) {
                    tracing::info!(node = %id, %reason, "stopping");
                    let (state, reason) = (state.clone(), format!("stopped: {reason}"));
                    tokio::spawn(async move {
                        if let Err(e) = stop_because(state, &id, &reason).await {
                            tracing::error!(node = %id, "stop bookkeeping failed: {e}");
                        }
                    });
                }
            }
            for node in nodes {
                let status = backend.status(&node.id).await;
                if status.is_ok() {
                    misses.remove(&node.id);
                    if let Ok(mut unhealthy) = state.unhealthy.lock() {
                        unhealthy.remove(&node.id);
                    }
                }
                match status {
                    Ok(status) if status.state == RuntimeState::Failed => {
                        let reason = status.error.unwrap_or_else(|| "the node failed".into());
                        let _ = state
                            .transition(&node.id, NodeState::Failed, Some(&reason))
                            .await;
                    }
                    Ok(status) => {
                        let _ = record_progress(&state, &node, &status).await;
                    }
                    Err(e) => {
                        let n = misses.entry(node.id.clone()).or_default();
                        *n += 1;
                        tracing::warn!(node = %node.id, misses = *n, "unhealthy: {e}");
                        let health = format!(
                            "not answering ({} of {UNHEALTHY_LIMIT} checks failed): {e}",
                            *n
                        );
                        if let Ok(mut unhealthy) = state.unhealthy.lock() {
                            unhealthy.insert(node.id.clone(), health.clone());
                        }
                        let live = state.live(&node.id).unwrap_or_default();
                        let _ = state.progress.send(crate::routes::events::Progress {
                            owner: node.owner.clone(),
                            node_id: node.id.clone(),
                            block: node.block,
                            sync: node.sync.clone(),
                            health: Some(health),
                            behind_seconds: live.behind_seconds,
                            behind_blocks: live.behind_blocks,
                            peers: live.peers,
                            lagging: live.lagging,
                            at: erigolem_store::now_ms(),
                        });
                        if *n >= UNHEALTHY_LIMIT {
                            misses.remove(&node.id);
                            if let Ok(mut unhealthy) = state.unhealthy.lock() {
                                unhealthy.remove(&node.id);
                            }
                            let mut reason = format!("the node stopped answering: {e}");
                            if NodeTerms::from_backend_ref(node.backend_ref.as_ref()).auto_replace {
                                match replace(&state, &node).await {
                                    Ok(new) => {
                                        reason.push_str(&format!("; replaced by node {new}"))
                                    }
                                    Err(e) => {
                                        reason.push_str(&format!("; replacing it failed: {e}"))
                                    }
                                }
                            }
                            let _ = state
                                .transition(&node.id, NodeState::Failed, Some(&reason))
                                .await;
                            // End what is left of it (on Golem: the agreement, so paying stops).
                            let (backend, id) = (backend.clone(), node.id.clone());
                            tokio::spawn(async move {
                                let _ = backend.stop(&id).await;
                            });
                        }
                    }
                }
            }
        }
    })
}

/// After a restart: the runtimes ended with the old server process. Running nodes are started
/// again with the same instance name (so the same URL) and their stored password (so the same
/// credentials); a node that cannot come back is marked failed with the reason. A node that was
/// being stopped is stopped; one that was half-started is failed; a pending one starts now.
pub(crate) async fn recover(state: Arc<AppState>) -> Result<(), StoreError> {
    let nodes = state
        .store
        .nodes_in_states(&[
            NodeState::Pending,
            NodeState::Starting,
            NodeState::Running,
            NodeState::Stopping,
        ])
        .await?;
    for node in nodes {
        match node.state {
            NodeState::Pending => start(state.clone(), node),
            NodeState::Starting => {
                let reason = "the server restarted while the node was starting";
                state
                    .transition(&node.id, NodeState::Failed, Some(reason))
                    .await?;
            }
            NodeState::Stopping => {
                state.transition(&node.id, NodeState::Stopped, None).await?;
            }
            _ => {
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = restore(&state, &node).await {
                        tracing::error!(node = %node.id, "recovery bookkeeping failed: {e}");
                    }
                });
            }
        }
    }
    Ok(())
}

async fn restore(state: &AppState, node: &NodeRecord) -> Result<(), StoreError> {
    let Some(backend) = &state.backend else {
        return Ok(());
    };
    let password = state.store.password(&node.id, &node.owner).await?;
    if let Err(reason) = start_args(node, None) {
        let reason = format!("could not be restarted after a server restart: {reason}");
        state
            .transition(&node.id, NodeState::Failed, Some(&reason))
            .await?;
        return Ok(());
    }
    // The old server's runtimes end on their own (stdin EOF) and release the node's endpoint
    // only once they removed it; until then the new start is refused as busy.
    let deadline = Instant::now() + RECOVERY_WAIT;
    let result = loop {
        match backend
            .start(
                &node.id,
                start_args(node, password.clone()).unwrap_or_default(),
                &NodeTerms::from_backend_ref(node.backend_ref.as_ref()),
            )
            .await
        {
            Err(BackendError::InstanceBusy) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => break other,
        }
    };
    match result {
        Ok(status) => {
            tracing::info!(node = %node.id, url = %status.url, "node recovered after restart");
            record_progress(state, node, &status).await?;
            state.notify();
        }
        Err(e) => {
            let reason = format!("could not be restarted after a server restart: {e}");
            state
                .transition(&node.id, NodeState::Failed, Some(&reason))
                .await?;
        }
    }
    Ok(())
}
