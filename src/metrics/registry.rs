//! The registry and the metric families in it: each registered once, with its help text, here.

use std::sync::Arc;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::db_counters::{DbCounters, DbCountersCollector};
use super::hot_route::{HotRoute, HttpCollector};
use super::names::{
    ACCESS_TOTAL, AGENT_CACHE_LOOKUPS_TOTAL, AUDIT_SUPPRESSED_TOTAL, BUILD_INFO,
    CONNECTIONS_CLOSED_TOTAL, CONNECTIONS_OPEN, CREDENTIAL_LAST_FETCH_TIMESTAMP_SECONDS,
    DETECTION_BUCKETS, HTTP_REQUEST_DURATION_SECONDS, HTTP_REQUESTS_IN_FLIGHT, HTTP_REQUESTS_TOTAL,
    LATENCY_BUCKETS, REGION_FAILOVERS_TOTAL, ROTATION_DETECTION_SECONDS,
    SECRET_LAST_ROTATED_TIMESTAMP_SECONDS, SECRET_NEXT_ROTATION_TIMESTAMP_SECONDS,
    SECRET_ROTATION_ENABLED, SECRET_STATUS, SINK_COMMANDS_TOTAL, SINK_WRITES_TOTAL,
    TOKEN_RELOAD_FAILURES_TOTAL, UPSTREAM_BACKOFF_SECONDS, UPSTREAM_CONSECUTIVE_FAILURES,
    UPSTREAM_REQUEST_DURATION_SECONDS, UPSTREAM_REQUESTS_TOTAL, UPSTREAM_UP, WAITERS,
};
use crate::credentials::DbName;

/// Every metric of one broker, registered in its own registry; cloning shares them.
#[derive(Debug, Clone)]
pub struct Metrics(Arc<MetricSet>);

impl std::ops::Deref for Metrics {
    type Target = MetricSet;

    fn deref(&self) -> &MetricSet {
        &self.0
    }
}

#[derive(Debug)]
pub struct MetricSet {
    registry: Registry,
    pub(crate) http_requests: IntCounterVec,
    pub(crate) http_duration: HistogramVec,
    /// Requests to [`CREDENTIALS_ROUTE`], exported within the two families above.
    pub(crate) hot_route: Arc<HotRoute>,
    /// The HTTP families, for registering more hot routes.
    http: HttpCollector,
    pub(crate) http_in_flight: IntGauge,
    pub(crate) waiters: IntGauge,
    pub(crate) upstream_requests: IntCounterVec,
    pub(crate) upstream_duration: HistogramVec,
    pub(crate) last_fetch: GaugeVec,
    pub(crate) upstream_up: IntGauge,
    /// Secrets read from a fallback region while the primary failed, by region.
    pub(crate) region_failovers: IntCounterVec,
    pub(crate) upstream_backoff: GaugeVec,
    pub(crate) upstream_failures: IntGaugeVec,
    pub(crate) secret_status: IntGaugeVec,
    pub(crate) rotation_enabled: IntGaugeVec,
    pub(crate) last_rotated: GaugeVec,
    pub(crate) next_rotation: GaugeVec,
    pub(crate) rotation_detection: Histogram,
    pub(crate) access: IntCounterVec,
    pub(crate) token_reload_failures: IntCounterVec,
    pub(crate) sink_writes: IntCounterVec,
    pub(crate) sink_commands: IntCounterVec,
    pub(crate) audit_suppressed: IntCounter,
    pub(crate) connections_open: IntGaugeVec,
    pub(crate) connections_closed: IntCounterVec,
    /// Lookups of the AWS agent's API in its cache, by result (hit, stale, miss, refresh).
    pub(crate) agent_lookups: IntCounterVec,
}

/// Registers collectors in one registry; every metric name and help text passes through here.
struct Builder(Registry);

impl Builder {
    fn add<C: prometheus::core::Collector + Clone + 'static>(&self, collector: C) -> C {
        self.0
            .register(Box::new(collector.clone()))
            .expect("metric names are unique");
        collector
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.add(GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn int_gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn int_gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid metric"))
    }

    fn histograms(&self, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
        self.add(histograms(name, help, labels))
    }
}

impl Metrics {
    /// The [`HotRoute`] of another frequent route than [`CREDENTIALS_ROUTE`] (an AWS agent API
    /// route), registered on first use: its `200` answers to `GET` and its latencies are then
    /// recorded without a label lookup.
    pub(crate) fn hot_route_for(&self, template: &str) -> Arc<HotRoute> {
        self.http.hot_route(template)
    }

    #[allow(clippy::too_many_lines)] // one registration per metric, in one list
    pub fn new() -> Self {
        let b = Builder(Registry::new());
        let build_info = b.int_gauges(
            BUILD_INFO,
            "Always 1; the version label says which build runs.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let http = b.add(HttpCollector {
            requests: IntCounterVec::new(
                Opts::new(
                    HTTP_REQUESTS_TOTAL,
                    "HTTP requests answered, by route template, method and status.",
                ),
                &["route", "method", "status"],
            )
            .expect("valid metric"),
            duration: histograms(
                HTTP_REQUEST_DURATION_SECONDS,
                "Time to answer an HTTP request, by route template.",
                &["route"],
            ),
            hot: Arc::default(),
            more: Arc::default(),
        });
        Self(Arc::new(MetricSet {
            http_requests: http.requests.clone(),
            http_duration: http.duration.clone(),
            hot_route: Arc::clone(&http.hot),
            http: http.clone(),
            http_in_flight: b.int_gauge(
                HTTP_REQUESTS_IN_FLIGHT,
                "HTTP requests being answered right now, on both listeners (cache hits answered at once are not counted).",
            ),
            waiters: b.int_gauge(
                WAITERS,
                "Held requests right now: long polls waiting for a new version, and event streams.",
            ),
            upstream_requests: b.counters(
                UPSTREAM_REQUESTS_TOTAL,
                "Calls to the secret source, by operation and outcome.",
                &["operation", "outcome"],
            ),
            upstream_duration: b.histograms(
                UPSTREAM_REQUEST_DURATION_SECONDS,
                "Duration of calls to the secret source, by operation.",
                &["operation"],
            ),
            last_fetch: b.gauges(
                CREDENTIAL_LAST_FETCH_TIMESTAMP_SECONDS,
                "Unix time of the last successful fetch of a database's credentials.",
                &["db"],
            ),
            upstream_up: b.int_gauge(
                UPSTREAM_UP,
                "1 if the last call to the secret source got an answer, 0 if it timed out, failed to connect or was throttled.",
            ),
            region_failovers: b.counters(
                REGION_FAILOVERS_TOTAL,
                "Secrets read from a fallback region because the primary region failed, by the region that answered.",
                &["region"],
            ),
            upstream_backoff: b.gauges(
                UPSTREAM_BACKOFF_SECONDS,
                "Delay before the next attempt for a database whose fetches are failing; 0 when healthy.",
                &["db"],
            ),
            upstream_failures: b.int_gauges(
                UPSTREAM_CONSECUTIVE_FAILURES,
                "Consecutive failed fetches for a database; 0 when healthy.",
                &["db"],
            ),
            secret_status: b.int_gauges(
                SECRET_STATUS,
                "1 for the current MasterUserSecret.SecretStatus of an RDS database (creating, active, rotating, impaired), 0 for the others.",
                &["db", "status"],
            ),
            rotation_enabled: b.int_gauges(
                SECRET_ROTATION_ENABLED,
                "1 if Secrets Manager rotation is enabled for the database's secret (DescribeSecret).",
                &["db"],
            ),
            last_rotated: b.gauges(
                SECRET_LAST_ROTATED_TIMESTAMP_SECONDS,
                "Unix time of the secret's last rotation (DescribeSecret LastRotatedDate).",
                &["db"],
            ),
            next_rotation: b.gauges(
                SECRET_NEXT_ROTATION_TIMESTAMP_SECONDS,
                "Unix time of the secret's next scheduled rotation (DescribeSecret NextRotationDate).",
                &["db"],
            ),
            rotation_detection: b.add(
                Histogram::with_opts(
                    HistogramOpts::new(
                        ROTATION_DETECTION_SECONDS,
                        "Time from a rotation (DescribeSecret shows the current version moved; LastRotatedDate when later than the cached fetch, else that check) to the broker serving the new version.",
                    )
                    .buckets(DETECTION_BUCKETS.to_vec()),
                )
                .expect("valid metric"),
            ),
            agent_lookups: b.counters(
                AGENT_CACHE_LOOKUPS_TOTAL,
                "Requests of the AWS agent's API by how the cache answered: hit, stale (the source failing), miss (fetched), refresh (refreshNow).",
                &["result"],
            ),
            access: b.counters(
                ACCESS_TOTAL,
                "Credentials requests by client, database and result (the audit trail's counter).",
                &["client", "db", "result"],
            ),
            token_reload_failures: b.counters(
                TOKEN_RELOAD_FAILURES_TOTAL,
                "Token file reloads refused, by client and reason (unusable: unreadable or invalid; duplicate: the same token as another client's); the client kept its previous token.",
                &["client", "reason"],
            ),
            sink_writes: b.counters(
                SINK_WRITES_TOTAL,
                "Writes of credential files, by sink (its path) and result (ok; error: the file could not be written; render_error: the credentials do not fit the sink's format); a failed write is tried again.",
                &["sink", "result"],
            ),
            sink_commands: b.counters(
                SINK_COMMANDS_TOTAL,
                "Runs of sinks' on_change commands, by sink and result (ok, failed, timeout: killed at on_change_timeout, not_started); a failed run is tried again.",
                &["sink", "result"],
            ),
            audit_suppressed: b.add(
                IntCounter::new(
                    AUDIT_SUPPRESSED_TOTAL,
                    "Audit events of unauthenticated requests not written (more than 10 in a second); the access counter still counts them.",
                )
                .expect("valid metric"),
            ),
            connections_open: b.int_gauges(
                CONNECTIONS_OPEN,
                "Open connections, by listener (api, unix, admin).",
                &["listener"],
            ),
            connections_closed: b.counters(
                CONNECTIONS_CLOSED_TOTAL,
                "Connections the broker closed, by listener and reason (idle_evicted: idle, for a new one, to stay within server.max_connections; over_capacity: new, every other one busy; header_timeout: no request head within server.header_read_timeout).",
                &["listener", "reason"],
            ),
            registry: b.0,
        }))
    }

    /// Exports the per-database event counters of `dbs` (in this order) from their atomics.
    pub(crate) fn register_db_counters(&self, dbs: Vec<(DbName, Arc<DbCounters>)>) {
        self.registry
            .register(Box::new(DbCountersCollector::new(dbs)))
            .expect("metric names are unique");
    }

    /// The registry in Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into memory cannot fail");
        String::from_utf8(out).expect("text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

pub(super) fn histograms(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    HistogramVec::new(opts, labels).expect("valid metric")
}
