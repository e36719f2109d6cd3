//! What a broken Secrets Manager endpoint or a deleted secret does to the broker (issue
//! "Hardening", items 3, 11 and 12), against moto behind the fault proxy, with the SDK's own
//! trace logs in the leak scan.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{
    BrokerOptions, Fault, TestBroker, Upstream, broker_command, json_body, metric, new_password,
    passwords,
};

/// moto with secret `m` and a warm broker serving it as database `m`.
async fn warm(ttl: &'static str) -> (Upstream, TestBroker, String) {
    let upstream = Upstream::start().await;
    let password = new_password("upstream-hard");
    upstream
        .create_secret("m", &json!({"username": "u", "password": password}))
        .await;
    let broker = BrokerOptions {
        ttl,
        // Every refresh reads the source: no minimum interval between fetches.
        extra_toml: "[rotation]\nrefresh_min_interval = \"0s\"".into(),
        ..BrokerOptions::new(upstream.proxy.endpoint()).database(
            "m",
            "m",
            "host = \"h\"\nport = 5432\nengine = \"postgres\"",
        )
    }
    .spawn()
    .await;
    broker.wait_ready(Duration::from_secs(10)).await;
    (upstream, broker, password)
}

/// The `upstream_requests_total` count of `GetSecretValue` with `outcome`.
async fn outcome_count(broker: &TestBroker, outcome: &str) -> f64 {
    metric(
        &broker.metrics().await,
        "credential_broker_upstream_requests_total",
        &[("operation", "GetSecretValue"), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

/// Asserts that `response` is the error `status` with `code`.
async fn assert_error(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(json_body(response).await["error"]["code"], code);
}

/// Refreshes `m` until its answer is `done` (status and body), at most 10 s (`what` says what
/// never happened); returns that body.
async fn refresh_until(
    broker: &TestBroker,
    done: impl Fn(u16, &Value) -> bool,
    what: &str,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = broker.refresh("m").await;
        let status = response.status().as_u16();
        let body = json_body(response).await;
        if done(status, &body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_answers_are_classified_counted_and_nothing_of_them_is_logged() {
    let (upstream, broker, _) = warm("5m").await;
    let leaked = new_password("malformed-body");
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:m-AbCdEf";
    let bodies = [
        // SecretString as an object.
        json!({"ARN": arn, "Name": "m", "VersionId": "v1", "SecretString": {"username": "u", "password": leaked}})
            .to_string(),
        // Truncated JSON.
        json!({"ARN": arn, "Name": "m", "VersionId": "v1", "SecretString": json!({"password": leaked}).to_string()})
            .to_string()[..90]
            .to_owned(),
        // HTML from something that is not Secrets Manager.
        format!("<html><body><h1>Gateway</h1><p>{leaked}</p></body></html>"),
        // Well-formed, but with a version id that is no version id (it would start a log line).
        json!({"ARN": arn, "Name": "m", "VersionId": "v1\r\nINFO forged line",
               "SecretString": json!({"username": "u", "password": leaked}).to_string()})
            .to_string(),
    ];
    let calls_before = upstream.proxy.count("GetSecretValue");
    for (n, body) in bodies.iter().enumerate() {
        upstream
            .proxy
            .set_fault(Fault::GetSecretValue(200, body.clone()));
        let before = upstream.proxy.count("GetSecretValue");
        let deadline = Instant::now() + Duration::from_secs(10);
        let refreshed = loop {
            let response = broker.refresh("m").await;
            if upstream.proxy.count("GetSecretValue") > before {
                break response;
            }
            assert!(Instant::now() < deadline, "body {n} was never fetched");
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        // Nothing of the answer in the log (dropping the broker scans it for every password).
        let text = broker.log_text();
        let offending: Vec<&str> = text
            .lines()
            .filter(|line| {
                line.contains("forged line")
                    || line.contains("Gateway")
                    || passwords().iter().any(|p| line.contains(p.as_str()))
            })
            .collect();
        assert!(offending.is_empty(), "body {n} in the log: {offending:?}");
        assert_eq!(refreshed.status(), 502, "body {n}");
        let error = json_body(refreshed).await;
        assert_eq!(error["error"]["code"], "upstream_error", "body {n}");
        // The cached credentials stay served: a malformed answer is an upstream failure.
        assert_eq!(broker.get("m").await.status(), 200);
    }
    // Every answer since the first fault was malformed: the refreshes', and those of background
    // retries after the backoff, however many the timing allowed.
    // A retry the proxy has seen may still be on its way back: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(3);
    let (calls, malformed) = loop {
        let calls = upstream.proxy.count("GetSecretValue") - calls_before;
        let malformed = outcome_count(&broker, "malformed").await;
        if (malformed - calls as f64).abs() < 0.5 || Instant::now() > deadline {
            break (calls, malformed);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(calls >= bodies.len(), "{calls}");
    assert!(
        (malformed - calls as f64).abs() < 0.5,
        "{malformed} of {calls}"
    );
    let reasons: Vec<Value> = broker
        .log_events()
        .into_iter()
        .filter(|e| e["message"] == "fetching credentials failed")
        .collect();
    assert!(
        reasons
            .iter()
            .filter(|e| e["error"]
                .as_str()
                .is_some_and(|r| r.starts_with("malformed response")))
            .count()
            >= bodies.len(),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_deleted_upstream_stops_being_served_at_once() {
    let (upstream, broker, password) = warm("5m").await;
    assert_eq!(
        json_body(broker.get("m").await).await["password"],
        password.as_str()
    );
    upstream
        .sm
        .delete_secret()
        .secret_id("m")
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    assert_error(broker.refresh("m").await, 502, "secret_not_found").await;
    // Nothing stale is served for a deleted secret.
    assert_error(broker.get("m").await, 502, "secret_not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_scheduled_for_deletion_stops_being_served_but_an_outage_serves_the_cache() {
    let (upstream, broker, password) = warm("5m").await;
    // An outage first: the cached credentials stay served.
    upstream.proxy.set_fault(Fault::Status(500));
    assert_eq!(broker.refresh("m").await.status(), 502);
    let cached = json_body(broker.get("m").await).await;
    assert_eq!(cached["password"], password.as_str());
    upstream.proxy.set_fault(Fault::None);
    upstream
        .sm
        .delete_secret()
        .secret_id("m")
        .send()
        .await
        .unwrap();
    refresh_until(
        &broker,
        |status, body| status == 502 && body["error"]["code"] == "secret_not_found",
        "the deletion was never seen",
    )
    .await;
    assert_eq!(broker.get("m").await.status(), 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_new_value_keeps_the_last_good_one_served_flagged_and_counted() {
    let (upstream, broker, password) = warm("5m").await;
    upstream
        .sm
        .put_secret_value()
        .secret_id("m")
        .secret_string(format!("not json {}", new_password("bad-value")))
        .send()
        .await
        .unwrap();
    assert_error(broker.refresh("m").await, 502, "malformed_secret").await;
    let served = json_body(broker.get("m").await).await;
    assert_eq!(served["password"], password.as_str(), "the last good value");
    assert_eq!(served["stale"], true, "flagged");
    let page = broker.metrics().await;
    assert_eq!(
        metric(
            &page,
            "credential_broker_malformed_secret_total",
            &[("db", "m")]
        ),
        Some(1.0)
    );
    let ready = json_body(broker.admin_get("/readyz").await).await;
    assert_eq!(ready["status"], "degraded");
    assert_eq!(ready["degraded"], json!(["m"]));

    let good = new_password("good-again");
    upstream
        .rotate("m", &json!({"username": "u", "password": good}))
        .await;
    let body = refresh_until(&broker, |status, _| status == 200, "never recovered").await;
    assert_eq!(body["password"], good.as_str());
    assert_eq!(body["stale"], false);
    assert_eq!(
        json_body(broker.admin_get("/readyz").await).await["status"],
        "ready"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_never_start_a_line_from_an_upstream_value() {
    let upstream = Upstream::start().await;
    let password = new_password("text-log");
    upstream
        .create_secret("m", &json!({"username": "u", "password": password}))
        .await;
    let body = json!({"ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:m-AbCdEf",
        "Name": "m", "VersionId": "v1\r\nERROR forged line\u{1b}[2J",
        "SecretString": json!({"username": "u", "password": password}).to_string()})
    .to_string();
    upstream.proxy.set_fault(Fault::GetSecretValue(200, body));
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, crate::helpers::TOKEN).unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[auth]\ntoken_file = {:?}\n\
             [aws]\nregion = \"us-east-1\"\nendpoint_url = {:?}\nmax_attempts = 1\n\
             [upstream]\nbackoff_initial = \"100ms\"\nbackoff_max = \"200ms\"\n\
             [log]\nformat = \"text\"\nlevel = \"trace\"\n[databases.m]\nsecret_id = \"m\"\n",
            token.display().to_string(),
            upstream.proxy.endpoint()
        ),
    )
    .unwrap();
    let log = dir.path().join("broker.log");
    let mut child = broker_command(&config, &log).spawn().unwrap();
    // Warm-up fetches the answer above.
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.proxy.count("GetSecretValue") < 1 {
        assert!(Instant::now() < deadline, "the broker never fetched");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("listening"), "{text}");
    for line in text.lines() {
        assert!(
            !line.trim_start().starts_with("ERROR forged") && !line.contains('\u{1b}'),
            "a line started by an upstream value: {line:?}"
        );
    }
    assert!(passwords().iter().all(|p| !text.contains(p)));
}
