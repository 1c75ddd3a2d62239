//! `GET /api/v1/events`: server-sent events with every state transition of the caller's nodes.
//! Each event's id is the transition's id: a client that reconnects with `Last-Event-ID` gets what
//! it missed, in order. Between transitions, `event: progress` carries the block height and sync
//! progress of running nodes as they are polled (no id: they are not replayed, the next one supersedes).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use futures::stream::{self, Stream};

use super::auth::AuthUser;
use crate::{ApiError, AppState};

/// Events sent per database read; the rest follow at once.
const BATCH: i64 = 100;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new().route("/events", get(events))
}

/// A running node's latest block height and sync progress, for its owner's event streams.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Progress {
    #[serde(skip)]
    pub(crate) owner: String,
    pub(crate) node_id: String,
    pub(crate) block: Option<i64>,
    pub(crate) sync: Option<serde_json::Value>,
    /// Why the node is unhealthy (its STATUS polls fail), or null when it answers.
    pub(crate) health: Option<String>,
    /// Age of the node's head block in seconds.
    pub(crate) behind_seconds: Option<u64>,
    /// Blocks between the node's head and the network's (while it syncs).
    pub(crate) behind_blocks: Option<u64>,
    pub(crate) peers: Option<u64>,
    /// More than the server's thresholds behind (`--lag-blocks`, `--lag-seconds`).
    pub(crate) lagging: bool,
    /// Unix milliseconds.
    pub(crate) at: i64,
}

/// Server-sent events: `event: transition`, `data: {"id","node_id","state","reason","at"}`, and
/// `event: progress`, `data: {"node_id","block","sync","health","behind_seconds","behind_blocks",
/// "peers","lagging","at"}`.
#[utoipa::path(get, path = "/api/v1/events", tag = "nodes",
    responses((status = 200, description = "text/event-stream of the caller's node transitions"), (status = 401, body = super::ErrorBody)))]
pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    user: AuthUser,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Resume after the last event the client saw; a new client starts with what happens next.
    let after = match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        Some(id) => id.parse::<i64>().map_err(|_| {
            ApiError::bad_request("invalid_last_event_id", "Last-Event-ID must be a number")
        })?,
        None => latest_id(&state, &user.address).await?,
    };
    let changes = state.changes.subscribe();
    let progress = progress_stream(state.progress.subscribe(), user.address.clone());
    let transitions = stream::unfold(
        (state, user.address, after, changes, Vec::new()),
        |(state, owner, mut after, mut changes, mut pending)| async move {
            loop {
                if let Some(event) = pending.pop() {
                    return Some((Ok(event), (state, owner, after, changes, pending)));
                }
                match state.store.events(&owner, after, BATCH).await {
                    Ok(batch) if !batch.is_empty() => {
                        for record in &batch {
                            after = after.max(record.id);
                        }
                        // Popped from the end: reverse so they go out oldest first.
                        pending = batch
                            .iter()
                            .rev()
                            .filter_map(|r| {
                                Event::default()
                                    .event("transition")
                                    .id(r.id.to_string())
                                    .json_data(r)
                                    .ok()
                            })
                            .collect();
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("event stream: {e}"),
                }
                // Wait for the next transition (or re-check now and then, e.g. after a missed wake-up).
                let _ = tokio::time::timeout(Duration::from_secs(5), changes.changed()).await;
            }
        },
    );
    let stream = stream::select(transitions, progress);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The owner's progress updates; a lagging stream skips what it missed (each update supersedes the last).
fn progress_stream(
    rx: tokio::sync::broadcast::Receiver<Progress>,
    owner: String,
) -> impl Stream<Item = Result<Event, Infallible>> {
    use tokio::sync::broadcast::error::RecvError;
    stream::unfold((rx, owner), |(mut rx, owner)| async move {
        loop {
            match rx.recv().await {
                Ok(p) if p.owner == owner => {
                    if let Ok(event) = Event::default().event("progress").json_data(&p) {
                        return Some((Ok(event), (rx, owner)));
                    }
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    })
}

async fn latest_id(state: &AppState, owner: &str) -> Result<i64, ApiError> {
    let mut after = 0;
    loop {
        let batch = state.store.events(owner, after, 1000).await?;
        match batch.last() {
            Some(last) => after = last.id,
            None => return Ok(after),
        }
    }
}
