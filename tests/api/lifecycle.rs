//! Process behaviour: graceful shutdown on SIGTERM, and trace logs free of passwords.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::helpers::{BrokerOptions, Upstream, json_body, new_password};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_complete_then_exits_zero() {
    let upstream = Upstream::start().await;
    let password = new_password("drain");
    upstream
        .create_secret("d", &json!({"username": "u", "password": password}))
        .await;
    let mut broker = BrokerOptions::new(upstream.proxy.endpoint())
        .database("d", "d", "")
        .cold()
        .spawn()
        .await;
    upstream.proxy.set_delay(Duration::from_millis(1500));
    let (url, http) = (broker.url("/credentials/d"), broker.http.clone());
    let in_flight = tokio::spawn(async move {
        http.get(url)
            .bearer_auth(crate::helpers::TOKEN)
            .send()
            .await
    });
    // Wait until the request is inside the broker (its upstream call has reached the proxy).
    while upstream.proxy.count("GetSecretValue") == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    broker.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = reqwest::Client::new()
        .get(broker.url("/credentials/d"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "new connections are refused while draining"
    );

    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(response.status(), 200);
    assert_eq!(json_body(response).await["password"], password.as_str());
    let status = broker.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));
    assert!(
        broker
            .log_events()
            .iter()
            .any(|e| e["message"] == "drained; exiting")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_of_a_whole_session_contain_no_password() {
    let upstream = Upstream::start().await;
    let first = new_password("trace-first");
    let second = new_password("trace-second");
    upstream
        .create_secret("t", &json!({"username": "u", "password": first}))
        .await;
    upstream
        .create_secret_string(
            "t-broken",
            &format!("{{\"username\":\"u\",\"password\":{}}}", "[1"),
        )
        .await;
    let broker = Arc::new(
        BrokerOptions::new(upstream.proxy.endpoint())
            .database("t", "t", "")
            .database("tbroken", "t-broken", "")
            .spawn()
            .await,
    );
    assert_eq!(broker.get("t").await.status(), 200);
    upstream
        .rotate("t", &json!({"username": "u", "password": second}))
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // the refresh minimum interval
    assert_eq!(
        json_body(broker.refresh("t").await).await["password"],
        second.as_str()
    );
    assert_eq!(broker.get("tbroken").await.status(), 502);
    assert_eq!(broker.get("t").await.status(), 200);

    let text = broker.log_text();
    assert!(
        text.lines().any(|l| l.contains("\"level\":\"TRACE\"")),
        "the broker really logged at trace level"
    );
    assert!(
        text.contains("credentials version changed"),
        "rotation is logged by version id"
    );
    for core in crate::helpers::passwords() {
        assert!(!text.contains(&core), "a password reached the log");
    }
}
