//! The Prometheus registry and every metric the broker exports, with their names in one place.
//! Labels are bounded: route templates, configured database names, fixed outcome words.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

use crate::credentials::DbName;

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
pub const MALFORMED_SECRET_TOTAL: &str = "credential_broker_malformed_secret_total";

/// The route template of credential reads, the API's most frequent request, whose count and
/// latency are recorded in [`HotRoute`].
pub const CREDENTIALS_ROUTE: &str = "/credentials/{db}";

const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

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
    pub(crate) http_in_flight: IntGauge,
    pub(crate) upstream_requests: IntCounterVec,
    pub(crate) upstream_duration: HistogramVec,
    pub(crate) last_fetch: GaugeVec,
    pub(crate) upstream_up: IntGauge,
    pub(crate) upstream_backoff: GaugeVec,
    pub(crate) upstream_failures: IntGaugeVec,
    pub(crate) secret_status: IntGaugeVec,
    pub(crate) rotation_enabled: IntGaugeVec,
    pub(crate) last_rotated: GaugeVec,
    pub(crate) next_rotation: GaugeVec,
    pub(crate) access: IntCounterVec,
    pub(crate) token_reload_failures: IntCounterVec,
    pub(crate) audit_suppressed: IntCounter,
    pub(crate) connections_open: IntGaugeVec,
    pub(crate) connections_closed: IntCounterVec,
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
        });
        Self(Arc::new(MetricSet {
            http_requests: http.requests,
            http_duration: http.duration,
            hot_route: http.hot,
            http_in_flight: b.int_gauge(
                HTTP_REQUESTS_IN_FLIGHT,
                "HTTP requests being answered right now, on both listeners.",
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
                "Connections the broker closed to stay within server.max_connections, by listener and reason (idle_evicted: idle, for a new one; over_capacity: new, every other one busy).",
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

fn histograms(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    HistogramVec::new(opts, labels).expect("valid metric")
}

/// Shards of [`HotRoute`]: enough that the worker threads of a sidecar rarely share one.
pub(crate) const SHARDS: usize = 16;

/// The answers to [`CREDENTIALS_ROUTE`], counted in per-thread shards so that two worker
/// threads never write to the same cache line (a prometheus histogram is four atomic writes to
/// shared lines per observation). Exported, summed, as the route's series of
/// `http_request_duration_seconds` and as `http_requests_total{method="GET",status="200"}`.
#[derive(Debug)]
pub(crate) struct HotRoute {
    shards: Box<[Shard]>,
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    /// `GET` requests answered `200`.
    ok: AtomicU64,
    /// Observations per latency bucket: at most its bound, above the bound before it.
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Default for HotRoute {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

impl HotRoute {
    /// Records one answer that took `elapsed`; `ok` for a `200` to a `GET`.
    pub(crate) fn record(&self, elapsed: Duration, ok: bool) {
        let shard = &self.shards[shard_index()];
        if ok {
            shard.ok.fetch_add(1, Ordering::Relaxed);
        }
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = LATENCY_BUCKETS.iter().position(|bound| seconds <= *bound) {
            shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        shard.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        shard.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The `200` count and the latency histogram, summed over the shards.
    fn totals(&self) -> (u64, proto::Histogram) {
        let sum = |field: fn(&Shard) -> &AtomicU64| -> u64 {
            self.shards
                .iter()
                .map(|shard| field(shard).load(Ordering::Relaxed))
                .sum()
        };
        let mut histogram = proto::Histogram::default();
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len());
        for (index, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self
                .shards
                .iter()
                .map(|shard| shard.buckets[index].load(Ordering::Relaxed))
                .sum::<u64>();
            let mut bucket = proto::Bucket::default();
            bucket.set_upper_bound(*bound);
            bucket.set_cumulative_count(cumulative);
            buckets.push(bucket);
        }
        histogram.set_bucket(buckets);
        histogram.set_sample_count(sum(|shard| &shard.count));
        #[allow(clippy::cast_precision_loss)] // nanoseconds: exact below 104 days in total
        histogram.set_sample_sum(sum(|shard| &shard.sum_nanos) as f64 / 1e9);
        (sum(|shard| &shard.ok), histogram)
    }
}

/// This thread's shard (of [`HotRoute`], of the audit buffers), below [`SHARDS`], assigned
/// round robin on first use: threads serving requests on different cores write to different
/// cache lines.
pub(crate) fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|index| *index)
}

/// `http_requests_total` and `http_request_duration_seconds`: the prometheus vectors, with the
/// [`HotRoute`] series added at scrape time.
#[derive(Debug, Clone)]
struct HttpCollector {
    requests: IntCounterVec,
    duration: HistogramVec,
    hot: Arc<HotRoute>,
}

impl Collector for HttpCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.requests.desc();
        descs.extend(self.duration.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut requests = self.requests.collect();
        let mut duration = self.duration.collect();
        let (ok, histogram) = self.hot.totals();
        if ok > 0 {
            let mut counter = proto::Counter::default();
            #[allow(clippy::cast_precision_loss)] // exact below 2^53 requests
            counter.set_value(ok as f64);
            let mut metric = proto::Metric::from_label(vec![
                label("method", "GET"),
                label("route", CREDENTIALS_ROUTE),
                label("status", "200"),
            ]);
            metric.set_counter(counter);
            requests[0].mut_metric().push(metric);
        }
        if histogram.get_sample_count() > 0 {
            let mut metric = proto::Metric::from_label(vec![label("route", CREDENTIALS_ROUTE)]);
            metric.set_histogram(histogram);
            duration[0].mut_metric().push(metric);
        }
        requests.extend(duration);
        requests
    }
}

/// Event counters of one database, as plain atomics: with a thousand databases, prometheus
/// child series (each holding its own copy of the metric's descriptor) would cost about 5 KB per
/// database; these cost 56 bytes and are turned into series only when `/metrics` is scraped.
/// Every database's counters are exported from the start, at 0 until something happens, so
/// that `increase()` sees the first event.
#[derive(Debug, Default)]
pub(crate) struct DbCounters {
    pub(crate) hits: AtomicU64,
    pub(crate) stale_lookups: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) stale_served: AtomicU64,
    pub(crate) rotations: AtomicU64,
    pub(crate) deleted: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) malformed: AtomicU64,
}

impl DbCounters {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One series of every database, exported from [`DbCounters`].
struct DbSeries {
    name: &'static str,
    help: &'static str,
    /// A second label and its value, besides `db`.
    extra: Option<(&'static str, &'static str)>,
    counter: fn(&DbCounters) -> &AtomicU64,
}

const DB_COUNTER_SERIES: &[DbSeries] = &[
    DbSeries {
        name: CACHE_LOOKUPS_TOTAL,
        help: LOOKUPS_HELP,
        extra: Some(("result", "hit")),
        counter: |c| &c.hits,
    },
    DbSeries {
        name: CACHE_LOOKUPS_TOTAL,
        help: LOOKUPS_HELP,
        extra: Some(("result", "stale")),
        counter: |c| &c.stale_lookups,
    },
    DbSeries {
        name: CACHE_LOOKUPS_TOTAL,
        help: LOOKUPS_HELP,
        extra: Some(("result", "miss")),
        counter: |c| &c.misses,
    },
    DbSeries {
        name: STALE_SERVED_TOTAL,
        help: "Responses that served credentials past their TTL because the source failed.",
        extra: None,
        counter: |c| &c.stale_served,
    },
    DbSeries {
        name: CREDENTIAL_ROTATIONS_TOTAL,
        help: "Version changes of a database's credentials observed by the broker.",
        extra: None,
        counter: |c| &c.rotations,
    },
    DbSeries {
        name: DATABASE_DELETED_TOTAL,
        help: "Times the broker found a database's RDS instance or cluster deleted.",
        extra: None,
        counter: |c| &c.deleted,
    },
    DbSeries {
        name: CREDENTIALS_EXPIRED_TOTAL,
        help: "Requests answered 503 credentials_expired: the source failed past max_stale.",
        extra: None,
        counter: |c| &c.expired,
    },
    DbSeries {
        name: MALFORMED_SECRET_TOTAL,
        help: "Fetches whose secret value was not usable credentials; the last good ones stayed served, marked stale.",
        extra: None,
        counter: |c| &c.malformed,
    },
];

const LOOKUPS_HELP: &str = "Credential cache lookups by database and result (hit, stale, miss).";

#[derive(Debug)]
struct DbCountersCollector {
    descs: Vec<Desc>,
    dbs: Vec<(DbName, Arc<DbCounters>)>,
}

impl DbCountersCollector {
    fn new(dbs: Vec<(DbName, Arc<DbCounters>)>) -> Self {
        let mut descs: Vec<Desc> = Vec::new();
        for series in DB_COUNTER_SERIES {
            if descs.iter().all(|d| d.fq_name != series.name) {
                let mut labels = vec!["db".to_owned()];
                labels.extend(series.extra.map(|(label, _)| label.to_owned()));
                descs.push(
                    Desc::new(
                        series.name.to_owned(),
                        series.help.to_owned(),
                        labels,
                        HashMap::new(),
                    )
                    .expect("valid metric"),
                );
            }
        }
        Self { descs, dbs }
    }
}

impl Collector for DbCountersCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families: Vec<MetricFamily> = Vec::new();
        for series in DB_COUNTER_SERIES {
            let index = families
                .iter()
                .position(|f| f.name() == series.name)
                .unwrap_or_else(|| {
                    let mut family = MetricFamily::default();
                    family.set_name(series.name.to_owned());
                    family.set_help(series.help.to_owned());
                    family.set_field_type(MetricType::COUNTER);
                    families.push(family);
                    families.len() - 1
                });
            let mut metrics = families[index].take_metric();
            for (db, counters) in &self.dbs {
                let mut labels = vec![label("db", db.as_str())];
                labels.extend(series.extra.map(|(k, v)| label(k, v)));
                let mut counter = proto::Counter::default();
                #[allow(clippy::cast_precision_loss)] // exact below 2^53 events
                counter.set_value((series.counter)(counters).load(Ordering::Relaxed) as f64);
                let mut metric = proto::Metric::from_label(labels);
                metric.set_counter(counter);
                metrics.push(metric);
            }
            families[index].set_metric(metrics);
        }
        families
    }
}

fn label(name: &str, value: &str) -> proto::LabelPair {
    let mut pair = proto::LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

/// Asserts that the `/metrics` page `text` has every line of `series`, and exactly one
/// `# TYPE` line for the `family` it names.
#[cfg(test)]
pub(crate) fn assert_series(text: &str, family: &str, series: &[impl AsRef<str>]) {
    for line in series {
        let line = line.as_ref();
        assert!(text.contains(line), "{line} in {text}");
    }
    assert_eq!(
        text.matches(&format!("# TYPE {family} ")).count(),
        1,
        "{text}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_is_exported_with_the_crate_version() {
        let text = Metrics::new().render();
        assert!(
            text.contains(&format!(
                "{BUILD_INFO}{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
    }

    #[test]
    fn database_counters_are_exported_from_zero_and_count() {
        let metrics = Metrics::new();
        let orders = Arc::new(DbCounters::default());
        metrics.register_db_counters(vec![
            (DbName::parse("orders").unwrap(), Arc::clone(&orders)),
            (DbName::parse("billing").unwrap(), Arc::default()),
        ]);
        for _ in 0..3 {
            DbCounters::inc(&orders.hits);
        }
        DbCounters::inc(&orders.expired);
        let text = metrics.render();
        let series = [
            format!("{CACHE_LOOKUPS_TOTAL}{{db=\"orders\",result=\"hit\"}} 3"),
            format!("{CACHE_LOOKUPS_TOTAL}{{db=\"billing\",result=\"miss\"}} 0"),
            format!("{CREDENTIALS_EXPIRED_TOTAL}{{db=\"orders\"}} 1"),
            format!("{STALE_SERVED_TOTAL}{{db=\"billing\"}} 0"),
            format!("{CREDENTIAL_ROTATIONS_TOTAL}{{db=\"orders\"}} 0"),
            format!("{DATABASE_DELETED_TOTAL}{{db=\"orders\"}} 0"),
            format!("# TYPE {CACHE_LOOKUPS_TOTAL} counter"),
        ];
        assert_series(&text, CACHE_LOOKUPS_TOTAL, &series);
    }

    #[test]
    fn credential_reads_from_many_threads_are_summed_into_the_http_families() {
        let metrics = Metrics::new();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..250 {
                        metrics.hot_route.record(Duration::from_micros(300), true);
                    }
                    metrics.hot_route.record(Duration::from_millis(3), false);
                });
            }
        });
        metrics
            .http_requests
            .with_label_values(&[CREDENTIALS_ROUTE, "GET", "404"])
            .inc();
        let text = metrics.render();
        let series = [
            format!(
                "{HTTP_REQUESTS_TOTAL}{{method=\"GET\",route=\"{CREDENTIALS_ROUTE}\",status=\"200\"}} 1000"
            ),
            format!(
                "{HTTP_REQUESTS_TOTAL}{{method=\"GET\",route=\"{CREDENTIALS_ROUTE}\",status=\"404\"}} 1"
            ),
            format!(
                "{HTTP_REQUEST_DURATION_SECONDS}_bucket{{route=\"{CREDENTIALS_ROUTE}\",le=\"0.0005\"}} 1000"
            ),
            format!(
                "{HTTP_REQUEST_DURATION_SECONDS}_bucket{{route=\"{CREDENTIALS_ROUTE}\",le=\"0.0025\"}} 1000"
            ),
            format!(
                "{HTTP_REQUEST_DURATION_SECONDS}_bucket{{route=\"{CREDENTIALS_ROUTE}\",le=\"0.005\"}} 1004"
            ),
            format!(
                "{HTTP_REQUEST_DURATION_SECONDS}_bucket{{route=\"{CREDENTIALS_ROUTE}\",le=\"+Inf\"}} 1004"
            ),
            format!("{HTTP_REQUEST_DURATION_SECONDS}_sum{{route=\"{CREDENTIALS_ROUTE}\"}} 0.312"),
            format!("{HTTP_REQUEST_DURATION_SECONDS}_count{{route=\"{CREDENTIALS_ROUTE}\"}} 1004"),
        ];
        assert_series(&text, HTTP_REQUEST_DURATION_SECONDS, &series);
        assert_series(&text, HTTP_REQUESTS_TOTAL, &[] as &[&str]);
    }

    #[test]
    fn the_http_families_are_absent_until_a_request_is_answered() {
        let text = Metrics::new().render();
        assert!(!text.contains(HTTP_REQUESTS_TOTAL), "{text}");
        assert!(!text.contains(HTTP_REQUEST_DURATION_SECONDS), "{text}");
    }
}
