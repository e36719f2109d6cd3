//! How soon the broker learns of a rotation without anyone asking, and what that costs:
//! `DescribeSecret` every `rotation.watch_interval` while a rotation may be under way (its
//! window, a pending version, a recent refresh), every `rotation.describe_interval` otherwise,
//! and `GetSecretValue` only when `AWSCURRENT` moved or the TTL ran out. The fault proxy places
//! the rotation window (moto keeps none); calls are counted at the proxy.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::helpers::{BrokerOptions, Fault, FileBroker, Upstream, json_body, metric, new_password};
use crate::pg::Postgres;
use crate::watch::{etag, long_poll, pg_secret, rotate, seed_orders};

fn epoch_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// `DescribeSecret` answers that place a rotation schedule with its window opening at `next`.
pub(crate) fn schedule(next: SystemTime, window: &str) -> Fault {
    Fault::Describe(json!({
        "RotationEnabled": true,
        "NextRotationDate": epoch_seconds(next),
        "RotationRules": {"AutomaticallyAfterDays": 7, "Duration": window},
    }))
}

/// Every call the proxy saw for one database's secret.
fn calls(upstream: &Upstream) -> usize {
    upstream.proxy.count("GetSecretValue")
        + upstream.proxy.count("GetSecretValue#AWSPENDING")
        + upstream.proxy.count("DescribeSecret")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_inside_its_window_is_served_within_the_watch_interval_unasked() {
    let (upstream, pg) = (Upstream::start().await, Postgres::start().await);
    seed_orders(&upstream, &pg, "window-old").await;
    // The window opened 30 s ago and lasts 2 h.
    upstream
        .proxy
        .set_fault(schedule(SystemTime::now() - Duration::from_secs(30), "2h"));
    let broker = watching_broker(&upstream, "orders", "orders", "2s")
        .spawn()
        .await;
    broker.wait_ready(Duration::from_secs(10)).await;
    let v0 = etag(&broker.get("orders").await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fetches_before = upstream.proxy.count("GetSecretValue");

    // Rotate; nobody refreshes: a long poll is held until the broker sees it by itself.
    let held = async {
        let response = long_poll(&broker, "orders", "30s", &v0).await;
        (response, Instant::now())
    };
    let rotation = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rotated = rotate(&upstream, &pg, "orders", "window-new").await;
        (rotated, Instant::now())
    };
    let ((response, served), ((new, v1), moved)) = tokio::join!(held, rotation);
    let seen_after = served.saturating_duration_since(moved);
    assert_eq!(response.status(), 200);
    assert_eq!(etag(&response), v1);
    let body = json_body(response).await;
    assert_eq!(body["password"], new.as_str());
    assert!(
        seen_after <= Duration::from_secs(3),
        "seen {seen_after:?} after AWSCURRENT moved (watch interval 2 s)"
    );
    pg.connect("app", &new)
        .await
        .expect("the new password connects");
    // One fetch of the value for the move (plus its pending read, if any), however many checks.
    let fetches = upstream.proxy.count("GetSecretValue") - fetches_before;
    assert_eq!(fetches, 1, "GetSecretValue calls for one rotation");
    let text = broker.metrics().await;
    let count = metric(
        &text,
        "credential_broker_rotation_detection_seconds_count",
        &[],
    );
    assert_eq!(count, Some(1.0), "one detection timed");
    let sum = metric(
        &text,
        "credential_broker_rotation_detection_seconds_sum",
        &[],
    )
    .unwrap();
    assert!(sum <= 3.0, "detection delay {sum} s");
    eprintln!(
        "FIGURE detection in a window: served {seen_after:?} after AWSCURRENT moved \
         (watch_interval 2 s), histogram {sum:.2} s, {} DescribeSecret calls",
        upstream.proxy.count("DescribeSecret")
    );
    broker.assert_log_has_no_password();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_a_window_a_database_costs_at_most_two_calls_an_hour() {
    let upstream = Upstream::start().await;
    for db in ["a", "b", "c"] {
        upstream
            .create_secret(db, &json!({"username": "u", "password": new_password(db)}))
            .await;
    }
    // The next window opens in a week.
    upstream.proxy.set_fault(schedule(
        SystemTime::now() + Duration::from_hours(7 * 24),
        "3h",
    ));

    // With the defaults (TTL 6 h, checks hourly): warmed up, then one check each, then quiet.
    let mut defaults = BrokerOptions::new(upstream.proxy.endpoint());
    for db in ["a", "b", "c"] {
        defaults = defaults.database(db, db, "");
    }
    defaults.ttl = "6h";
    let broker = defaults.spawn().await;
    broker.wait_ready(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_start = (calls(&upstream), upstream.proxy.count("DescribeSecret"));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        after_start.1, 3,
        "one DescribeSecret per database after warm-up"
    );
    assert_eq!(calls(&upstream), after_start.0, "no call in the next 10 s");
    drop(broker);

    // The same schedule with an hour played as 2 s (TTL 12 s, checks every 2 s), over 20 s:
    // ten "hours" of three databases.
    let before = calls(&upstream);
    let mut scaled = BrokerOptions::new(upstream.proxy.endpoint());
    for db in ["a", "b", "c"] {
        scaled = scaled.database(db, db, "");
    }
    scaled.ttl = "12s";
    scaled.extra_toml = "[rotation]\ndescribe_interval = \"2s\"\nwatch_interval = \"1s\"\n".into();
    let broker = scaled.spawn().await;
    let started = Instant::now();
    broker.wait_ready(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(started.elapsed())).await;
    let hours = started.elapsed().as_secs_f64() / 2.0;
    let made = calls(&upstream) - before;
    let per_db_hour = made as f64 / 3.0 / hours;
    // Warm-up included: 3 fetches, then per "hour" 1 check and 1/5.1 fetch per database.
    assert!(
        per_db_hour <= 2.0,
        "{made} calls: {per_db_hour:.2} per database per hour"
    );
    assert!(
        upstream.proxy.count("DescribeSecret") - after_start.1 >= 3 * 8,
        "the hourly checks ran"
    );
    eprintln!(
        "FIGURE outside a window: defaults 2 calls per database at start then 0 in 10 s; \
         scaled (1 h = 2 s) {made} calls for 3 databases over {hours:.1} h = {per_db_hour:.2} \
         per database per hour"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_version_or_a_refresh_has_the_broker_watch() {
    let (upstream, pg) = (Upstream::start().await, Postgres::start().await);
    seed_orders(&upstream, &pg, "pending-old").await;
    // No rotation schedule at all (moto's answer as it is).
    let options = || watching_broker(&upstream, "orders", "orders", "1s");
    let broker = options().spawn().await;
    broker.wait_ready(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let quiet = upstream.proxy.count("DescribeSecret");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        upstream.proxy.count("DescribeSecret"),
        quiet,
        "no check in 3 s"
    );

    // A refresh (a login failed): checked every second for a while.
    assert_eq!(broker.refresh("orders").await.status(), 200);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let watched = upstream.proxy.count("DescribeSecret") - quiet;
    assert!(
        (3..=5).contains(&watched),
        "{watched} checks in 3.5 s after a refresh"
    );
    drop(broker);

    // A pending version seen by the first check: watched until it is promoted, then served.
    let new = new_password("pending-new");
    let v1 = upstream.put_pending("orders", &pg_secret(&pg, &new)).await;
    let broker = options().spawn().await;
    broker.wait_ready(Duration::from_secs(10)).await;
    let v0 = etag(&broker.get("orders").await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let since = upstream.proxy.count("DescribeSecret");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let watched = upstream.proxy.count("DescribeSecret") - since;
    assert!(
        watched >= 2,
        "{watched} checks in 3 s with AWSPENDING staged"
    );
    pg.set_password("app", &new).await;
    upstream.promote("orders", &v1).await;
    let promoted = Instant::now();
    let response = long_poll(&broker, "orders", "10s", &v0).await;
    let seen_after = promoted.elapsed();
    assert_eq!(etag(&response), v1);
    assert_eq!(json_body(response).await["password"], new.as_str());
    assert!(
        seen_after <= Duration::from_secs(2),
        "promotion seen after {seen_after:?}"
    );
    eprintln!(
        "FIGURE watch: {watched} checks in 3 s with AWSPENDING staged; promotion served after \
         {seen_after:?} (watch_interval 1 s)"
    );
}

/// A broker serving `db` from `secret` behind `upstream`'s proxy: TTL 1 h and hourly checks, so
/// that only the watch (every `watch_interval`) can see a rotation in a test's time.
pub(crate) fn watching_broker(
    upstream: &Upstream,
    db: &str,
    secret: &str,
    watch_interval: &str,
) -> BrokerOptions {
    let mut options = BrokerOptions::new(upstream.proxy.endpoint()).database(db, secret, "");
    options.ttl = "1h";
    options.extra_toml =
        format!("[rotation]\ndescribe_interval = \"1h\"\nwatch_interval = \"{watch_interval}\"\n");
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_of_the_secrets_file_is_served_within_the_watch_interval() {
    let (a_old, b) = (new_password("file-a-old"), new_password("file-b"));
    let secrets = json!({
        "sec-a": {"username": "a", "password": a_old},
        "sec-b": {"username": "b", "password": b},
    });
    let databases = "[databases.a]\nsecret_id = \"sec-a\"\n[databases.b]\nsecret_id = \"sec-b\"\n";
    // The default TTL (6 h): only the checks can see the edit.
    let broker = FileBroker::spawn(
        &secrets,
        "",
        "",
        "[rotation]\nwatch_interval = \"1s\"\n",
        databases,
    )
    .await;
    broker.wait_ready(Duration::from_secs(10)).await;
    assert_eq!(
        json_body(broker.get("a").await).await["password"],
        a_old.as_str()
    );
    let a_new = new_password("file-a-new");
    let edited = json!({"sec-a": {"username": "a", "password": a_new}});
    let temporary = broker.secrets.with_extension("new");
    std::fs::write(&temporary, edited.to_string()).unwrap();
    std::fs::rename(&temporary, &broker.secrets).unwrap();
    let written = Instant::now();
    let deadline = written + Duration::from_secs(5);
    loop {
        let body = json_body(broker.get("a").await).await;
        if body["password"] == a_new.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "the edit was not served in 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let served_after = written.elapsed();
    assert!(
        served_after <= Duration::from_secs(2),
        "served {served_after:?} after the edit"
    );
    // `b`, removed from the file, stops being served.
    let removed = loop {
        let response = broker.get("b").await;
        if response.status() != 200 {
            break response;
        }
        assert!(Instant::now() < deadline, "the removal was not seen in 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(removed.status(), 502);
    assert_eq!(
        json_body(removed).await["error"]["code"],
        "secret_not_found"
    );
    eprintln!(
        "FIGURE file source: an edit served {served_after:?} after it (watch_interval 1 s, TTL 6 h)"
    );
}
