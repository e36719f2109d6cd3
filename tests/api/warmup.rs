//! Reads in batches against moto: many databases are read with `BatchGetSecretValue`, 20 at a
//! time, counted at the fault proxy, at warm-up (RDS-named ones after their resolution) and on
//! SIGHUP; a secret a batch cannot return is read on its own.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;

/// `count` secrets `warm/dbNNN` and their passwords, and broker options with one database
/// `dbNNN` for each.
async fn seeded(upstream: &Upstream, count: usize) -> (BrokerOptions, Vec<String>) {
    let mut options = BrokerOptions::new(upstream.proxy.endpoint());
    let mut passwords = Vec::new();
    for i in 0..count {
        let password = new_password(&format!("warm{i}"));
        upstream
            .create_secret(
                &format!("warm/db{i:03}"),
                &json!({"username": "app", "password": password}),
            )
            .await;
        options = options.database(&format!("db{i:03}"), &format!("warm/db{i:03}"), "");
        passwords.push(password);
    }
    (options, passwords)
}

#[tokio::test]
async fn a_hundred_databases_warm_with_five_batch_calls_and_no_single_read() {
    let upstream = Upstream::start().await;
    let (options, passwords) = seeded(&upstream, 100).await;
    let started = Instant::now();
    let broker = options.spawn().await;
    broker.wait_ready(Duration::from_secs(30)).await;
    eprintln!(
        "FIGURE warm-up of 100 databases: ready {:?} after spawn",
        started.elapsed()
    );
    assert_eq!(upstream.proxy.count("BatchGetSecretValue"), 5);
    assert_eq!(upstream.proxy.count("GetSecretValue"), 0);
    // Each database got its own secret.
    for i in [0, 19, 20, 57, 99] {
        let body: Value = json_body(broker.get(&format!("db{i:03}")).await).await;
        assert_eq!(body["password"], passwords[i].as_str(), "db{i:03}");
    }
    assert_eq!(
        upstream.proxy.count("GetSecretValue"),
        0,
        "served from the cache"
    );
}

#[tokio::test]
async fn a_missing_secret_among_them_is_reported_without_failing_the_others() {
    let upstream = Upstream::start().await;
    let (options, passwords) = seeded(&upstream, 20).await;
    let mut broker = options.database("lost", "warm/missing", "").spawn().await;
    // Everyone but `lost` is ready; `lost` is read on its own and found missing.
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let body: Value = broker.admin_get("/readyz").await.json().await.unwrap();
        if body["not_ready"] == json!(["lost"]) || Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["not_ready"], json!(["lost"]), "{body}");
    let body: Value = json_body(broker.get("db007").await).await;
    assert_eq!(body["password"], passwords[7].as_str());
    let lost = broker.get("lost").await;
    assert_eq!(lost.status(), 502);
    assert_eq!(json_body(lost).await["error"]["code"], "secret_not_found");
    // The batches: 21 databases, 20 + 1. The missing one's answer came from a single read
    // (the background task's, or the request's own).
    broker
        .wait_for_log("warmed up in batches", Duration::from_secs(10))
        .await;
    assert_eq!(upstream.proxy.count("BatchGetSecretValue"), 2);
    assert!(upstream.proxy.count("GetSecretValue") >= 1);
}

#[tokio::test]
async fn rds_named_databases_warm_in_one_batch_after_their_resolution() {
    let upstream = Upstream::start().await;
    let mut options = BrokerOptions::new(upstream.proxy.endpoint());
    for i in 0..3 {
        let id = format!("warm-rds-{i}");
        upstream.create_managed_instance(&id).await;
        options = options.rds_database(&format!("rds{i}"), "rds_instance", &id, "");
    }
    let broker = options.spawn().await;
    broker.wait_ready(Duration::from_secs(20)).await;
    assert_eq!(upstream.proxy.count("BatchGetSecretValue"), 1);
    assert_eq!(upstream.proxy.count("GetSecretValue"), 0);
    let body: Value = json_body(broker.get("rds1").await).await;
    // moto fills the managed secret with a user of its own.
    assert!(!body["username"].as_str().unwrap().is_empty());
    assert!(body["secret_arn"].as_str().unwrap().contains("rds!db-"));
}

#[tokio::test]
async fn sighup_fetches_every_database_again_in_batches() {
    let upstream = Upstream::start().await;
    let (options, _) = seeded(&upstream, 30).await;
    let broker = options.spawn().await;
    broker.wait_ready(Duration::from_secs(30)).await;
    assert_eq!(upstream.proxy.count("BatchGetSecretValue"), 2);
    // The first rotation checks run at start: let them finish, or one could see the rotation
    // below and fetch it on its own. Counted by the broker once each answer is in: the proxy
    // sees a request before moto answers it, so its count could let the rotation in first.
    broker
        .wait_for_metric(
            "credential_broker_upstream_requests_total",
            &[("operation", "DescribeSecret"), ("outcome", "success")],
            Duration::from_secs(10),
            |checks| checks >= 30.0,
        )
        .await;
    let password = new_password("after-sighup");
    upstream
        .rotate(
            "warm/db007",
            &json!({"username": "app", "password": password}),
        )
        .await;
    signal(broker.pid(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.proxy.count("BatchGetSecretValue") < 4 {
        assert!(Instant::now() < deadline, "no batch read after SIGHUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give single reads, if any were made, the time to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(upstream.proxy.count("BatchGetSecretValue"), 4);
    assert_eq!(
        upstream.proxy.count("GetSecretValue"),
        0,
        "30 databases, no single read"
    );
    let body: Value = json_body(broker.get("db007").await).await;
    assert_eq!(body["password"], password.as_str(), "the rotated password");
}
