//! Handlers of the admin listener: liveness, readiness, the operator's status of every
//! database, and Prometheus metrics.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::broker::{Broker, DbCondition, DbStatus};
use crate::metrics::Metrics;
use crate::sink::Sink;

/// What readiness looks at: the broker's databases and, when they count, the credential files.
#[derive(Debug, Clone)]
pub(crate) struct ReadyState {
    pub broker: Arc<Broker>,
    /// The sinks readiness waits for (none when `server.sinks_required_for_ready` is false).
    pub sinks: Arc<[Arc<Sink>]>,
}

pub(crate) async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// 200 once every database was fetched (`degraded` lists RDS databases whose secret is
/// impaired but still served) and every sink that counts holds the version served, else 503
/// with the databases not fetched yet and the sinks not current.
pub(crate) async fn readyz(State(ready): State<ReadyState>) -> Response {
    let readiness = ready.broker.readiness();
    let sinks_not_ready: Vec<&str> = ready
        .sinks
        .iter()
        .filter(|sink| !sink.is_current())
        .map(|sink| sink.name())
        .collect();
    let names = |list: &[&crate::credentials::DbName]| -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    };
    let (status, word) = match (
        readiness.not_ready.is_empty() && sinks_not_ready.is_empty(),
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
            "sinks_not_ready": sinks_not_ready,
        })),
    )
        .into_response()
}

/// Every database's state, version, age, rotation dates and failures, sorted by name, with no
/// secret; `all_fresh` says whether every one is fresh.
pub(crate) async fn status(State(ready): State<ReadyState>) -> Response {
    let all = ready.broker.status();
    let all_fresh = all.iter().all(|db| db.condition == DbCondition::Fresh);
    let databases: Vec<Value> = all.iter().map(status_json).collect();
    Json(json!({ "all_fresh": all_fresh, "databases": databases })).into_response()
}

fn status_json(db: &DbStatus) -> Value {
    let time =
        |at: Option<SystemTime>| at.map(|at| humantime::format_rfc3339_seconds(at).to_string());
    json!({
        "db": db.db.as_str(),
        "state": db.condition.name(),
        "version_id": db.version_id,
        "fetched_at": time(db.fetched_at),
        "age_seconds": db.age.map(|age| (age.as_secs_f64() * 1000.0).round() / 1000.0),
        "auth": db.auth.map(crate::credentials::Auth::name),
        "region": db.region,
        "expires_at": time(db.expires_at),
        "secret_status": db.secret_status,
        "last_rotated": time(db.last_rotated),
        "next_rotation": time(db.next_rotation),
        "consecutive_failures": db.consecutive_failures,
        "next_retry_at": time(db.next_retry),
    })
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
