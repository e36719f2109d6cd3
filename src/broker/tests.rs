//! Unit tests of the broker over the stand-in source: sharing flights, stale serving, backoff,
//! background refresh, RDS status.

use std::sync::Arc;
use std::time::Duration;

use super::testing::TestBroker;
use super::*;
use crate::config::{DatabaseConfig, Login, RdsTarget, RotationConfig, SecretRef, UpstreamConfig};
use crate::credentials::{DbName, Endpoint};
use crate::metrics::Metrics;
use crate::source::stand_in::{Controls, StandInRds};

struct Harness {
    broker: Arc<Broker>,
    source: Arc<Controls>,
}

fn harness(ttl: Duration, max_stale: Duration) -> Harness {
    let (broker, source) = TestBroker {
        cache: crate::config::CacheConfig::for_tests(ttl, max_stale),
        upstream: UpstreamConfig {
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(2),
        },
        rotation: RotationConfig {
            describe_interval: Duration::from_mins(10),
            watch_interval: Duration::from_secs(10),
            refresh_min_interval: Duration::ZERO,
        },
        delay: Duration::from_millis(50),
        ..TestBroker::default()
    }
    .database("orders", "plain")
    .database("gone", "missing")
    .build();
    Harness { broker, source }
}

fn default_harness() -> Harness {
    harness(Duration::from_mins(1), Duration::from_mins(1))
}

#[test]
fn a_waiting_background_task_is_small() {
    let h = default_harness();
    let name = DbName::parse("orders").unwrap();
    let task = h.broker.keep_fresh(&name);
    let size = std::mem::size_of_val(&task);
    assert!(
        size < 512,
        "a keep_fresh future takes {size} bytes per database"
    );
}

async fn concurrently<F, Fut>(n: usize, f: F) -> Vec<Result<Served, BrokerError>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Served, BrokerError>> + Send + 'static,
{
    let handles: Vec<_> = (0..n).map(|_| tokio::spawn(f())).collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    results
}

#[tokio::test]
async fn unknown_database_never_reaches_the_source() {
    let h = default_harness();
    assert!(matches!(
        h.broker.get("nope").await,
        Err(BrokerError::UnknownDatabase)
    ));
    assert!(matches!(
        h.broker.refresh("nope", None).await,
        Err(BrokerError::UnknownDatabase)
    ));
    assert_eq!(h.source.calls(), 0);
}

#[tokio::test]
async fn cached_answers_from_the_cache_alone_and_none_until_a_fetch() {
    let h = default_harness();
    assert!(matches!(
        h.broker.cached("nope"),
        Err(BrokerError::UnknownDatabase)
    ));
    assert!(h.broker.cached("orders").unwrap().is_none());
    assert_eq!(h.source.calls(), 0, "cached never fetches");
    h.broker.get("orders").await.unwrap();
    let served = h
        .broker
        .cached("orders")
        .unwrap()
        .expect("cached after a get");
    assert_eq!(served.credentials.version_id, "v1");
    assert!(!served.stale);
    assert_eq!(h.source.calls(), 1);
}

#[tokio::test]
async fn concurrent_cold_gets_share_one_fetch() {
    let h = default_harness();
    let broker = Arc::clone(&h.broker);
    let results = concurrently(50, move || {
        let broker = Arc::clone(&broker);
        async move { broker.get("orders").await }
    })
    .await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(h.source.calls(), 1);
}

#[tokio::test]
async fn concurrent_refreshes_share_one_fetch_and_see_the_new_version() {
    let h = default_harness();
    h.broker.get("orders").await.unwrap();
    h.source.set_version("v2");
    let broker = Arc::clone(&h.broker);
    let results = concurrently(20, move || {
        let broker = Arc::clone(&broker);
        async move { broker.refresh("orders", None).await }
    })
    .await;
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().unwrap().credentials.version_id == "v2")
    );
    assert_eq!(h.source.calls(), 2, "one cold fetch, one refresh");
    assert_eq!(
        h.broker.get("orders").await.unwrap().credentials.version_id,
        "v2"
    );
}

#[tokio::test]
async fn readiness_lists_databases_not_fetched_yet() {
    let h = default_harness();
    assert_eq!(h.broker.readiness().not_ready.len(), 2);
    h.broker.get("orders").await.unwrap();
    let names: Vec<String> = h
        .broker
        .readiness()
        .not_ready
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(names, ["gone"]);
    assert!(matches!(
        h.broker.get("gone").await,
        Err(BrokerError::SecretNotFound(_))
    ));
}

#[tokio::test]
async fn stale_credentials_are_served_within_max_stale_then_expire() {
    let h = harness(Duration::from_millis(300), Duration::from_millis(600));
    let fresh = h.broker.get("orders").await.unwrap();
    assert!(!fresh.stale);
    h.source.set_failing(true);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stale = h.broker.get("orders").await.unwrap();
    assert!(stale.stale);
    assert!(stale.age >= Duration::from_millis(300));
    assert!(h.broker.cached("orders").unwrap().expect("stale").stale);
    assert_eq!(h.source.calls(), 1, "a stale serve does not call upstream");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(h.broker.cached("orders").unwrap().is_none(), "expired");
    assert!(matches!(
        h.broker.get("orders").await,
        Err(BrokerError::Expired(_))
    ));
}

#[tokio::test]
async fn failures_back_off_with_growing_delays() {
    let h = default_harness();
    h.source.set_failing(true);
    assert!(h.broker.get("orders").await.is_err());
    assert_eq!(h.source.calls(), 1);
    // Inside the backoff delay, callers get the last error without a call.
    for _ in 0..10 {
        assert!(h.broker.get("orders").await.is_err());
    }
    assert_eq!(h.source.calls(), 1);
}

#[tokio::test]
async fn background_refresh_keeps_an_entry_fresh_before_its_ttl_ends() {
    let h = harness(Duration::from_millis(500), Duration::from_mins(1));
    let task = tokio::spawn(Arc::clone(&h.broker).run_background());
    h.broker.get("orders").await.unwrap();
    h.source.set_version("v2");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let served = h.broker.get("orders").await.unwrap();
    task.abort();
    assert!(!served.stale, "refreshed ahead of the TTL");
    assert_eq!(served.credentials.version_id, "v2");
    assert!(served.age < Duration::from_millis(500));
}

#[tokio::test]
async fn an_impaired_secret_is_served_and_reported_degraded() {
    let metrics = Metrics::new();
    let (broker, _) = TestBroker {
        databases: vec![(
            "orders",
            DatabaseConfig {
                login: Login::Secret(SecretRef::Rds(RdsTarget::Instance("i".into()))),
                role: None,
                fallback_regions: Vec::new(),
                endpoint: Endpoint::default(),
            },
        )],
        rds: Some(Box::new(StandInRds("impaired"))),
        metrics: metrics.clone(),
        ..TestBroker::default()
    }
    .build();
    let served = broker.get("orders").await.unwrap();
    assert_eq!(
        served.credentials.secret_status.as_deref(),
        Some("impaired")
    );
    assert_eq!(
        served.credentials.endpoint.host.as_deref(),
        Some("rds-host")
    );
    let readiness = broker.readiness();
    assert!(readiness.not_ready.is_empty());
    assert_eq!(readiness.degraded.len(), 1);
    let text = metrics.render();
    assert!(
        text.contains(r#"credential_broker_secret_status{db="orders",status="impaired"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"credential_broker_secret_status{db="orders",status="active"} 0"#));
}

#[tokio::test]
async fn a_wait_ends_when_a_fetch_brings_another_version() {
    let h = default_harness();
    assert_eq!(
        h.broker.get("orders").await.unwrap().credentials.version_id,
        "v1"
    );
    let broker = Arc::clone(&h.broker);
    let wait = tokio::spawn(async move {
        broker
            .wait_for_change("orders", |v| v == "v1", Duration::from_secs(10))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!wait.is_finished(), "held while v1 is served");
    h.source.set_version("v2");
    let calls = h.source.calls();
    h.broker.refresh("orders", None).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(1), wait)
        .await
        .expect("woken by the fetch")
        .unwrap()
        .unwrap();
    let Waited::Changed(served) = waited else {
        panic!("{waited:?}")
    };
    assert_eq!(served.credentials.version_id, "v2");
    assert_eq!(
        h.source.calls(),
        calls + 1,
        "the wait made no call of its own"
    );
}

#[tokio::test]
async fn a_wait_ends_unchanged_at_its_end_or_at_once_when_released() {
    let h = default_harness();
    let unknown = h
        .broker
        .wait_for_change("orders", |v| v == "v0", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        matches!(unknown, Waited::Changed(_)),
        "v0 is not served: at once"
    );
    let started = std::time::Instant::now();
    let timed_out = h
        .broker
        .wait_for_change("orders", |v| v == "v1", Duration::from_millis(200))
        .await
        .unwrap();
    assert!(matches!(timed_out, Waited::Unchanged(_)));
    assert!(started.elapsed() >= Duration::from_millis(200));

    let mut watch = h.broker.watch("orders").unwrap();
    let broker = Arc::clone(&h.broker);
    let wait = tokio::spawn(async move {
        broker
            .wait_for_change("orders", |v| v == "v1", Duration::from_secs(10))
            .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.broker.release_waiters();
    let released = tokio::time::timeout(Duration::from_millis(500), wait)
        .await
        .expect("released at once")
        .unwrap()
        .unwrap();
    assert!(matches!(released, Waited::Unchanged(_)));
    assert_eq!(watch.next().await, None, "a watch ends too");
    assert!(matches!(
        h.broker
            .wait_for_change("orders", |v| v == "v1", Duration::from_secs(10))
            .await,
        Ok(Waited::Unchanged(_))
    ));
}

#[tokio::test]
async fn a_watch_is_told_each_new_version_once_and_a_deletion() {
    let h = default_harness();
    h.broker.get("orders").await.unwrap();
    let mut watch = h.broker.watch("orders").unwrap();
    h.broker.refresh("orders", None).await.unwrap();
    h.source.set_version("v2");
    h.broker.refresh("orders", None).await.unwrap();
    let Some(VersionEvent::Version(info)) = watch.next().await else {
        panic!("a version event")
    };
    assert_eq!(info.version_id, "v2", "the same version again is no event");

    let mut gone = h.broker.watch("gone").unwrap();
    assert!(h.broker.get("gone").await.is_err());
    assert_eq!(gone.next().await, Some(VersionEvent::Deleted));
}

#[tokio::test]
async fn a_refresh_naming_the_cached_version_waits_for_the_minimum_interval() {
    let (broker, source) = TestBroker {
        rotation: RotationConfig {
            describe_interval: Duration::from_mins(10),
            watch_interval: Duration::from_secs(10),
            refresh_min_interval: Duration::from_millis(300),
        },
        ..TestBroker::default()
    }
    .database("orders", "plain")
    .build();
    broker.get("orders").await.unwrap();
    source.set_version("v2");
    // Naming no version within the interval: the cached answer, no call.
    let plain = broker.refresh("orders", None).await.unwrap();
    assert_eq!(plain.credentials.version_id, "v1");
    assert_eq!(source.calls(), 1);
    // Naming the cached one: never that one back; 20 at once share one call.
    let started = std::time::Instant::now();
    let results = concurrently(20, || {
        let broker = Arc::clone(&broker);
        async move { broker.refresh("orders", Some("v1")).await }
    })
    .await;
    for result in results {
        assert_eq!(result.unwrap().credentials.version_id, "v2");
    }
    assert!(started.elapsed() < Duration::from_millis(300 + 200));
    assert_eq!(source.calls(), 2, "one fetch for all 20");
}

#[tokio::test]
async fn a_fallback_region_answers_only_while_nothing_fresh_is_cached() {
    let mut config = DatabaseConfig::for_tests("plain");
    config.fallback_regions = vec!["us-west-2".into()];
    let (broker, primary, replica) = TestBroker {
        databases: vec![("orders", config)],
        cache: crate::config::CacheConfig::for_tests(
            Duration::from_millis(300),
            Duration::from_mins(1),
        ),
        replica_region: Some("us-west-2"),
        ..TestBroker::default()
    }
    .build_with_replica();
    let served = broker.get("orders").await.unwrap();
    assert_eq!(served.credentials.region, None, "the primary answered");
    primary.set_failing(true);
    let state = broker.lookup("orders").unwrap();
    let fetched = broker
        .fetch_shared(state, std::time::Instant::now(), false, false)
        .await;
    assert!(fetched.is_err(), "a fresh value is cached: no failover");
    assert_eq!(replica.calls(), 0);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let fetched = broker
        .fetch_shared(state, std::time::Instant::now(), false, false)
        .await
        .unwrap();
    assert_eq!(fetched.region.as_deref(), Some("us-west-2"));
    assert_eq!(replica.calls(), 1);
    primary.set_failing(false);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let fetched = broker
        .fetch_shared(state, std::time::Instant::now(), false, false)
        .await
        .unwrap();
    assert_eq!(fetched.region, None, "back on the primary once it answers");
    assert_eq!(replica.calls(), 1);
}
