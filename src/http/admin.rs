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

/// 200 once every database was fetched (`degraded` lists RDS databases whose secret is
/// impaired but still served), else 503 with the databases not fetched yet.
pub(crate) async fn readyz(State(broker): State<Arc<Broker>>) -> Response {
    let readiness = broker.readiness();
    let names = |list: &[&crate::credentials::DbName]| -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    };
    let (status, word) = match (
        readiness.not_ready.is_empty(),
        readiness.degraded.is_empty(),
    ) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
        (true, false) => (StatusCode::OK, "degraded"),
        (true, true) => (StatusCode::OK, "ready"),
    };
    (
        status,
        Json(json!({
            "status": word,
            "not_ready": names(&readiness.not_ready),
            "degraded": names(&readiness.degraded),
        })),
    )
        .into_response()
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
