//! Rotations reaching a file: psql logs in with a pgpass sink before and after one, and a `json`
//! sink shows the pending version as soon as a fetch reads it.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{eventually, psql_logs_in, rotating_broker, sink_count, sink_toml, wait_until};
use crate::helpers::*;
use crate::pg::Postgres;
use crate::watch::{pg_secret, rotate, seed_orders};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_logs_in_with_a_pgpass_sink_before_and_after_a_rotation() {
    let (upstream, pg) = (Upstream::start().await, Postgres::start().await);
    let old = seed_orders(&upstream, &pg, "sink-old").await;
    let dir = tempfile::tempdir().unwrap();
    let pgpass = dir.path().join("pgpass");
    let hook_env = dir.path().join("hook.env");
    let hook = dir.path().join("hook.sh");
    std::fs::write(&hook, format!("#!/bin/sh\nenv > {}\n", hook_env.display())).unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut options = rotating_broker(&upstream);
    options.extra_toml.push_str(&sink_toml(
        "orders",
        "pgpass",
        &pgpass,
        &format!("on_change = [{:?}, \"reload\"]", hook.display().to_string()),
    ));
    let mut broker = options.spawn().await;
    broker
        .wait_for_log("credential file written", Duration::from_secs(10))
        .await;
    psql_logs_in(&pg, "", &[("PGPASSFILE", &pgpass)]).expect("psql logs in with the first file");
    let mode = std::fs::metadata(&pgpass).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "the file has the default mode");
    let ready = json_body(broker.admin_get("/readyz").await).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["sinks_not_ready"], json!([]), "{ready}");

    let started = Instant::now();
    let (new, version) = rotate(&upstream, &pg, "orders", "sink-new").await;
    assert!(
        psql_logs_in(&pg, "", &[("PGPASSFILE", &pgpass)]).is_err(),
        "the old password no longer logs in"
    );
    let mut attempts = 0;
    let took = wait_until(
        Duration::from_secs(15),
        "psql logs in after the rotation",
        || {
            attempts += 1;
            psql_logs_in(&pg, "", &[("PGPASSFILE", &pgpass)]).is_ok()
        },
    )
    .await;
    println!(
        "psql logged in with the rotated file {:?} after the promotion ({attempts} tries, {:?} since the rotation began)",
        took,
        started.elapsed()
    );
    let content = std::fs::read_to_string(&pgpass).unwrap();
    // pgpass escapes some of the passwords' characters; their cores are plain.
    let core = |password: &str| password.split('!').next().unwrap().to_owned();
    assert!(
        content.contains(&core(&new)) && !content.contains(&core(&old)),
        "the file holds the new password only: {content}"
    );
    wait_until(
        Duration::from_secs(10),
        "the hook ran for the new version",
        || std::fs::read_to_string(&hook_env).is_ok_and(|env| env.contains(&version)),
    )
    .await;
    let env = std::fs::read_to_string(&hook_env).unwrap();
    assert!(
        env.contains(&format!("CREDENTIAL_BROKER_FILE={}", pgpass.display())),
        "{env}"
    );
    assert!(env.contains("CREDENTIAL_BROKER_DATABASE=orders"), "{env}");
    for leaked in [&old, &new] {
        assert!(
            !env.contains(leaked.as_str()),
            "a password reached the command's environment"
        );
    }
    assert!(
        !env.contains("AWS_"),
        "the broker's AWS settings reached the command: {env}"
    );
    let metrics = broker.metrics().await;
    let sink = pgpass.display().to_string();
    assert!(
        sink_count(&metrics, "credential_broker_sink_writes_total", &sink, "ok") >= 2,
        "{metrics}"
    );
    assert!(
        sink_count(
            &metrics,
            "credential_broker_sink_commands_total",
            &sink,
            "ok"
        ) >= 2,
        "{metrics}"
    );
    assert!(!metrics.contains(new.as_str()) && !metrics.contains(old.as_str()));
    broker.assert_log_has_no_password();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_sink_shows_a_pending_version_once_read_and_a_pgpass_sink_waits_for_the_promotion() {
    let (upstream, pg) = (Upstream::start().await, Postgres::start().await);
    seed_orders(&upstream, &pg, "pending-old").await;
    let dir = tempfile::tempdir().unwrap();
    let (json_path, pgpass) = (dir.path().join("orders.json"), dir.path().join("pgpass"));
    let mut options = rotating_broker(&upstream);
    options
        .extra_toml
        .push_str(&sink_toml("orders", "json", &json_path, ""));
    options
        .extra_toml
        .push_str(&sink_toml("orders", "pgpass", &pgpass, ""));
    let broker = options.spawn().await;
    let writes = |path: &std::path::Path| {
        let (broker, sink) = (&broker, path.display().to_string());
        async move {
            sink_count(
                &broker.metrics().await,
                "credential_broker_sink_writes_total",
                &sink,
                "ok",
            )
        }
    };
    let read_json = || -> serde_json::Value {
        std::fs::read_to_string(&json_path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    };
    wait_until(Duration::from_secs(10), "the first json file", || {
        read_json()["version_id"].is_string()
    })
    .await;

    let new = new_password("pending-new");
    let started = Instant::now();
    let version = upstream.put_pending("orders", &pg_secret(&pg, &new)).await;
    // An application whose login failed asks for a refresh naming the version it has: the fetch
    // reads the pending version.
    let failed = read_json()["version_id"].as_str().unwrap().to_owned();
    let refresh = broker
        .http
        .post(broker.url("/credentials/orders/refresh"))
        .bearer_auth(TOKEN)
        .header("If-Match", format!("\"{failed}\""));
    let refreshed = json_body(broker.send(refresh).await).await;
    assert_eq!(refreshed["pending"]["version_id"], version.as_str());
    let took = wait_until(
        Duration::from_secs(10),
        "the json file shows the pending version",
        || read_json()["pending"]["version_id"] == version.as_str(),
    )
    .await;
    println!("the json sink showed the pending version {took:?} after it was put and read");
    assert_eq!(read_json()["pending"]["password"], new.as_str());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        writes(&pgpass).await,
        1,
        "pgpass holds no pending version: not rewritten for one"
    );

    pg.set_password("app", &new).await;
    upstream.promote("orders", &version).await;
    wait_until(
        Duration::from_secs(10),
        "the json file holds the promoted version",
        || read_json()["version_id"] == version.as_str() && read_json()["pending"].is_null(),
    )
    .await;
    assert_eq!(read_json()["password"], new.as_str());
    eventually(
        Duration::from_secs(5),
        "pgpass is rewritten for the promotion",
        || async { writes(&pgpass).await >= 2 },
    )
    .await;
    psql_logs_in(&pg, "", &[("PGPASSFILE", &pgpass)]).expect("psql logs in with the new pgpass");
    assert_eq!(
        writes(&json_path).await,
        3,
        "json: the first version, the pending one, the promotion"
    );
    broker.assert_log_has_no_password();
}
