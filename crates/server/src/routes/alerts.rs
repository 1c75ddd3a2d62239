//! A node's alerts and rules (`/nodes/{id}/alerts`), and the caller's webhook they are delivered
//! to (`/me/webhook`: set, show, remove, test; its delivery log).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use erigolem_api::{
    AlertRules, DeliveryState, ErrorBody, ErrorCode, NodeAlerts, SetWebhook, Webhook,
    WebhookDelivery, WebhookEventType,
};

use super::auth::AuthUser;
use crate::{ApiError, AppState};

/// Deliveries `GET /me/webhook/deliveries` lists.
const DELIVERIES_SHOWN: i64 = 100;
/// Test events one user may send per hour: the server must not become a way to flood a URL.
pub(crate) const TESTS_PER_HOUR: i64 = 10;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/nodes/{id}/alerts", get(node_alerts).put(set_rules))
        .route(
            "/me/webhook",
            get(webhook).put(set_webhook).delete(delete_webhook),
        )
        .route("/me/webhook/test", post(test_webhook))
        .route("/me/webhook/deliveries", get(deliveries))
}

async fn alerts_of(state: &AppState, id: &str) -> Result<NodeAlerts, ApiError> {
    let recent = state
        .store
        .recent_alerts(id, crate::alerts::RECENT)
        .await?
        .iter()
        .map(crate::alerts::view)
        .collect();
    Ok(NodeAlerts {
        node_id: id.to_owned(),
        rules: state.store.alert_rules(id).await?,
        active: crate::alerts::active(state, id).await?,
        recent,
    })
}

/// The node's alert rules, its active alerts and the recent ones.
#[utoipa::path(get, path = "/api/v1/nodes/{id}/alerts", tag = "alerts",
    responses((status = 200, body = NodeAlerts), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn node_alerts(
    State(state): State<Arc<AppState>>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<NodeAlerts>, ApiError> {
    super::nodes::owned(&state, &id, &user).await?;
    Ok(Json(alerts_of(&state, &id).await?))
}

/// Sets the node's alert rules (all of them; `null` turns one off). They apply from the next
/// poll: an alert whose rule is turned off resolves then.
#[utoipa::path(put, path = "/api/v1/nodes/{id}/alerts", tag = "alerts", request_body = AlertRules,
    responses((status = 200, body = NodeAlerts), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn set_rules(
    State(state): State<Arc<AppState>>,
    user: AuthUser,
    Path(id): Path<String>,
    body: Result<Json<AlertRules>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<NodeAlerts>, ApiError> {
    let Json(rules) = body?;
    super::nodes::owned(&state, &id, &user).await?;
    let rules = rules
        .validate()
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidAlertRules, e.to_string()))?;
    state
        .store
        .set_alert_rules(&id, &rules, erigolem_store::now_ms())
        .await?;
    Ok(Json(alerts_of(&state, &id).await?))
}

fn no_webhook() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NoWebhook,
        "you have no webhook: PUT /api/v1/me/webhook sets one",
    )
}

/// The caller's webhook (never its secret).
#[utoipa::path(get, path = "/api/v1/me/webhook", tag = "alerts",
    responses((status = 200, body = Webhook), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn webhook(
    State(state): State<Arc<AppState>>,
    user: AuthUser,
) -> Result<Json<Webhook>, ApiError> {
    let hook = state
        .store
        .webhook(&user.address)
        .await?
        .ok_or_else(no_webhook)?;
    Ok(Json(Webhook {
        url: hook.url,
        secret: None,
        created_at: hook.created_at,
        secret_rotated_at: hook.secret_rotated_at,
    }))
}

/// Sets the caller's webhook URL. A new webhook (or `rotate_secret`) gets a new signing secret,
/// shown in this answer only.
#[utoipa::path(put, path = "/api/v1/me/webhook", tag = "alerts", request_body = SetWebhook,
    responses((status = 200, body = Webhook), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn set_webhook(
    State(state): State<Arc<AppState>>,
    user: AuthUser,
    body: Result<Json<SetWebhook>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Webhook>, ApiError> {
    let Json(body) = body?;
    let url = crate::webhook::check_url(&body.url, state.config.webhooks.allow_private)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidWebhookUrl, e.to_string()))?;
    let existing = state.store.webhook(&user.address).await?;
    let secret = (existing.is_none() || body.rotate_secret).then(crate::webhook::new_secret);
    let now = erigolem_store::now_ms();
    state
        .store
        .put_webhook(&user.address, url.as_str(), secret.as_deref(), now)
        .await?;
    let hook = state
        .store
        .webhook(&user.address)
        .await?
        .ok_or_else(|| ApiError::internal("the webhook just set is gone"))?;
    Ok(Json(Webhook {
        url: hook.url,
        secret,
        created_at: hook.created_at,
        secret_rotated_at: hook.secret_rotated_at,
    }))
}

/// Removes the caller's webhook; deliveries still pending give up.
#[utoipa::path(delete, path = "/api/v1/me/webhook", tag = "alerts",
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_webhook(
    State(state): State<Arc<AppState>>,
    user: AuthUser,
) -> Result<StatusCode, ApiError> {
    match state
        .store
        .delete_webhook(&user.address, erigolem_store::now_ms())
        .await?
    {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(no_webhook()),
    }
}

/// Enqueues a `test` event to the caller's webhook (see the delivery log for how it went); at
/// most 10 an hour.
#[utoipa::path(post, path = "/api/v1/me/webhook/test", tag = "alerts",
    responses((status = 202, body = WebhookDelivery), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn test_webhook(
    State(state): State<Arc<AppState>>,
    user: AuthUser,
) -> Result<(StatusCode, Json<WebhookDelivery>), ApiError> {
    let now = erigolem_store::now_ms();
    let sent = state
        .store
        .deliveries_since(
            &user.address,
            WebhookEventType::Test.as_str(),
            now - 3_600_000,
        )
        .await?;
    if sent >= TESTS_PER_HOUR {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            format!("at most {TESTS_PER_HOUR} test events an hour"),
        ));
    }
    let delivery = crate::alerts::delivery(WebhookEventType::Test, None, now);
    let id = delivery.id.clone();
    if !state
        .store
        .enqueue_delivery(&user.address, delivery, now)
        .await?
    {
        return Err(no_webhook());
    }
    state.deliveries.notify_one();
    let queued = state
        .store
        .deliveries(&user.address, DELIVERIES_SHOWN)
        .await?
        .into_iter()
        .find(|d| d.id == id)
        .ok_or_else(|| ApiError::internal("the test delivery just queued is gone"))?;
    Ok((StatusCode::ACCEPTED, Json(delivery_view(queued))))
}

fn delivery_view(d: erigolem_store::DeliveryRecord) -> WebhookDelivery {
    let state = match d.state.as_str() {
        "delivered" => DeliveryState::Delivered,
        "gave_up" => DeliveryState::GaveUp,
        _ => DeliveryState::Pending,
    };
    let event = match d.event.as_str() {
        "alert.fired" => WebhookEventType::AlertFired,
        "alert.resolved" => WebhookEventType::AlertResolved,
        _ => WebhookEventType::Test,
    };
    WebhookDelivery {
        id: d.id,
        event,
        state,
        attempts: d.attempts,
        last_status: d.last_status,
        last_error: d.last_error,
        created_at: d.created_at,
        next_attempt_at: (state == DeliveryState::Pending).then_some(d.next_attempt_at),
        delivered_at: d.delivered_at,
    }
}

/// The caller's last deliveries, newest first: attempts, the last status or error, when the next
/// attempt is due, when it was delivered.
#[utoipa::path(get, path = "/api/v1/me/webhook/deliveries", tag = "alerts",
    responses((status = 200, body = Vec<WebhookDelivery>), (status = 401, body = ErrorBody)))]
pub(crate) async fn deliveries(
    State(state): State<Arc<AppState>>,
    user: AuthUser,
) -> Result<Json<Vec<WebhookDelivery>>, ApiError> {
    Ok(Json(
        state
            .store
            .deliveries(&user.address, DELIVERIES_SHOWN)
            .await?
            .into_iter()
            .map(delivery_view)
            .collect(),
    ))
}
