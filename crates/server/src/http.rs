//! The HTTP port: `/metrics` (Prometheus text format) and `/healthz` (200 while serving,
//! 503 once shutting down or when storage is poisoned).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use converge_ledger::Ledger;

use crate::metrics::Metrics;

#[derive(Clone)]
struct HttpState {
    ledger: Ledger,
    metrics: Arc<Metrics>,
    extra: Extra,
}

/// Whether a cluster node has joined and caught up.
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;
/// Appends a cluster node's replication metrics to a Prometheus text body.
pub type MetricsWriter = Arc<dyn Fn(&mut String) + Send + Sync>;

/// What a cluster node adds: its readiness and its replication metrics.
#[derive(Clone, Default)]
pub struct Extra {
    /// Whether the node has joined and caught up (`/healthz` is 503 until then).
    pub ready: Option<Readiness>,
    /// Appends replication metrics.
    pub metrics: Option<MetricsWriter>,
}

/// The routes of the HTTP port.
pub fn router(ledger: Ledger, metrics: Arc<Metrics>, extra: Extra) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .with_state(HttpState { ledger, metrics, extra })
}

async fn metrics_handler(State(state): State<HttpState>) -> impl IntoResponse {
    let mut body = state.metrics.render(&state.ledger);
    if let Some(extra) = &state.extra.metrics {
        extra(&mut body);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

async fn healthz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.ledger.is_closing() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".to_string())
    } else if let Some(err) = state.ledger.storage_poisoned() {
        (StatusCode::SERVICE_UNAVAILABLE, format!("storage unavailable: {err}\n"))
    } else if state.extra.ready.as_ref().is_some_and(|ready| !ready()) {
        (StatusCode::SERVICE_UNAVAILABLE, "not yet a caught-up cluster member\n".to_string())
    } else {
        (StatusCode::OK, "ok\n".to_string())
    }
}
