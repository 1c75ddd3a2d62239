//! `GET /api/v1/events`: server-sent events with every state transition of the caller's nodes.
//! Each event's id is the transition's id: a client that reconnects with `Last-Event-ID` gets what
//! it missed, in order. Between transitions, `event: progress` carries the block height and sync
//! progress of running nodes as they are polled (no id: they are not replayed, the next one supersedes).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use futures::stream::{self, Stream};

use super::auth::AuthUser;
use crate::feed::{SubscribeError, Subscription};
use crate::{ApiError, AppState};

/// Events sent per database read; the rest follow at once.
const BATCH: i64 = 100;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new().route("/events", get(events))
}

/// A running node's latest poll, for its owner's event streams (also sent to the other
/// replicas over NOTIFY, hence serde).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Progress {
    pub(crate) owner: String,
    pub(crate) event: erigolem_api::ProgressEvent,
}

/// Server-sent events: `event: transition`, `data: {"id","node_id","state","reason","at"}`, and
/// `event: progress`, `data: {"node_id","block","sync","health","behind_seconds","behind_blocks",
/// "peers","lagging","at"}`. At most `max_streams_per_user` open at once (429
/// `too_many_streams`); a stream ends when its session is signed out or expires.
#[utoipa::path(get, path = "/api/v1/events", tag = "nodes",
    params(("Last-Event-ID" = Option<i64>, Header, description = "Resume after this transition")),
    responses((status = 200, description = "The caller's node events; each SSE `event:` is the tag of a NodeEvent, its `data:` the content", content_type = "text/event-stream", body = erigolem_api::NodeEvent),
        (status = 400, body = erigolem_api::ErrorBody), (status = 401, body = erigolem_api::ErrorBody), (status = 429, body = erigolem_api::ErrorBody)))]
pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    user: AuthUser,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let resume = match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        Some(id) => Some(id.parse::<i64>().map_err(|_| {
            ApiError::bad_request(
                erigolem_api::ErrorCode::InvalidLastEventId,
                "Last-Event-ID must be a number",
            )
        })?),
        None => None,
    };
    let sub = state
        .hub
        .subscribe(&user.address, &user.token_hash)
        .await
        .map_err(|e| match e {
            SubscribeError::TooMany(_) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                erigolem_api::ErrorCode::TooManyStreams,
                format!("{e}: close one first"),
            ),
            other => ApiError::internal(other),
        })?;
    // Resume after the last event the client saw; a new client starts with what happens next.
    let after = resume.unwrap_or(sub.sent_upto);
    let expires = tokio::time::Instant::now()
        + Duration::from_millis(
            user.expires_at
                .saturating_sub(erigolem_store::now_ms())
                .max(0) as u64,
        );
    let stream = StreamState {
        catch_up: after < sub.sent_upto,
        sub,
        store: state.store.clone(),
        owner: user.address,
        after,
        pending: VecDeque::new(),
        expires: Box::pin(tokio::time::sleep_until(expires)),
    };
    let stream = stream::unfold(stream, |mut st| async move {
        st.next().await.map(|event| (Ok(event), st))
    });
    // Often enough that the connection's idle timeout never ends a quiet stream.
    let keep_alive = (state.config.limits.idle_timeout / 3).min(Duration::from_secs(15));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(keep_alive)))
}

/// One open event stream.
struct StreamState {
    sub: Subscription,
    store: erigolem_store::Store,
    owner: String,
    /// The newest transition id sent.
    after: i64,
    /// Read the store from `after` before taking the feed again (resumed, or fell behind).
    catch_up: bool,
    pending: VecDeque<Event>,
    expires: Pin<Box<tokio::time::Sleep>>,
}

impl StreamState {
    /// The next event to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Event> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.catch_up {
                match self.store.events(&self.owner, self.after, BATCH).await {
                    Ok(batch) if !batch.is_empty() => {
                        for record in &batch {
                            self.push_transition(record);
                        }
                    }
                    Ok(_) => self.catch_up = false,
                    Err(e) => {
                        tracing::warn!("event stream: {e}");
                        return None;
                    }
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = &mut self.sub.closed => return None,
                _ = &mut self.expires => return None,
                event = self.sub.events.recv() => match event {
                    Ok(record) => self.push_transition(&record),
                    Err(RecvError::Lagged(_)) => self.catch_up = true,
                    Err(RecvError::Closed) => return None,
                },
                progress = self.sub.progress.recv() => match progress {
                    Ok(p) => {
                        if let Ok(event) = Event::default().event("progress").json_data(&p.event) {
                            self.pending.push_back(event);
                        }
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    }

    fn push_transition(&mut self, record: &erigolem_store::EventRecord) {
        if record.id <= self.after {
            return;
        }
        self.after = record.id;
        let transition = erigolem_api::TransitionEvent {
            id: record.id,
            node_id: record.node_id.clone(),
            state: record.state,
            reason: record.reason.clone(),
            at: record.at,
        };
        if let Ok(event) = Event::default()
            .event("transition")
            .id(record.id.to_string())
            .json_data(&transition)
        {
            self.pending.push_back(event);
        }
    }
}
