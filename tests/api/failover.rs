//! Replica-region failover against real moto: with the primary region failing at the proxy
//! (5xx, then connection resets), a database is served from its secret's replica in the
//! fallback region and says so; a definite "not found" in the primary is not failed over; the
//! primary serves again once it answers.

use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::types::ReplicaRegionType;
use serde_json::json;

use crate::helpers::*;

const PRIMARY: &str = "us-east-1";
const FALLBACK: &str = "us-west-2";

async fn get_json(broker: &TestBroker, db: &str) -> (u16, serde_json::Value) {
    let response = broker.get(db).await;
    let status = response.status().as_u16();
    (status, json_body(response).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_primary_region_is_answered_from_the_replica_and_the_primary_comes_back() {
    let upstream = Upstream::start().await;
    let password = new_password("replicated");
    let created = upstream
        .sm
        .create_secret()
        .name("shared/payments")
        .secret_string(json!({"username": "app", "password": password}).to_string())
        .add_replica_regions(ReplicaRegionType::builder().region(FALLBACK).build())
        .send()
        .await
        .expect("create_secret with a replica in moto");
    let arn = created.arn().unwrap().to_owned();
    // A secret of the fallback region only: the primary says it does not exist.
    let west = aws_sdk_secretsmanager::Client::from_conf(
        upstream
            .sm
            .config()
            .to_builder()
            .region(aws_sdk_secretsmanager::config::Region::new(FALLBACK))
            .build(),
    );
    west.create_secret()
        .name("west/only")
        .secret_string(json!({"username": "w", "password": new_password("west")}).to_string())
        .send()
        .await
        .unwrap();
    let fallback = format!("fallback_regions = [{FALLBACK:?}]");
    let broker = BrokerOptions {
        ttl: "1s",
        ..BrokerOptions::new(upstream.proxy.endpoint())
            .database("payments", "shared/payments", &fallback)
            .database("by_arn", &arn, &fallback)
            .database("west_only", "west/only", &fallback)
            .cold()
    }
    .spawn()
    .await;

    // 5xx from the primary: the replica answers, and the body says which region.
    upstream
        .proxy
        .set_region_fault(Some((PRIMARY, Fault::Status(503))));
    let (status, body) = get_json(&broker, "payments").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["password"], password.as_str());
    assert_eq!(body["region"], FALLBACK);
    assert_eq!(body["stale"], false);
    assert_eq!(upstream.proxy.count_in("GetSecretValue", PRIMARY), 1);
    assert_eq!(upstream.proxy.count_in("GetSecretValue", FALLBACK), 1);
    let metrics = broker.metrics().await;
    let failovers = |metrics: &str| {
        metric(
            metrics,
            "credential_broker_region_failovers_total",
            &[("region", FALLBACK)],
        )
    };
    assert_eq!(failovers(&metrics), Some(1.0));
    assert_eq!(
        metric(&metrics, "credential_broker_upstream_up", &[]),
        Some(0.0),
        "upstream_up is the primary's"
    );

    // Connection resets: a database named by ARN is read by the replica's ARN.
    upstream
        .proxy
        .set_region_fault(Some((PRIMARY, Fault::Reset)));
    let (status, body) = get_json(&broker, "by_arn").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["region"], FALLBACK);
    assert_eq!(body["password"], password.as_str());
    let served_arn = body["secret_arn"].as_str().unwrap();
    assert!(served_arn.contains(":us-west-2:"), "{served_arn}");

    // "Not found" in the primary is an answer: no fallback call.
    upstream.proxy.set_region_fault(None);
    let fallback_reads = upstream.proxy.count_in("GetSecretValue", FALLBACK);
    let (status, body) = get_json(&broker, "west_only").await;
    assert_eq!(status, 502);
    assert_eq!(body["error"]["code"], "secret_not_found");
    assert_eq!(
        upstream.proxy.count_in("GetSecretValue", FALLBACK),
        fallback_reads,
        "a definite answer is not failed over"
    );

    // The primary answers again: the next fetch (the TTL is 1 s) is served from it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get_json(&broker, "payments").await;
        assert_eq!(status, 200);
        if body["region"] == PRIMARY {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still served from {}",
            body["region"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = broker.metrics().await;
    assert_eq!(
        metric(&metrics, "credential_broker_upstream_up", &[]),
        Some(1.0)
    );
    assert_eq!(
        failovers(&metrics),
        Some(2.0),
        "one failover per failed fetch"
    );
}
