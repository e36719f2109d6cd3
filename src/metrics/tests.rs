//! Unit tests of the registry: the build info, per-database counters, the hot route summed.

use std::sync::Arc;
use std::time::Duration;

use super::db_counters::DbCounters;
use super::*;
use crate::credentials::DbName;

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
