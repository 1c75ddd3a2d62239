//! One router per resource, composed here with the layers every request passes.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use crate::AppState;

pub(crate) mod alerts;
pub(crate) mod auth;
pub(crate) mod billing;
pub(crate) mod events;
pub(crate) mod nodes;

/// Request bodies larger than this are refused with 413: the API takes small JSON documents.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The API's OpenAPI document: every route, its bodies, events and error codes, from the types
/// of `erigolem-api`. Committed as `docs/openapi.json` (the UI's types are generated from it);
/// `openapi_document_is_committed` fails when the two differ.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Erigolem API",
        description = "Ethereum nodes on demand on the Golem Network. Errors are `{\"error\":{\"code\",\"message\"}}` with `code` one of `ErrorCode`."
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
        nodes::rotate,
        nodes::usage,
        nodes::logs,
        billing::billing,
        events::events,
        alerts::node_alerts,
        alerts::set_rules,
        alerts::webhook,
        alerts::set_webhook,
        alerts::delete_webhook,
        alerts::test_webhook,
        alerts::deliveries
    ),
    components(schemas(
        erigolem_api::ErrorBody,
        erigolem_api::ErrorCode,
        erigolem_api::NodeEvent,
        erigolem_api::TransitionEvent,
        erigolem_api::ProgressEvent,
        erigolem_api::WebhookEvent
    ))
)]
pub(crate) struct ApiDoc;

/// The OpenAPI document as the server serves it (and as `docs/openapi.json` holds it).
pub fn openapi_json() -> String {
    let mut text = ApiDoc::openapi().to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .merge(auth::router())
        .merge(nodes::router())
        .merge(billing::router())
        .merge(events::router())
        .merge(alerts::router())
        .route("/openapi.json", get(openapi))
        .fallback(|| async {
            crate::ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                erigolem_api::ErrorCode::NotFound,
                "no such API route",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), rate_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::security::check_host_and_origin,
        ));
    let mut app = Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(healthz));
    // With a listener of its own, /metrics is served there only (here: 404, not the web UI).
    app = match state.config.metrics.listen {
        None => app.merge(metrics_router(state.clone())),
        Some(_) => app.route(
            "/metrics",
            get(|| async { axum::http::StatusCode::NOT_FOUND }),
        ),
    };
    app
        // Everything else is the web UI (the API's unknown paths stay JSON 404s under /api/v1).
        .fallback_service(
            Router::new()
                .fallback(erigolem_web_ui::serve)
                .layer(CompressionLayer::new()),
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::security::client_ip,
        ))
        .layer(middleware::from_fn(record_request))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::security::security_headers,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The OpenAPI document, built once (building it costs milliseconds: not on every request).
async fn openapi() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(openapi_json);
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        doc.as_str(),
    )
        .into_response()
}

/// This replica: its id, backend and database, and the nodes it controls (their leases: since
/// when, at which epoch; its STATUS polls of them). In memory only, never the database: it
/// answers at once under load. Node ids only with the metrics token when one is set.
async fn healthz(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> Json<serde_json::Value> {
    let polls = state.leases.polls();
    let held = state.leases.held();
    let shown = match &state.config.metrics.token {
        None => true,
        Some(token) => headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| erigolem_auth::hash_token(t) == erigolem_auth::hash_token(token)),
    };
    let mut body = serde_json::json!({
        "status": "ok",
        "replica": state.leases.me,
        "backend": state.backend_name(),
        "database": state.store.backend_name(),
        "held": held.len(),
    });
    if shown {
        let poll = |id: &str| polls.get(id).copied().unwrap_or((0, 0));
        body["nodes"] = held
            .iter()
            .map(|(id, h)| {
                let (n, last) = poll(id);
                serde_json::json!({"id": id, "epoch": h.epoch, "since": h.since, "polls": n, "last_poll": last})
            })
            .collect();
        body["polled"] = polls
            .iter()
            .map(|(id, (n, last))| {
                (
                    id.clone(),
                    serde_json::json!({"polls": n, "last_poll": last}),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    Json(body)
}

/// `/metrics` (behind the bearer token if one is set), and `/healthz`: what a metrics listener
/// of its own serves.
pub(crate) fn metrics_router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(state, metrics_token))
}

pub(crate) fn metrics_only(state: Arc<AppState>) -> Router {
    metrics_router(state.clone())
        .route("/healthz", get(healthz))
        .layer(middleware::from_fn(record_request))
        .with_state(state)
}

/// Refuses `/metrics` without the configured bearer token.
async fn metrics_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.config.metrics.token {
        let given = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Compared as digests: the comparison's time says nothing about the token.
        if erigolem_auth::hash_token(given) != erigolem_auth::hash_token(token) {
            return crate::ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                erigolem_api::ErrorCode::Unauthorized,
                "/metrics needs the metrics bearer token",
            )
            .into_response();
        }
    }
    next.run(request).await
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    // Nodes by state, counted by the database at scrape time (right after a restart too).
    match state.store.count_by_state().await {
        Ok(counts) => {
            for (s, n) in counts {
                metrics::gauge!("erigolem_nodes", "state" => s.as_str()).set(n as f64);
            }
        }
        Err(e) => tracing::warn!("metrics: counting nodes: {e}"),
    }
    metrics::gauge!("erigolem_rate_limiter_clients").set(state.limiter.len() as f64);
    let mut text = state.metrics.render();
    text.push_str(&node_series(&state));
    text
}

/// Per-node series of the running nodes this server polls: their endpoints' cumulative
/// counters (as the runtime reports them: a runtime restart resets them, as Prometheus
/// expects of counters) and height and lag. Labels are bounded: a node id, and a method name of
/// the runtime's top list (at most 20 + `other`; a name that is not a plain JSON-RPC method
/// name is counted as `other`, since a provider writes these). A node no longer running drops
/// out at once.
fn node_series(state: &AppState) -> String {
    use std::fmt::Write as _;
    let valid = |m: &str| {
        !m.is_empty() && m.len() <= 64 && m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    let usage = state
        .usage_cursors
        .lock()
        .map(|c| c.clone())
        .unwrap_or_default();
    let live = state.live.lock().map(|l| l.clone()).unwrap_or_default();
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>| {
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    let mut ids: Vec<&String> = usage.keys().collect();
    ids.sort();
    let mut requests = Vec::new();
    let (mut errors, mut refused, mut bytes) = (Vec::new(), Vec::new(), Vec::new());
    for id in &ids {
        let (u, _) = &usage[*id];
        let mut methods: std::collections::BTreeMap<&str, u64> = Default::default();
        for (m, n) in &u.methods {
            let m = if valid(m) {
                m.as_str()
            } else {
                erigolem_primitives::OTHER_METHODS
            };
            *methods.entry(m).or_default() += n;
        }
        for (m, n) in methods
            .into_iter()
            .take(erigolem_primitives::TOP_METHODS + 1)
        {
            requests.push((format!("node=\"{id}\",method=\"{m}\""), n));
        }
        errors.push((format!("node=\"{id}\""), u.errors));
        refused.push((format!("node=\"{id}\""), u.refused.total()));
        bytes.push((format!("node=\"{id}\",direction=\"in\""), u.bytes_in));
        bytes.push((format!("node=\"{id}\",direction=\"out\""), u.bytes_out));
    }
    family(
        "erigolem_node_requests_total",
        "counter",
        "JSON-RPC calls a node's endpoint answered, by method",
        requests,
    );
    family(
        "erigolem_node_errors_total",
        "counter",
        "Calls a node answered with an error, or did not answer",
        errors,
    );
    family(
        "erigolem_node_refused_total",
        "counter",
        "Calls a node's endpoint refused (credentials, methods, limits, allowlists)",
        refused,
    );
    family(
        "erigolem_node_bytes_total",
        "counter",
        "Body bytes through a node's endpoint",
        bytes,
    );
    let mut ids: Vec<&String> = live.keys().collect();
    ids.sort();
    let rows = |f: &dyn Fn(&crate::lag::LiveStatus) -> Option<u64>| {
        ids.iter()
            .filter_map(|id| f(&live[*id]).map(|v| (format!("node=\"{id}\""), v)))
            .collect::<Vec<_>>()
    };
    family(
        "erigolem_node_behind_blocks",
        "gauge",
        "Blocks between a node's head and the network's",
        rows(&|l| l.behind_blocks),
    );
    family(
        "erigolem_node_behind_seconds",
        "gauge",
        "Age of a node's head block in seconds",
        rows(&|l| l.behind_seconds),
    );
    out
}

/// Refuses API requests beyond the per-client quota with 429 and the error envelope.
async fn rate_limit(
    State(state): State<Arc<AppState>>,
    Extension(client): Extension<crate::security::ClientIp>,
    request: Request,
    next: Next,
) -> Response {
    if state.limiter.check_key(&client.key()).is_err() {
        return crate::ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            erigolem_api::ErrorCode::RateLimited,
            "too many requests: slow down",
        )
        .into_response();
    }
    next.run(request).await
}

/// The method as a metric label: the standard ones by name, anything else `other` (any token is
/// a valid HTTP method, so raw names would let a client mint series without end).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts requests and their latency by route template (never the raw path) and method label:
/// label values come from fixed sets, so the number of series is bounded.
async fn record_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("erigolem_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("erigolem_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// The committed contract is the server's: a field added to an API type without running
    /// `bash scripts/api-types.sh` fails here (and `scripts/api-types.sh --check` in CI fails on
    /// the UI's generated types).
    #[test]
    fn openapi_document_is_committed() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let committed = std::fs::read_to_string(path).unwrap();
        assert!(
            committed == super::openapi_json(),
            "docs/openapi.json differs from the server's API types: run `bash scripts/api-types.sh` and commit both files"
        );
    }

    #[test]
    fn the_document_has_every_route_and_enums_as_enums() {
        let doc: serde_json::Value = serde_json::from_str(&super::openapi_json()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/api/v1/auth/nonce",
            "/api/v1/auth/login",
            "/api/v1/auth/logout",
            "/api/v1/me",
            "/api/v1/networks",
            "/api/v1/nodes",
            "/api/v1/nodes/{id}",
            "/api/v1/nodes/{id}/stop",
            "/api/v1/nodes/{id}/credentials/rotate",
            "/api/v1/nodes/{id}/usage",
            "/api/v1/nodes/{id}/logs",
            "/api/v1/billing",
            "/api/v1/events",
            "/api/v1/nodes/{id}/alerts",
            "/api/v1/me/webhook",
            "/api/v1/me/webhook/test",
            "/api/v1/me/webhook/deliveries",
        ] {
            assert!(paths.contains_key(path), "{path} missing from the document");
        }
        let schemas = &doc["components"]["schemas"];
        for (name, values) in [
            (
                "NodeState",
                erigolem_lifecycle::NodeState::ALL
                    .map(|s| s.as_str())
                    .to_vec(),
            ),
            (
                "Network",
                erigolem_primitives::Network::ALL
                    .map(|n| n.as_str())
                    .to_vec(),
            ),
            (
                "Prune",
                erigolem_primitives::Prune::ALL.map(|p| p.as_str()).to_vec(),
            ),
            (
                "ErrorCode",
                erigolem_api::ErrorCode::ALL
                    .iter()
                    .map(|c| c.as_str())
                    .collect(),
            ),
        ] {
            let listed: Vec<&str> = schemas[name]["enum"]
                .as_array()
                .unwrap_or_else(|| panic!("{name} is not an enum in the document"))
                .iter()
                .filter_map(|v| v.as_str())
                .collect();
            assert_eq!(listed, values, "{name}");
        }
        // Every error answer's code is an ErrorCode.
        assert_eq!(
            schemas["ErrorDetail"]["properties"]["code"]["$ref"],
            "#/components/schemas/ErrorCode"
        );
    }
}
