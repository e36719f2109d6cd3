//! Property-based tests of the running broker against `openapi.yaml` with schemathesis: no
//! generated request may cause a 5xx, and every response must match the spec (status, headers,
//! content type, schema), for both listeners.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::helpers::{BrokerOptions, TOKEN, Upstream, new_password};

fn schemathesis() -> PathBuf {
    let path = std::env::var_os("SCHEMATHESIS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/tools/bin/st"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "schemathesis not found at {}: run `bash .ci/setup` (installs schemathesis 4.32.5 into \
         .venv/tools) or set SCHEMATHESIS to an `st` binary",
        path.display()
    );
    path
}

/// What schemathesis counts as a rejection of schema-violating data: its own list, and 431, the
/// HTTP layer's answer to a request head larger than the read buffer (openapi.yaml's
/// `HeadTooLarge`), which a generated string far over a `maxLength` can make.
const REJECTIONS: &str = "[checks.negative_data_rejection]\nexpected-statuses = \
    [\"400\", \"401\", \"403\", \"404\", \"405\", \"406\", \"409\", \"415\", \"422\", \"428\", \"429\", \"431\"]\n";

fn run(base_url: &str, filter: &[&str], headers: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, REJECTIONS).unwrap();
    let mut command = Command::new(schemathesis());
    command
        .current_dir(dir.path())
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml"))
        .args([
            "--url",
            base_url,
            "--checks",
            "all",
            "--max-examples",
            "60",
            "--workers",
            "2",
        ])
        .args([
            "--generation-database",
            "none",
            "--no-color",
            "--request-timeout",
            "15",
        ])
        .args(filter);
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.contains("generated"))
        .unwrap_or("");
    eprintln!("FIGURE schemathesis {base_url} {}", summary.trim());
}

/// The token of the AWS agent's API.
const AGENT_TOKEN: &str = "schemathesis-agent-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_never_get_a_5xx_and_every_response_matches_the_spec() {
    let upstream = Upstream::start().await;
    let password = new_password("schemathesis");
    upstream
        .create_secret("orders", &json!({"username": "u", "password": password}))
        .await;
    let mut options = BrokerOptions::new(upstream.proxy.endpoint()).database(
        "orders",
        "orders",
        "host = \"db.internal\"\nport = 5432\ndbname = \"orders\"\nengine = \"postgres\"",
    );
    // A generated long poll (`wait` with a matching `If-None-Match`, or `*`) is held for its
    // whole `wait`: at most 5 s here, inside schemathesis's 10 s response-time check; a longer
    // `wait` (the spec's `30s` example) is then 400 `invalid_wait`.
    options.server_toml = "max_wait = \"5s\"".to_owned();
    // The AWS agent's API on its own listener, for every secret (moto answers the unknown).
    options.extra_toml =
        "[compat.aws_agent]\nlisten = \"127.0.0.1:0\"\nsecrets = [\"*\"]\n".to_owned();
    options.env = vec![("AWS_TOKEN", AGENT_TOKEN.to_owned())];
    let broker = options.spawn().await;
    broker.wait_ready(Duration::from_secs(10)).await;
    let api = broker.url("");
    let admin = broker.admin_url("");
    let agent = format!("http://{}", broker.agent.expect("the agent's API listens"));
    tokio::task::spawn_blocking(move || {
        run(
            &api,
            // An event stream stays open until the broker stops: tests/api/watch.rs covers it.
            // `wait` is a duration up to `server.max_wait`, which no OpenAPI schema can say: a
            // generated string is often no duration, rightly 400 `invalid_wait`, so the check
            // that every schema-valid request is accepted cannot hold for this API.
            &[
                "--include-path-regex",
                "^/credentials",
                "--exclude-path-regex",
                "/events$",
                "--exclude-checks",
                "positive_data_acceptance",
            ],
            &[format!("Authorization: Bearer {TOKEN}")],
        );
        run(
            &admin,
            &["--include-path-regex", "^/(healthz|readyz|metrics)$"],
            &[],
        );
        // A schema-valid secret id names no secret in moto: rightly 400
        // `ResourceNotFoundException`, so every schema-valid request cannot be accepted here
        // either.
        run(
            &agent,
            &[
                "--include-path-regex",
                "^/(secretsmanager|v1|ping)",
                "--exclude-checks",
                "positive_data_acceptance",
            ],
            &[format!("X-Aws-Parameters-Secrets-Token: {AGENT_TOKEN}")],
        );
    })
    .await
    .unwrap();
    // Whatever schemathesis sent, the broker's upstream counter agrees with what moto saw.
    let metrics = broker.metrics().await;
    let counted: f64 = [
        "success",
        "refused",
        "not_found",
        "error",
        "timeout",
        "malformed",
    ]
    .iter()
    .filter_map(|outcome| {
        crate::helpers::metric(
            &metrics,
            "credential_broker_upstream_requests_total",
            &[("operation", "GetSecretValue"), ("outcome", outcome)],
        )
    })
    .sum();
    let seen =
        upstream.proxy.count("GetSecretValue") + upstream.proxy.count("GetSecretValue#AWSPENDING");
    assert!(
        (counted - seen as f64).abs() < 0.5,
        "{counted} counted, {seen} seen"
    );
}
