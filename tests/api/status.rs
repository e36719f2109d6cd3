//! The operator's view against real moto: `GET /status` and `credential-broker status` show
//! each state as it really happens (not fetched, fresh, deleted, stale in an outage, expired
//! after it) with no secret, and the command's exit code says whether every database is fresh.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;

/// `credential-broker status --url <admin> [args]`: its exit code and output.
fn status_command(broker: &TestBroker, args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_credential-broker"))
        .arg("status")
        .arg("--url")
        .arg(broker.admin_url(""))
        .args(args)
        .env_clear()
        .output()
        .unwrap();
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
    )
}

/// The `GET /status` entry of `db`.
async fn status_of(broker: &TestBroker, db: &str) -> Value {
    let body: Value = broker.admin_get("/status").await.json().await.unwrap();
    body["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["db"] == db)
        .unwrap_or_else(|| panic!("{db} in {body}"))
        .clone()
}

/// Waits until `db` is in `state`.
async fn wait_for_state(broker: &TestBroker, db: &str, state: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let entry = status_of(broker, db).await;
        if entry["state"] == state {
            return entry;
        }
        assert!(Instant::now() < deadline, "{db} never {state}: {entry}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `entry` has exactly the fields openapi.yaml's `DatabaseStatus` requires.
fn assert_documented(entry: &Value) {
    let spec = crate::openapi::spec();
    let required: std::collections::BTreeSet<&str> = spec
        .pointer("/components/schemas/DatabaseStatus/required")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let keys: std::collections::BTreeSet<&str> = entry
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, required);
}

/// The line of `db` in the status table, split into its columns.
fn row<'a>(table: &'a str, db: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
        })
        .find(|cells| cells.first() == Some(&db))
        .unwrap_or_else(|| panic!("{db} in\n{table}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_is_shown_as_it_happens_and_the_exit_code_says_if_all_are_fresh() {
    let upstream = Upstream::start().await;
    let mut passwords = Vec::new();
    for name in ["status/a", "status/gone", "status/never"] {
        let password = new_password("status");
        upstream
            .create_secret(name, &json!({"username": "app", "password": password}))
            .await;
        passwords.push(password);
    }
    let broker = BrokerOptions {
        ttl: "1s",
        max_stale: "2s",
        ..BrokerOptions::new(upstream.proxy.endpoint())
            .database("a", "status/a", "")
            .database("gone", "status/gone", "")
            .database("never", "status/never", "")
            .cold()
    }
    .spawn()
    .await;
    assert_eq!(broker.get("a").await.status(), 200);
    assert_eq!(broker.get("gone").await.status(), 200);

    let fresh = status_of(&broker, "a").await;
    assert_eq!(fresh["state"], "fresh");
    assert_documented(&fresh);
    assert_eq!(fresh["consecutive_failures"], 0);
    assert_eq!(fresh["region"], "us-east-1");
    assert_eq!(status_of(&broker, "never").await["state"], "not_fetched");
    let (code, table) = status_command(&broker, &[]);
    assert_eq!(code, 1, "one database is not fetched:\n{table}");
    let a = row(&table, "a");
    assert_eq!(a[1], "fresh");
    assert_eq!(a[2], &fresh["version_id"].as_str().unwrap()[..8]);
    assert_eq!(row(&table, "never")[1], "not_fetched");

    // Deleted upstream: a refresh finds it gone.
    upstream
        .sm
        .delete_secret()
        .secret_id("status/gone")
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    // A refresh within the minimum interval is answered from the cache: wait it out.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_ne!(broker.refresh("gone").await.status(), 200);
    assert_eq!(status_of(&broker, "gone").await["state"], "deleted");

    // An outage: past the TTL the last value is served stale, then expires.
    upstream.proxy.set_fault(Fault::Reset);
    let stale = wait_for_state(&broker, "a", "stale", Duration::from_secs(5)).await;
    let stale = if stale["consecutive_failures"] == 0 {
        // The background retry lands shortly after the TTL.
        tokio::time::sleep(Duration::from_millis(500)).await;
        status_of(&broker, "a").await
    } else {
        stale
    };
    assert!(
        stale["consecutive_failures"].as_u64().unwrap() >= 1,
        "{stale}"
    );
    assert!(stale["next_retry_at"].is_string(), "{stale}");
    let (code, json_text) = status_command(&broker, &["--output", "json"]);
    assert_eq!(code, 1);
    let parsed: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(parsed["all_fresh"], false);
    wait_for_state(&broker, "a", "expired", Duration::from_secs(5)).await;
    let (_, table) = status_command(&broker, &[]);
    assert_eq!(row(&table, "a")[1], "expired");

    // No secret anywhere in the view.
    let everything = broker.admin_get("/status").await.text().await.unwrap();
    for password in &passwords {
        assert!(!everything.contains(password.as_str()) && !table.contains(password.as_str()));
    }

    // The source answers again: fresh, no failures.
    upstream.proxy.set_fault(Fault::None);
    let back = wait_for_state(&broker, "a", "fresh", Duration::from_secs(10)).await;
    assert_eq!(back["consecutive_failures"], 0);
}

#[tokio::test]
async fn status_exits_zero_when_every_database_is_fresh() {
    let upstream = Upstream::start().await;
    upstream
        .create_secret(
            "status/ok",
            &json!({"username": "app", "password": new_password("ok")}),
        )
        .await;
    let broker = BrokerOptions::new(upstream.proxy.endpoint())
        .database("ok", "status/ok", "")
        .spawn()
        .await;
    broker.wait_ready(Duration::from_secs(10)).await;
    let (code, table) = status_command(&broker, &[]);
    assert_eq!(code, 0, "{table}");
    assert_eq!(row(&table, "ok")[1], "fresh");
    // A broker that does not answer: exit 1 with a message, never 0.
    let output = Command::new(env!("CARGO_BIN_EXE_credential-broker"))
        .args([
            "status",
            "--url",
            &format!("http://127.0.0.1:{}", free_port()),
        ])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot reach"));
}
