//! RDS awareness and rotation, end to end: moto's RDS and Secrets Manager APIs, the real broker,
//! and a real PostgreSQL whose role password changes the way RDS rotation changes it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{BrokerOptions, TOKEN, TestBroker, Upstream, json_body, metric, new_password};
use crate::pg::{Postgres, is_wrong_password};

const MASTER_USER: &str = "app_admin";

/// Rotation as RDS does it: a new AWSCURRENT version and the role's password changed with it.
async fn rotate(upstream: &Upstream, pg: &Postgres, secret_arn: &str, password: &str) -> String {
    let version = upstream
        .rotate(
            secret_arn,
            &json!({"username": MASTER_USER, "password": password}),
        )
        .await;
    pg.set_password(MASTER_USER, password).await;
    version
}

/// Puts a password both into the RDS-managed secret (moto fills it with a fixed one) and into
/// PostgreSQL.
async fn set_initial_password(upstream: &Upstream, pg: &Postgres, secret_arn: &str) -> String {
    let password = new_password("rds-initial");
    rotate(upstream, pg, secret_arn, &password).await;
    password
}

/// What an application does: fetch credentials as a libpq connection string, and connect.
async fn connect_as_app(
    broker: &TestBroker,
    pg: &Postgres,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let response = broker
        .http
        .get(broker.url(&format!("/credentials/{db}?format=keyvalue")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let keyvalue = response.text().await.unwrap();
    let config: tokio_postgres::Config = keyvalue.parse().expect("libpq key/value parses");
    pg.connect_with(&config).await
}

/// Connects, rotates, sees the old password fail with 28P01, refreshes and reconnects; returns
/// the time from the rotation to the first successful reconnect.
async fn rotation_round_trip(
    upstream: &Upstream,
    pg: &Postgres,
    broker: &TestBroker,
    db: &str,
    secret_arn: &str,
) -> Duration {
    let before = json_body(broker.get(db).await).await;
    connect_as_app(broker, pg, db)
        .await
        .expect("the app connects with what the broker returns");
    let old_password = before["password"].as_str().unwrap().to_owned();
    let old_version = before["version_id"].as_str().unwrap().to_owned();
    // Rotations happen long after a fetch; stay clear of the refresh minimum interval.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let new_password = new_password("rds-rotated");
    let rotated_at = Instant::now();
    let new_version = rotate(upstream, pg, secret_arn, &new_password).await;

    let error = pg
        .connect(MASTER_USER, &old_password)
        .await
        .expect_err("the old password no longer works for new connections");
    assert!(
        is_wrong_password(&error),
        "expected SQLSTATE 28P01, got {error}"
    );

    let response = broker
        .http
        .post(broker.url(&format!("/credentials/{db}/refresh")))
        .bearer_auth(TOKEN)
        .header("If-Match", format!("\"{old_version}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let refreshed = json_body(response).await;
    assert_eq!(refreshed["version_id"], new_version.as_str());
    connect_as_app(broker, pg, db)
        .await
        .expect("the app reconnects after the refresh");
    rotated_at.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rds_instance_rotation_is_survived_end_to_end_with_postgres() {
    let (upstream, pg) = (Upstream::start().await, Postgres::start().await);
    let created = upstream
        .rds
        .create_db_instance()
        .db_instance_identifier("orders-db")
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username(MASTER_USER)
        .manage_master_user_password(true)
        .db_name("postgres")
        .port(i32::from(pg.port))
        .send()
        .await
        .expect("create_db_instance in moto");
    let instance = created.db_instance.unwrap();
    let secret_arn = instance
        .master_user_secret()
        .unwrap()
        .secret_arn()
        .unwrap()
        .to_owned();
    assert!(secret_arn.contains("rds!db-"), "{secret_arn}");
    set_initial_password(&upstream, &pg, &secret_arn).await;

    let broker = BrokerOptions {
        topology_ttl: "1s",
        extra_toml: "[rotation]\ndescribe_interval = \"1s\"\n".into(),
        // moto's endpoint address resolves nowhere: point clients at the local server.
        ..BrokerOptions::new(upstream.proxy.endpoint()).rds_database(
            "orders",
            "rds_instance",
            "orders-db",
            "host = \"127.0.0.1\"",
        )
    }
    .spawn()
    .await;
    broker.wait_ready(Duration::from_secs(10)).await;

    let body = json_body(broker.get("orders").await).await;
    assert_eq!(body["host"], "127.0.0.1");
    assert_eq!(body["port"], pg.port, "port from the instance endpoint");
    assert_eq!(body["engine"], "postgres", "engine from RDS");
    assert_eq!(body["dbname"], "postgres", "database name from RDS");
    assert_eq!(body["username"], MASTER_USER);
    assert_eq!(body["secret_arn"], secret_arn.as_str());
    assert_eq!(body["reader_host"], Value::Null);
    let status = body["secret_status"].as_str().unwrap().to_owned();
    assert!(
        ["creating", "active"].contains(&status.as_str()),
        "{status}"
    );

    let took = rotation_round_trip(&upstream, &pg, &broker, "orders", &secret_arn).await;
    eprintln!(
        "FIGURE rds-instance rotation_to_reconnect_ms={}",
        took.as_millis()
    );

    let metrics = broker.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "credential_broker_credential_rotations_total",
            &[("db", "orders")]
        ),
        Some(1.0)
    );
    // The topology (1 s TTL) was resolved again by the refresh: moto reports "active" by now.
    let body = json_body(broker.get("orders").await).await;
    let status = body["secret_status"].as_str().unwrap();
    for candidate in ["creating", "active", "rotating", "impaired"] {
        let expected = if candidate == status { 1.0 } else { 0.0 };
        assert_eq!(
            metric(
                &metrics,
                "credential_broker_secret_status",
                &[("db", "orders"), ("status", candidate)]
            ),
            Some(expected),
            "{candidate} (current {status})"
        );
    }
    let enabled = broker
        .wait_for_metric(
            "credential_broker_secret_rotation_enabled",
            &[("db", "orders")],
            Duration::from_secs(10),
            |_| true,
        )
        .await;
    assert!([0.0, 1.0].contains(&enabled), "{enabled}");
    let log = broker.log_text();
    assert!(
        log.contains("credentials version changed"),
        "rotation logged at info"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rds_cluster_rotation_is_survived_end_to_end_with_postgres() {
    let (upstream, pg) = (Upstream::start().await, Postgres::start().await);
    let created = upstream
        .rds
        .create_db_cluster()
        .db_cluster_identifier("analytics")
        .engine("aurora-postgresql")
        .master_username(MASTER_USER)
        .manage_master_user_password(true)
        .database_name("postgres")
        .port(i32::from(pg.port))
        .send()
        .await
        .expect("create_db_cluster in moto");
    let cluster = created.db_cluster.unwrap();
    let secret_arn = cluster
        .master_user_secret()
        .unwrap()
        .secret_arn()
        .unwrap()
        .to_owned();
    assert!(secret_arn.contains("rds!cluster-"), "{secret_arn}");
    let reader = cluster.reader_endpoint().unwrap().to_owned();
    set_initial_password(&upstream, &pg, &secret_arn).await;

    let broker = BrokerOptions::new(upstream.proxy.endpoint())
        .rds_database(
            "analytics",
            "rds_cluster",
            "analytics",
            "host = \"127.0.0.1\"",
        )
        .spawn()
        .await;
    broker.wait_ready(Duration::from_secs(10)).await;
    let body = json_body(broker.get("analytics").await).await;
    assert_eq!(
        body["reader_host"],
        reader.as_str(),
        "the cluster's reader endpoint"
    );
    assert_eq!(body["port"], pg.port);
    assert_eq!(body["engine"], "aurora-postgresql");

    let took = rotation_round_trip(&upstream, &pg, &broker, "analytics", &secret_arn).await;
    eprintln!(
        "FIGURE rds-cluster rotation_to_reconnect_ms={}",
        took.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_refresh_limits_and_pending_versions_follow_a_rotation() {
    let upstream = Upstream::start().await;
    let (first, second, pending) = (
        new_password("poll-first"),
        new_password("poll-second"),
        new_password("poll-pending"),
    );
    upstream
        .create_secret("r", &json!({"username": "u", "password": first}))
        .await;
    let broker = Arc::new(
        BrokerOptions::new(upstream.proxy.endpoint())
            .database("r", "r", "engine = \"postgres\"")
            .spawn()
            .await,
    );
    broker.wait_ready(Duration::from_secs(10)).await;
    let v1 = json_body(broker.get("r").await).await["version_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Conditional GET: the current version answers 304 without a body.
    let poll = |tag: String| {
        let broker = Arc::clone(&broker);
        async move {
            broker
                .http
                .get(broker.url("/credentials/r"))
                .bearer_auth(TOKEN)
                .header("If-None-Match", tag)
                .send()
                .await
                .unwrap()
        }
    };
    let not_modified = poll(format!("\"{v1}\"")).await;
    assert_eq!(not_modified.status(), 304);
    assert_eq!(not_modified.headers()["etag"], format!("\"{v1}\"").as_str());
    assert!(not_modified.bytes().await.unwrap().is_empty());
    assert_eq!(poll("\"something-else\"".into()).await.status(), 200);

    // A rotation, then 100 concurrent refreshes: one upstream call for the current version.
    let v2 = upstream
        .rotate("r", &json!({"username": "u", "password": second}))
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = upstream.proxy.count("GetSecretValue");
    upstream.proxy.set_delay(Duration::from_millis(300));
    let refreshes: Vec<_> = (0..100)
        .map(|_| {
            let broker = Arc::clone(&broker);
            tokio::spawn(async move { json_body(broker.refresh("r").await).await })
        })
        .collect();
    for refresh in refreshes {
        assert_eq!(refresh.await.unwrap()["version_id"], v2.as_str());
    }
    upstream.proxy.set_delay(Duration::ZERO);
    let calls = upstream.proxy.count("GetSecretValue") - before;
    eprintln!("FIGURE refresh-limit concurrent_refreshes=100 upstream_current_calls={calls}");
    assert_eq!(calls, 1);
    assert_eq!(
        poll(format!("\"{v1}\"")).await.status(),
        200,
        "v1 is no longer current"
    );

    // A caller still holding v1 gets v2 without an upstream call.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = upstream.proxy.count("GetSecretValue");
    let response = broker
        .http
        .post(broker.url("/credentials/r/refresh"))
        .bearer_auth(TOKEN)
        .json(&json!({"version_id": v1}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(response).await["version_id"], v2.as_str());
    assert_eq!(
        upstream.proxy.count("GetSecretValue"),
        before,
        "superseded: no call"
    );

    // Mid-rotation: an AWSPENDING version exists and AWSCURRENT has not moved yet.
    let v3 = upstream
        .sm
        .put_secret_value()
        .secret_id("r")
        .secret_string(json!({"username": "u", "password": pending}).to_string())
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap()
        .version_id
        .unwrap();
    let response = broker
        .http
        .post(broker.url("/credentials/r/refresh"))
        .bearer_auth(TOKEN)
        .header("If-Match", format!("\"{v2}\""))
        .send()
        .await
        .unwrap();
    let body = json_body(response).await;
    assert_eq!(body["version_id"], v2.as_str());
    assert_eq!(body["password"], second.as_str());
    assert_eq!(body["pending"]["version_id"], v3.as_str());
    assert_eq!(body["pending"]["password"], pending.as_str());
    assert_eq!(body["pending"]["username"], "u");

    let metrics = broker.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "credential_broker_credential_rotations_total",
            &[("db", "r")]
        ),
        Some(1.0),
        "one version change observed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_instance_answers_410_and_the_other_databases_keep_working() {
    let upstream = Upstream::start().await;
    upstream
        .rds
        .create_db_instance()
        .db_instance_identifier("doomed")
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username(MASTER_USER)
        .manage_master_user_password(true)
        .send()
        .await
        .unwrap();
    let password = new_password("survivor");
    upstream
        .create_secret("survivor", &json!({"username": "u", "password": password}))
        .await;
    let broker = BrokerOptions::new(upstream.proxy.endpoint())
        .rds_database("doomed", "rds_instance", "doomed", "")
        .database("survivor", "survivor", "")
        .spawn()
        .await;
    broker.wait_ready(Duration::from_secs(10)).await;
    assert_eq!(broker.get("doomed").await.status(), 200);

    upstream
        .rds
        .delete_db_instance()
        .db_instance_identifier("doomed")
        .skip_final_snapshot(true)
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The application's login fails, it refreshes, and the broker finds the database gone.
    let response = broker.refresh("doomed").await;
    assert_eq!(response.status(), 410);
    assert_eq!(
        json_body(response).await["error"]["code"],
        "database_deleted"
    );
    let response = broker.get("doomed").await;
    assert_eq!(
        response.status(),
        410,
        "no stale credentials for a deleted database"
    );
    assert_eq!(broker.get("survivor").await.status(), 200);
    let metrics = broker.metrics().await;
    assert!(
        metric(
            &metrics,
            "credential_broker_database_deleted_total",
            &[("db", "doomed")]
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        metric(
            &metrics,
            "credential_broker_http_requests_total",
            &[("route", "/credentials/{db}"), ("status", "410")]
        )
        .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_without_a_managed_master_secret_is_reported_for_a_password_login() {
    let upstream = Upstream::start().await;
    upstream
        .rds
        .create_db_instance()
        .db_instance_identifier("self-managed")
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username(MASTER_USER)
        .master_user_password("kept-by-the-team-not-by-rds")
        .send()
        .await
        .expect("create_db_instance in moto");
    let broker = BrokerOptions::new(upstream.proxy.endpoint())
        .rds_database("legacy", "rds_instance", "self-managed", "")
        .cold()
        .spawn()
        .await;
    let response = broker.get("legacy").await;
    assert_eq!(response.status(), 502);
    assert_eq!(
        json_body(response).await["error"]["code"],
        "secret_not_found"
    );
    assert!(
        broker
            .log_text()
            .contains("the RDS database has no master user secret"),
        "the reason is logged"
    );
    assert_eq!(upstream.proxy.count("GetSecretValue"), 0);
}
