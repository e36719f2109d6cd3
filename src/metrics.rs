//! The Prometheus registry and every metric the broker exports, with their names in one place.
//! Labels are bounded: route templates, configured database names, fixed outcome words.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub const HTTP_REQUESTS_TOTAL: &str = "credential_broker_http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "credential_broker_http_request_duration_seconds";
pub const CACHE_LOOKUPS_TOTAL: &str = "credential_broker_cache_lookups_total";
pub const UPSTREAM_REQUESTS_TOTAL: &str = "credential_broker_upstream_requests_total";
pub const UPSTREAM_REQUEST_DURATION_SECONDS: &str =
    "credential_broker_upstream_request_duration_seconds";
pub const CREDENTIAL_LAST_FETCH_TIMESTAMP_SECONDS: &str =
    "credential_broker_credential_last_fetch_timestamp_seconds";
pub const BUILD_INFO: &str = "credential_broker_build_info";

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric of one broker, registered in its own registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub(crate) http_requests: IntCounterVec,
    pub(crate) http_duration: HistogramVec,
    pub(crate) cache_lookups: IntCounterVec,
    pub(crate) upstream_requests: IntCounterVec,
    pub(crate) upstream_duration: HistogramVec,
    pub(crate) last_fetch: GaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                HTTP_REQUESTS_TOTAL,
                "HTTP requests answered, by route template, method and status.",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                HTTP_REQUEST_DURATION_SECONDS,
                "Time to answer an HTTP request, by route template.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let cache_lookups = IntCounterVec::new(
            Opts::new(
                CACHE_LOOKUPS_TOTAL,
                "Credential cache lookups by database and result (hit, miss).",
            ),
            &["db", "result"],
        )
        .expect("valid metric");
        let upstream_requests = IntCounterVec::new(
            Opts::new(
                UPSTREAM_REQUESTS_TOTAL,
                "Calls to the secret source, by operation and outcome.",
            ),
            &["operation", "outcome"],
        )
        .expect("valid metric");
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                UPSTREAM_REQUEST_DURATION_SECONDS,
                "Duration of calls to the secret source, by operation.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["operation"],
        )
        .expect("valid metric");
        let last_fetch = GaugeVec::new(
            Opts::new(
                CREDENTIAL_LAST_FETCH_TIMESTAMP_SECONDS,
                "Unix time of the last successful fetch of a database's credentials.",
            ),
            &["db"],
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                BUILD_INFO,
                "Always 1; the version label says which build runs.",
            ),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        for collector in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(cache_lookups.clone()),
            Box::new(upstream_requests.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(last_fetch.clone()),
            Box::new(build_info),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            registry,
            http_requests,
            http_duration,
            cache_lookups,
            upstream_requests,
            upstream_duration,
            last_fetch,
        }
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
    fn recorded_values_show_up_in_the_text_format() {
        let metrics = Metrics::new();
        metrics
            .cache_lookups
            .with_label_values(&["orders", "hit"])
            .inc_by(3);
        let text = metrics.render();
        assert!(
            text.contains(&format!(
                "{CACHE_LOOKUPS_TOTAL}{{db=\"orders\",result=\"hit\"}} 3"
            )),
            "{text}"
        );
    }
}
