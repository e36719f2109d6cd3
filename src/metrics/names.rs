//! Every metric name the broker exports, in one place, and what the families share (the latency
//! buckets, label pairs). Labels are bounded: route templates, configured database names, fixed
//! outcome words.

use prometheus::proto;

pub const HTTP_REQUESTS_TOTAL: &str = "credential_broker_http_requests_total";
pub const HTTP_REQUESTS_IN_FLIGHT: &str = "credential_broker_http_requests_in_flight";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "credential_broker_http_request_duration_seconds";
pub const CACHE_LOOKUPS_TOTAL: &str = "credential_broker_cache_lookups_total";
pub const UPSTREAM_REQUESTS_TOTAL: &str = "credential_broker_upstream_requests_total";
pub const UPSTREAM_REQUEST_DURATION_SECONDS: &str =
    "credential_broker_upstream_request_duration_seconds";
pub const CREDENTIAL_LAST_FETCH_TIMESTAMP_SECONDS: &str =
    "credential_broker_credential_last_fetch_timestamp_seconds";
pub const BUILD_INFO: &str = "credential_broker_build_info";
pub const STALE_SERVED_TOTAL: &str = "credential_broker_stale_served_total";
pub const UPSTREAM_UP: &str = "credential_broker_upstream_up";
pub const REGION_FAILOVERS_TOTAL: &str = "credential_broker_region_failovers_total";
pub const UPSTREAM_BACKOFF_SECONDS: &str = "credential_broker_upstream_backoff_seconds";
pub const UPSTREAM_CONSECUTIVE_FAILURES: &str = "credential_broker_upstream_consecutive_failures";
pub const SECRET_STATUS: &str = "credential_broker_secret_status";
pub const CREDENTIAL_ROTATIONS_TOTAL: &str = "credential_broker_credential_rotations_total";
pub const SECRET_ROTATION_ENABLED: &str = "credential_broker_secret_rotation_enabled";
pub const SECRET_LAST_ROTATED_TIMESTAMP_SECONDS: &str =
    "credential_broker_secret_last_rotated_timestamp_seconds";
pub const SECRET_NEXT_ROTATION_TIMESTAMP_SECONDS: &str =
    "credential_broker_secret_next_rotation_timestamp_seconds";
pub const DATABASE_DELETED_TOTAL: &str = "credential_broker_database_deleted_total";
pub const CREDENTIALS_EXPIRED_TOTAL: &str = "credential_broker_credentials_expired_total";
pub const ACCESS_TOTAL: &str = "credential_broker_access_total";
pub const TOKEN_RELOAD_FAILURES_TOTAL: &str = "credential_broker_token_reload_failures_total";
pub const AUDIT_SUPPRESSED_TOTAL: &str = "credential_broker_audit_suppressed_total";
pub const CONNECTIONS_OPEN: &str = "credential_broker_connections_open";
pub const CONNECTIONS_CLOSED_TOTAL: &str = "credential_broker_connections_closed_total";
pub const WAITERS: &str = "credential_broker_waiters";
pub const ROTATION_DETECTION_SECONDS: &str = "credential_broker_rotation_detection_seconds";
pub const SINK_WRITES_TOTAL: &str = "credential_broker_sink_writes_total";
pub const SINK_COMMANDS_TOTAL: &str = "credential_broker_sink_commands_total";
pub const AGENT_CACHE_LOOKUPS_TOTAL: &str = "credential_broker_agent_cache_lookups_total";
pub const MALFORMED_SECRET_TOTAL: &str = "credential_broker_malformed_secret_total";
/// The route template of credential reads, the API's most frequent request, whose count and
/// latency are recorded in [`HotRoute`].
pub const CREDENTIALS_ROUTE: &str = "/credentials/{db}";

pub(super) const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// From a rotation (the current version moving) to the broker serving the new version: seconds
/// within a rotation window, up to `rotation.describe_interval` (1 h by default) outside one.
pub(super) const DETECTION_BUCKETS: [f64; 13] = [
    1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

pub(super) fn label(name: &str, value: &str) -> proto::LabelPair {
    let mut pair = proto::LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}
