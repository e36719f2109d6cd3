//! The pool examples (`examples/python/pool_watch.py` with `psycopg_pool`,
//! `examples/node/pool_watch.js` with `pg.Pool`, `examples/java/PoolWatch.java` with `HikariCP`)
//! against the real broker, moto and a real PostgreSQL: each runs queries continuously through
//! two rotations with none failing, switches to each new password within 2 s of `AWSCURRENT`
//! moving without anyone refreshing (the broker watches inside the rotation window), retires
//! every connection opened with an old password, and opens its whole pool with the new one then:
//! a pool that logs in later can do so while the next rotation has changed the password but not
//! yet moved `AWSCURRENT`, and has to refresh.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::detection::{schedule, watching_broker};
use crate::examples::Example;
use crate::helpers::{TOKEN, Upstream, new_password};
use crate::pg::Postgres;

const ROLE: &str = "pool_app";
const SECRET: &str = "pool-app-db";
const DB: &str = "app";
/// The connections each example's pool holds.
const POOL_SIZE: i64 = 4;
/// How long each example runs queries, at `QUERY_RATE` a second.
const RUN_SECONDS: u64 = 16;
const QUERY_RATE: u64 = 50;
/// The most a rotation may take to reach the pool, and then to retire its old connections.
const LIMIT: Duration = Duration::from_secs(2);

async fn pool_keeps_serving_through_two_rotations(example: Example, application_name: &str) {
    let (upstream, pg) = (Upstream::start().await, Postgres::start().await);
    let secret = |password: &str| {
        json!({"username": ROLE, "password": password, "host": "127.0.0.1", "port": pg.port,
               "dbname": "postgres", "engine": "postgres"})
    };
    let first = new_password("pool-initial");
    pg.set_password(ROLE, &first).await;
    upstream.create_secret(SECRET, &secret(&first)).await;
    // A rotation window that opened 30 s ago: the broker checks every second.
    upstream
        .proxy
        .set_fault(schedule(SystemTime::now() - Duration::from_secs(30), "2h"));
    let broker = watching_broker(&upstream, DB, SECRET, "1s").spawn().await;
    broker.wait_ready(Duration::from_secs(10)).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();

    let (run, rate) = (RUN_SECONDS.to_string(), QUERY_RATE.to_string());
    let mut running = example.spawn(
        &broker,
        &token_file,
        DB,
        &[("RUN_SECONDS", &run), ("QUERY_RATE", &rate)],
    );
    running.wait_for_stdout("\"event\":\"ready\"").await;
    let admin = pg.admin().await;
    let mut figures = Vec::new();
    for round in 0..2 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The stages of a rotation: AWSPENDING, the password changed, AWSCURRENT moved.
        let password = new_password(&format!("pool-{round}"));
        let version = upstream.put_pending(SECRET, &secret(&password)).await;
        pg.set_password(ROLE, &password).await;
        let altered: f64 = admin
            .query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
            .await
            .unwrap()
            .get(0);
        upstream.promote(SECRET, &version).await;
        let promoted = Instant::now();
        let line = running
            .wait_for_stdout(&format!("\"version_id\":\"{version}\""))
            .await;
        let switched = promoted.elapsed();
        let event: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(event["event"], "switched", "{line}");
        assert_eq!(event["via"], "watch", "nobody refreshed: {line}");
        assert!(
            switched <= LIMIT,
            "round {round}: switched {switched:?} after the move"
        );
        // Connections opened after the password changed can only have used the new one: all of
        // the pool's, and none of the old ones left.
        let deadline = Instant::now() + LIMIT;
        let retired = loop {
            let row = admin
                .query_one(
                    "SELECT count(*) FILTER (WHERE backend_start < to_timestamp($1)), \
                            count(*) FILTER (WHERE backend_start >= to_timestamp($1)) \
                     FROM pg_stat_activity WHERE application_name = $2",
                    &[&altered, &application_name],
                )
                .await
                .unwrap();
            let (old, new): (i64, i64) = (row.get(0), row.get(1));
            if old == 0 && new == POOL_SIZE {
                break promoted.elapsed().saturating_sub(switched);
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: {old} connections with the old password and {new} (of \
                 {POOL_SIZE}) with the new one, 2 s after the switch; the example's stderr: {}",
                running.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        figures.push(format!(
            "rotation {round}: switched {switched:?} after the move, old connections gone \
             {retired:?} later"
        ));
    }
    let outcome = running.finish().await;
    outcome.assert_success();
    let done: Value = outcome
        .stdout
        .lines()
        .rev()
        .find(|l| l.contains("\"done\""))
        .map_or_else(
            || panic!("no done line: {}", outcome.stdout),
            |l| serde_json::from_str(l).unwrap(),
        );
    let queries = done["queries"].as_u64().unwrap();
    assert_eq!(done["failed"], 0, "{done}; stderr: {}", outcome.stderr);
    assert_eq!(done["switches"], 2, "{done}");
    assert!(
        queries >= 20 * RUN_SECONDS,
        "{queries} queries in {RUN_SECONDS} s: under 20 a second"
    );
    assert!(
        !outcome.stderr.contains("query failed"),
        "{}",
        outcome.stderr
    );
    eprintln!(
        "FIGURE pool {}: {queries} queries in {RUN_SECONDS} s, 0 failed; {}",
        outcome.name,
        figures.join("; ")
    );
    broker.assert_log_has_no_password();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_pool_keeps_serving_through_two_rotations() {
    let example = Example::python_script("python pool", "pool_watch.py");
    pool_keeps_serving_through_two_rotations(example, "pool-watch-python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_pg_pool_keeps_serving_through_two_rotations() {
    let example = Example::node_script("node pool", "pool_watch.js");
    pool_keeps_serving_through_two_rotations(example, "pool-watch-node").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hikaricp_keeps_serving_through_two_rotations() {
    let example = Example::java_class("java pool", "PoolWatch");
    pool_keeps_serving_through_two_rotations(example, "pool-watch-java").await;
}
