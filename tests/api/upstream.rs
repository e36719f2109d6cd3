//! Upstream discipline: single-flight for misses and refreshes, timeouts against a hung moto.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{BrokerOptions, Upstream, json_body, new_password};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_cold_requests_make_one_upstream_call() {
    let upstream = Upstream::start().await;
    let password = new_password("flight");
    upstream
        .create_secret("cold", &json!({"username": "u", "password": password}))
        .await;
    let broker = Arc::new(
        BrokerOptions::new(upstream.proxy.endpoint())
            .database("cold", "cold", "")
            .cold()
            .spawn()
            .await,
    );
    // Keep the one upstream call open long enough for all fifty requests to pile up behind it.
    upstream.proxy.set_delay(Duration::from_millis(500));
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let broker = Arc::clone(&broker);
            tokio::spawn(async move { broker.get("cold").await.status() })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    assert_eq!(upstream.proxy.count("GetSecretValue"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_share_one_upstream_call() {
    let upstream = Upstream::start().await;
    let old = new_password("refresh-old");
    let new = new_password("refresh-new");
    upstream
        .create_secret("r", &json!({"username": "u", "password": old}))
        .await;
    let broker = Arc::new(
        BrokerOptions::new(upstream.proxy.endpoint())
            .database("r", "r", "")
            .spawn()
            .await,
    );
    broker.wait_ready(Duration::from_secs(10)).await;
    upstream
        .rotate("r", &json!({"username": "u", "password": new}))
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // the refresh minimum interval
    let before = upstream.proxy.count("GetSecretValue");
    upstream.proxy.set_delay(Duration::from_millis(500));
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let broker = Arc::clone(&broker);
            tokio::spawn(async move { json_body(broker.refresh("r").await).await })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap()["password"], new.as_str());
    }
    // All twenty arrive while the first one's call is held open, so that call answers them all.
    assert_eq!(upstream.proxy.count("GetSecretValue") - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_secrets_manager_gives_504_within_the_operation_timeout() {
    let upstream = Upstream::start().await;
    let password = new_password("hung");
    upstream
        .create_secret("h", &json!({"username": "u", "password": password}))
        .await;
    let broker = BrokerOptions {
        operation_timeout: "1s",
        ..BrokerOptions::new(upstream.proxy.endpoint())
            .database("h", "h", "")
            .cold()
    }
    .spawn()
    .await;

    upstream.moto.freeze();
    let started = Instant::now();
    let response = broker.get("h").await;
    let elapsed = started.elapsed();
    upstream.moto.thaw();

    assert_eq!(response.status(), 504);
    assert_eq!(
        json_body(response).await["error"]["code"],
        "upstream_timeout"
    );
    assert!(
        elapsed >= Duration::from_millis(900),
        "answered before the timeout: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "1 s timeout took {elapsed:?}"
    );
    let metrics = broker.metrics().await;
    assert_eq!(
        crate::helpers::metric(
            &metrics,
            "credential_broker_upstream_requests_total",
            &[("operation", "GetSecretValue"), ("outcome", "timeout")]
        ),
        Some(1.0),
        "{metrics}"
    );
}
