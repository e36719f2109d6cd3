//! A real Prometheus server scrapes a running broker's admin listener, and its query API returns
//! the broker's counters: the scrape path that docker/prometheus/prometheus.yml sets up works.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{BrokerOptions, JOB, Prometheus, Upstream, new_password};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_admin_listener_and_sees_cache_counters() {
    let upstream = Upstream::start().await;
    let password = new_password("prometheus");
    upstream
        .create_secret("scraped", &json!({"username": "u", "password": password}))
        .await;
    let broker = BrokerOptions::new(upstream.proxy.endpoint())
        .database("scraped", "scraped", "")
        .cold()
        .spawn()
        .await;
    for _ in 0..3 {
        assert_eq!(broker.get("scraped").await.status(), 200);
    }

    let mut prometheus = Prometheus::start(&broker.admin.to_string());
    let limit = Duration::from_secs(30);
    prometheus
        .wait_for(&format!("up{{job=\"{JOB}\"}}"), 1.0, limit)
        .await;
    prometheus
        .wait_for(
            r#"credential_broker_cache_lookups_total{db="scraped",result="miss"}"#,
            1.0,
            limit,
        )
        .await;
    prometheus
        .wait_for(
            r#"credential_broker_cache_lookups_total{db="scraped",result="hit"}"#,
            2.0,
            limit,
        )
        .await;

    // A later request shows up in a later scrape.
    assert_eq!(broker.get("scraped").await.status(), 200);
    prometheus
        .wait_for(
            r#"sum(credential_broker_cache_lookups_total{db="scraped"})"#,
            4.0,
            limit,
        )
        .await;
}
