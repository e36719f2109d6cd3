//! The Grafana dashboard and the Prometheus alerts, queried for real: a real Prometheus scrapes a
//! real broker (against moto, through the fault proxy) through a rotation, an outage with stale
//! and expired answers, a malformed secret, a refused token reload, an impaired and then deleted
//! RDS database and an overdue rotation. Each alert's expression returns series while its
//! condition holds, and every dashboard query returns series without error; a failure names
//! the alert or panel.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::helpers::*;

const APP_TOKEN: &str = "dashboards-app-token-0123456789";
const OPS_TOKEN: &str = "dashboards-ops-token-0123456789";

/// Every alert of docker/prometheus/alerts.yml: name and expression.
fn alerts() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repo_root().join("docker/prometheus/alerts.yml")).unwrap();
    let rules: Value = serde_norway::from_str(&text).unwrap();
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap())
        .map(|rule| {
            let name = rule["alert"].as_str().unwrap().to_owned();
            (name, rule["expr"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// Every query of the dashboard, named by panel title, with Grafana's variables filled in as a
/// dashboard over all databases would (`$__rate_interval` 30 s: Prometheus scrapes every 1 s).
fn panel_queries() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(repo_root().join("docker/grafana/credential-broker.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let expr = expr
                .replace("$__rate_interval", "30s")
                .replace("$__range", "10m")
                .replace("$db", ".*");
            queries.push((panel["title"].as_str().unwrap().to_owned(), expr));
        }
    }
    queries
}

/// Polls `expr` until it returns series (within `limit`); panics naming `what` otherwise.
async fn wait_for_series(prometheus: &Prometheus, what: &str, expr: &str, limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let answer = prometheus.query(expr).await;
        if answer["result"].as_array().is_some_and(|r| !r.is_empty()) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: `{expr}` returned no series within {limit:?}: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Replaces a token file the way an operator's tooling does: a new file renamed over it.
fn replace_token(path: &Path, token: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, token).unwrap();
    std::fs::rename(next, path).unwrap();
}

fn epoch_seconds(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_and_dashboard_query_returns_series_from_a_scraped_broker() {
    let upstream = Upstream::start().await;
    for name in ["dash/orders", "dash/broken"] {
        upstream
            .create_secret(
                name,
                &json!({"username": "app", "password": new_password("dash")}),
            )
            .await;
    }
    upstream.create_managed_instance("dash-db").await;
    let dir = tempfile::tempdir().unwrap();
    let (app_file, ops_file) = (dir.path().join("app.token"), dir.path().join("ops.token"));
    replace_token(&app_file, APP_TOKEN);
    replace_token(&ops_file, OPS_TOKEN);
    let clients = format!(
        "[clients.app]\ntoken_file = {:?}\ndatabases = [\"*\"]\n[clients.ops]\ntoken_file = {:?}\ndatabases = [\"orders\"]\n",
        app_file.display().to_string(),
        ops_file.display().to_string()
    );
    let mut broker = BrokerOptions {
        ttl: "2s",
        max_stale: "2s",
        topology_ttl: "1s",
        auth_toml: "reload_interval = \"100ms\"".into(),
        extra_toml: format!("[rotation]\ndescribe_interval = \"1s\"\n{clients}"),
        ..BrokerOptions::new(upstream.proxy.endpoint())
            .database("orders", "dash/orders", "")
            .database("broken", "dash/broken", "")
            .rds_database("rds", "rds_instance", "dash-db", "")
    }
    .spawn()
    .await;
    broker.wait_ready(Duration::from_secs(15)).await;
    let prometheus = Prometheus::start(&broker.admin.to_string());
    let alerts = alerts();
    let mut checked = Vec::new();
    let limit = Duration::from_secs(20);
    let mut check_alert = async |name: &str| {
        let expr = alerts
            .get(name)
            .unwrap_or_else(|| panic!("alert {name} in alerts.yml"));
        wait_for_series(&prometheus, &format!("alert {name}"), expr, limit).await;
        checked.push(name.to_owned());
    };

    // Reads by both clients, one refused for its scope and one for its token.
    for db in ["orders", "broken", "rds"] {
        assert_eq!(broker.get_as(db, APP_TOKEN).await.status(), 200);
    }
    assert_eq!(broker.get_as("orders", OPS_TOKEN).await.status(), 200);
    assert_eq!(broker.get_as("broken", OPS_TOKEN).await.status(), 403);
    assert_eq!(
        broker
            .get_as("orders", "not-a-token-0123456789")
            .await
            .status(),
        401
    );

    // Rotation enabled, and the next rotation two hours past: overdue for the databases that
    // see no new version.
    let now = SystemTime::now();
    upstream.proxy.set_fault(Fault::Describe(json!({
        "RotationEnabled": true,
        "NextRotationDate": epoch_seconds(now - Duration::from_hours(2)),
        "LastRotatedDate": epoch_seconds(now - Duration::from_hours(170)),
    })));
    check_alert("CredentialBrokerRotationOverdue").await;

    // A rotation, seen by the rotation checks.
    upstream
        .rotate(
            "dash/orders",
            &json!({"username": "app", "password": new_password("dash")}),
        )
        .await;
    wait_for_series(
        &prometheus,
        "the rotation",
        r#"increase(credential_broker_credential_rotations_total{db="orders"}[5m]) > 0"#,
        limit,
    )
    .await;
    upstream.proxy.set_fault(Fault::None);

    // RDS reports the master user secret impaired, then active again.
    let impaired = "<SecretStatus>impaired</SecretStatus>";
    upstream.proxy.set_rewrites(&[
        ("<SecretStatus>active</SecretStatus>", impaired),
        ("<SecretStatus>creating</SecretStatus>", impaired),
    ]);
    check_alert("CredentialBrokerSecretImpaired").await;
    upstream.proxy.set_rewrites(&[]);

    // A new value that is not credentials.
    upstream
        .sm
        .put_secret_value()
        .secret_id("dash/broken")
        .secret_string("not json")
        .send()
        .await
        .unwrap();
    check_alert("CredentialBrokerMalformedSecret").await;

    // ops's token file takes app's token: the reload is refused.
    replace_token(&ops_file, APP_TOKEN);
    check_alert("CredentialBrokerTokenReloadRefused").await;

    // An outage: upstream down, stale answers, then expired ones.
    upstream.proxy.set_fault(Fault::Reset);
    check_alert("CredentialBrokerUpstreamDown").await;
    let deadline = std::time::Instant::now() + limit;
    let mut statuses = Vec::new();
    while !statuses.contains(&503) {
        let response = broker.get_as("orders", APP_TOKEN).await;
        statuses.push(response.status().as_u16());
        assert!(
            std::time::Instant::now() < deadline,
            "no 503 in the outage: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    check_alert("CredentialBrokerServingStale").await;
    check_alert("CredentialBrokerCredentialsExpired").await;
    upstream.proxy.set_fault(Fault::None);
    let deadline = std::time::Instant::now() + limit;
    while broker.get_as("orders", APP_TOKEN).await.status() != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery after the outage"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The RDS database is deleted.
    upstream
        .rds
        .delete_db_instance()
        .db_instance_identifier("dash-db")
        .skip_final_snapshot(true)
        .send()
        .await
        .unwrap();
    check_alert("CredentialBrokerDatabaseDeleted").await;

    // Every panel, over what happened: a little traffic first, so that rates have samples.
    for _ in 0..20 {
        let _ = broker.get_as("orders", APP_TOKEN).await;
        let _ = broker.get_as("orders", OPS_TOKEN).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let queries = panel_queries();
    assert!(queries.len() >= 20, "{} dashboard queries", queries.len());
    for (panel, expr) in &queries {
        wait_for_series(
            &prometheus,
            &format!("panel {panel:?}"),
            expr,
            Duration::from_secs(5),
        )
        .await;
    }

    // The broker stops: Prometheus sees it down.
    broker.terminate();
    assert_eq!(
        broker.wait_exit(Duration::from_secs(10)).await.code(),
        Some(0)
    );
    check_alert("CredentialBrokerDown").await;

    checked.sort();
    let all: Vec<String> = alerts.keys().cloned().collect();
    assert_eq!(checked, all, "every alert of alerts.yml is checked here");
    eprintln!(
        "FIGURE dashboards alerts_checked={} panel_queries_checked={}",
        checked.len(),
        queries.len()
    );
}
