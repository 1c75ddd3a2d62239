//! Periodic clean-up, so that what strangers can make the server store stays bounded: expired
//! nonces, expired and revoked sessions, events past their retention, usage steps past their tier's
//! span (of nodes no longer polled), resolved alerts and finished webhook deliveries past the
//! event retention, and rate-limiter entries of
//! clients whose quota has refilled. Every step is an idempotent delete, so several servers on
//! one database may run it at once.

use std::sync::Arc;

use crate::AppState;

pub(crate) fn spawn(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.config.purge_interval);
        loop {
            tick.tick().await;
            purge(&state).await;
        }
    })
}

async fn purge(state: &AppState) {
    let now = erigolem_store::now_ms();
    let retention = i64::try_from(state.config.event_retention.as_millis()).unwrap_or(i64::MAX);
    match state.store.purge(now, now.saturating_sub(retention)).await {
        Ok(purged) => {
            for (table, rows) in [
                ("nonces", purged.nonces),
                ("sessions", purged.sessions),
                ("node_events", purged.events),
            ] {
                metrics::counter!("erigolem_purged_rows_total", "table" => table).increment(rows);
            }
            if purged != erigolem_store::Purged::default() {
                tracing::debug!(?purged, "purged expired rows");
            }
        }
        Err(e) => tracing::warn!("purge: {e}"),
    }
    match state.store.purge_usage(now).await {
        Ok(rows) => metrics::counter!("erigolem_purged_rows_total", "table" => "usage_samples")
            .increment(rows),
        Err(e) => tracing::warn!("purge usage: {e}"),
    }
    match state
        .store
        .purge_alerts(now.saturating_sub(retention))
        .await
    {
        Ok(rows) => {
            metrics::counter!("erigolem_purged_rows_total", "table" => "alerts").increment(rows)
        }
        Err(e) => tracing::warn!("purge alerts: {e}"),
    }
    state.limiter.retain_recent();
    state.limiter.shrink_to_fit();
}
