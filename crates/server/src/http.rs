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
}

/// The routes of the HTTP port.
pub fn router(ledger: Ledger, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .with_state(HttpState { ledger, metrics })
}

async fn metrics_handler(State(state): State<HttpState>) -> impl IntoResponse {
    let body = state.metrics.render(&state.ledger);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

async fn healthz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.ledger.is_closing() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".to_string())
    } else if let Some(err) = state.ledger.storage_poisoned() {
        (StatusCode::SERVICE_UNAVAILABLE, format!("storage unavailable: {err}\n"))
    } else {
        (StatusCode::OK, "ok\n".to_string())
    }
}
