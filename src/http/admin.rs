//! Handlers of the admin listener: liveness, readiness and Prometheus metrics.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::broker::Broker;
use crate::metrics::Metrics;

pub(crate) async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

pub(crate) async fn readyz(State(broker): State<Arc<Broker>>) -> Response {
    let not_ready = broker.not_ready();
    if not_ready.is_empty() {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        let names: Vec<&str> = not_ready.iter().map(|n| n.as_str()).collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "not_ready": names })),
        )
            .into_response()
    }
}

pub(crate) async fn metrics(State(metrics): State<Metrics>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        metrics.render(),
    )
        .into_response()
}
