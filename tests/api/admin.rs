//! The admin listener: readiness and Prometheus metrics.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{BrokerOptions, Upstream, json_body, metric, new_password};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_503_until_every_database_was_fetched() {
    let upstream = Upstream::start().await;
    let password = new_password("ready");
    upstream
        .create_secret("present", &json!({"username": "u", "password": password}))
        .await;
    let broker = BrokerOptions::new(upstream.proxy.endpoint())
        .database("present", "present", "")
        .database("later", "created/later", "")
        .spawn()
        .await;
    // Warm-up fetches `present` at once and keeps retrying `later`, which does not exist yet.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let response = broker.admin_get("/readyz").await;
        assert_eq!(response.status(), 503);
        let body = json_body(response).await;
        if body["not_ready"] == json!(["later"]) || std::time::Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["not_ready"], json!(["later"]));

    upstream
        .create_secret(
            "created/later",
            &json!({"username": "u", "password": password}),
        )
        .await;
    broker.wait_ready(Duration::from_secs(10)).await;
    let body = json_body(broker.admin_get("/readyz").await).await;
    assert_eq!(body["status"], "ready");
    let health = broker.admin_get("/healthz").await;
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_count_hits_and_misses() {
    let upstream = Upstream::start().await;
    let password = new_password("metrics");
    upstream
        .create_secret("m", &json!({"username": "u", "password": password}))
        .await;
    let broker = BrokerOptions::new(upstream.proxy.endpoint())
        .database("m", "m", "")
        .cold()
        .spawn()
        .await;
    for _ in 0..3 {
        assert_eq!(broker.get("m").await.status(), 200);
    }
    assert_eq!(broker.get("unknown").await.status(), 404);

    let text = broker.metrics().await;
    let lookups = |result| {
        metric(
            &text,
            "credential_broker_cache_lookups_total",
            &[("db", "m"), ("result", result)],
        )
    };
    assert_eq!(lookups("miss"), Some(1.0), "{text}");
    assert_eq!(lookups("hit"), Some(2.0), "{text}");
    assert_eq!(
        metric(
            &text,
            "credential_broker_upstream_requests_total",
            &[("operation", "GetSecretValue"), ("outcome", "success")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "credential_broker_http_requests_total",
            &[
                ("route", "/credentials/{db}"),
                ("method", "GET"),
                ("status", "200")
            ]
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &text,
            "credential_broker_http_requests_total",
            &[("route", "/credentials/{db}"), ("status", "404")]
        ),
        Some(1.0)
    );
    assert!(
        metric(
            &text,
            "credential_broker_credential_last_fetch_timestamp_seconds",
            &[("db", "m")]
        )
        .unwrap()
            > 1.7e9
    );
    assert_eq!(
        metric(
            &text,
            "credential_broker_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    for name in [
        "credential_broker_http_request_duration_seconds_bucket",
        "credential_broker_upstream_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    assert!(!text.contains("Pw-metrics"), "no secret in metrics");

    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool not found: run `bash .ci/setup` (installs Debian's prometheus package)");
    std::io::Write::write_all(promtool.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let output = promtool.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
