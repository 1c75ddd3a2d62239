//! One router per resource, composed here with the layers every request passes.

use std::sync::Arc;
use std::time::Instant;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use crate::AppState;

pub(crate) mod auth;
pub(crate) mod billing;
pub(crate) mod events;
pub(crate) mod nodes;

/// Request bodies larger than this are refused with 413: the API takes small JSON documents.
const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Erigolem API",
        description = "Ethereum nodes on demand on the Golem Network"
    ),
    paths(
        auth::nonce,
        auth::login,
        auth::logout,
        auth::me,
        nodes::networks,
        nodes::create,
        nodes::list,
        nodes::show,
        nodes::stop,
        nodes::remove,
        billing::billing
    ),
    components(schemas(
        auth::NonceResponse,
        auth::LoginRequest,
        auth::LoginResponse,
        auth::MeResponse,
        ErrorBody,
        ErrorDetail
    ))
)]
pub(crate) struct ApiDoc;

/// The error envelope, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct ErrorDetail {
    code: String,
    message: String,
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .merge(auth::router())
        .merge(nodes::router())
        .merge(billing::router())
        .merge(events::router())
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .fallback(|| async {
            crate::ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                "no such API route",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), rate_limit));
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        // Everything else is the web UI (the API's unknown paths stay JSON 404s under /api/v1).
        .fallback_service(
            Router::new()
                .fallback(erigolem_web_ui::serve)
                .layer(CompressionLayer::new()),
        )
        .layer(middleware::from_fn(record_request))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    // Nodes by state, read at scrape time so the gauge is right after a restart too.
    if let Ok(nodes) = state
        .store
        .nodes_in_states(&erigolem_store::NodeState::ALL)
        .await
    {
        for s in erigolem_store::NodeState::ALL {
            let count = nodes.iter().filter(|n| n.state == s).count();
            metrics::gauge!("erigolem_nodes", "state" => s.as_str()).set(count as f64);
        }
    }
    state.metrics.render()
}

/// Refuses API requests beyond the per-IP quota with 429 and the error envelope.
async fn rate_limit(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if state.limiter.check_key(&peer.ip()).is_err() {
        return crate::ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests: slow down",
        )
        .into_response();
    }
    next.run(request).await
}

/// Counts requests and their latency by route template (not raw path: bounded label values).
async fn record_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("erigolem_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("erigolem_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
