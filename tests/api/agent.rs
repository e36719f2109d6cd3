//! The AWS Secrets Manager Agent's API (`[compat.aws_agent]`, `--agent-config`) against real
//! moto: every line of the agent's contract its callers depend on, the broker's own behaviour
//! behind it (one upstream call for many cold requests, stale serving), and the agent's own
//! configuration files, Python client and curl line.

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::helpers::*;

/// The token the agent's API is configured with, through `AWS_TOKEN`.
const AGENT_TOKEN: &str = "agent-test-token-7d41e0b2c9";
const TOKEN_HEADER: &str = "X-Aws-Parameters-Secrets-Token";

/// A broker serving the agent's API for `secrets` (TOML list items) with a `ttl`.
async fn agent_broker(upstream: &Upstream, secrets: &str, ttl: &str) -> TestBroker {
    BrokerOptions {
        extra_toml: format!(
            "[compat.aws_agent]\nlisten = \"127.0.0.1:0\"\nttl = {ttl:?}\nsecrets = [{secrets}]\n"
        ),
        env: vec![("AWS_TOKEN", AGENT_TOKEN.to_owned())],
        ..BrokerOptions::new(upstream.proxy.endpoint())
    }
    .spawn()
    .await
}

/// `GET path_and_query` on the agent's listener, with `token` in its header when given.
async fn agent_get(
    broker: &TestBroker,
    path_and_query: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let url = format!(
        "http://{}{path_and_query}",
        broker.agent.expect("the agent's API listens")
    );
    let mut request = broker.http.get(url);
    if let Some(token) = token {
        request = request.header(TOKEN_HEADER, token);
    }
    request.send().await.unwrap()
}

/// The 200 body of a secret read.
async fn read_secret(broker: &TestBroker, path_and_query: &str) -> Value {
    let response = agent_get(broker, path_and_query, Some(AGENT_TOKEN)).await;
    assert_eq!(response.status(), 200, "{path_and_query}");
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

/// The status and text of an answer.
async fn status_and_text(response: reqwest::Response) -> (u16, String) {
    (response.status().as_u16(), response.text().await.unwrap())
}

fn encode(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

#[tokio::test]
async fn a_secret_is_served_by_name_full_arn_and_partial_arn_with_the_agents_fields() {
    let upstream = Upstream::start().await;
    let value = json!({"username": "app", "password": new_password("agent-name")});
    let arn = upstream.create_secret("prod/orders", &value).await;
    let blob: Vec<u8> = (0u8..=255).collect();
    upstream
        .sm
        .create_secret()
        .name("prod/blob")
        .secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(blob.clone()))
        .send()
        .await
        .unwrap();
    let broker = agent_broker(
        &upstream,
        "\"prod/*\", \"arn:aws:secretsmanager:*:secret:prod/*\"",
        "5m",
    )
    .await;

    let by_name = read_secret(&broker, "/secretsmanager/get?secretId=prod%2Forders").await;
    assert_eq!(by_name["ARN"], arn.as_str());
    assert_eq!(by_name["Name"], "prod/orders");
    assert_eq!(by_name["SecretString"], value.to_string());
    assert_eq!(by_name["VersionStages"], json!(["AWSCURRENT"]));
    assert!(by_name.get("SecretBinary").is_none());
    let version = by_name["VersionId"].as_str().unwrap();
    assert!(!version.is_empty());
    // CreatedDate: epoch seconds with at most millisecond digits, as a string, close to now.
    let created = by_name["CreatedDate"]
        .as_str()
        .expect("CreatedDate is a string");
    let seconds: f64 = created.parse().unwrap();
    assert!(
        created.split('.').nth(1).is_none_or(|ms| ms.len() <= 3),
        "{created}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    assert!((now.as_secs_f64() - seconds).abs() < 600.0, "{created}");

    let by_arn = read_secret(
        &broker,
        &format!("/secretsmanager/get?secretId={}", encode(&arn)),
    )
    .await;
    assert_eq!(by_arn["SecretString"], value.to_string());
    // A partial ARN: the full one without the six random characters Secrets Manager adds.
    let partial = &arn[..arn.len() - 7];
    assert!(partial.ends_with(":secret:prod/orders"), "{partial}");
    let by_partial = read_secret(
        &broker,
        &format!("/secretsmanager/get?secretId={}", encode(partial)),
    )
    .await;
    assert_eq!(by_partial["VersionId"], version);
    // The path style, with the id as it stands after the prefix.
    let by_path = read_secret(&broker, "/v1/prod/orders").await;
    assert_eq!(by_path["SecretString"], value.to_string());

    let binary = read_secret(&broker, "/secretsmanager/get?secretId=prod/blob").await;
    assert!(binary.get("SecretString").is_none());
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(binary["SecretBinary"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, blob);

    // Counted under their own route templates.
    let metrics = broker.metrics().await;
    for route in ["/secretsmanager/get", "/v1/{secretId}"] {
        let count = metric(
            &metrics,
            "credential_broker_http_requests_total",
            &[("route", route), ("method", "GET"), ("status", "200")],
        );
        assert!(count.is_some_and(|n| n >= 1.0), "{route}: {count:?}");
    }
    assert_eq!(
        metric(
            &metrics,
            "credential_broker_agent_cache_lookups_total",
            &[("result", "miss")]
        ),
        Some(4.0),
        "name, ARN, partial ARN and blob are four keys; the path style shares the name's"
    );
}

#[tokio::test]
async fn versions_by_stage_and_id_are_served_and_refresh_now_reads_a_rotation() {
    let upstream = Upstream::start().await;
    let first = json!({"username": "app", "password": new_password("agent-v1")});
    let second = json!({"username": "app", "password": new_password("agent-v2")});
    let pending = json!({"username": "app", "password": new_password("agent-v3")});
    upstream.create_secret("rotating", &first).await;
    let broker = agent_broker(&upstream, "\"rotating\"", "5m").await;
    let get = "/secretsmanager/get?secretId=rotating";

    let old = read_secret(&broker, get).await;
    assert_eq!(old["SecretString"], first.to_string());
    let new_version = upstream.rotate("rotating", &second).await;
    // Within the TTL the cached value is served ...
    assert_eq!(
        read_secret(&broker, get).await["SecretString"],
        first.to_string()
    );
    // ... until refreshNow (any case) asks the source.
    let refreshed = read_secret(&broker, &format!("{get}&refreshNow=True")).await;
    assert_eq!(refreshed["SecretString"], second.to_string());
    assert_eq!(refreshed["VersionId"], new_version.as_str());
    assert_eq!(
        read_secret(&broker, get).await["VersionId"],
        new_version.as_str()
    );

    let previous = read_secret(&broker, &format!("{get}&versionStage=AWSPREVIOUS")).await;
    assert_eq!(previous["SecretString"], first.to_string());
    assert_eq!(previous["VersionId"], old["VersionId"]);
    assert_eq!(previous["VersionStages"], json!(["AWSPREVIOUS"]));
    let by_id = read_secret(
        &broker,
        &format!(
            "/v1/rotating?versionId={}",
            old["VersionId"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(by_id["SecretString"], first.to_string());

    let pending_version = upstream.put_pending("rotating", &pending).await;
    let staged = read_secret(&broker, &format!("{get}&versionStage=AWSPENDING")).await;
    assert_eq!(staged["SecretString"], pending.to_string());
    assert_eq!(staged["VersionId"], pending_version.as_str());
}

#[tokio::test]
async fn refusals_carry_the_agents_statuses_and_texts() {
    let upstream = Upstream::start().await;
    upstream
        .create_secret(
            "allowed",
            &json!({"username": "app", "password": new_password("agent-ok")}),
        )
        .await;
    upstream
        .create_secret(
            "private",
            &json!({"username": "app", "password": new_password("agent-no")}),
        )
        .await;
    let broker = agent_broker(&upstream, "\"allowed\", \"missing*\"", "5m").await;
    let agent = broker.agent.unwrap();
    let get = "/secretsmanager/get?secretId=allowed";

    // /ping answers without a token.
    assert_eq!(
        status_and_text(agent_get(&broker, "/ping", None).await).await,
        (200, "healthy".into())
    );
    // No token, a wrong one, a proxied request.
    assert_eq!(
        status_and_text(agent_get(&broker, get, None).await).await,
        (403, "Bad Token".into())
    );
    assert_eq!(
        status_and_text(agent_get(&broker, get, Some("not-the-token")).await).await,
        (403, "Bad Token".into())
    );
    let vault = broker
        .http
        .get(format!("http://{agent}{get}"))
        .header("X-Vault-Token", AGENT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        vault.status(),
        200,
        "the second default header carries the token too"
    );
    let forwarded = broker
        .http
        .get(format!("http://{agent}{get}"))
        .header(TOKEN_HEADER, AGENT_TOKEN)
        .header("X-Forwarded-For", "10.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(status_and_text(forwarded).await, (400, "Forwarded".into()));
    // Every 400 of the parameters.
    let too_long = format!("/secretsmanager/get?secretId={}", encode(&"a".repeat(2049)));
    let too_long_path = format!("/v1/{}", "a".repeat(2049));
    for (path, text) in [
        (
            "/secretsmanager/get?secretId=allowed&color=red",
            "unknown parameter: color",
        ),
        ("/secretsmanager/get", "missing parameter secretId"),
        (
            "/secretsmanager/get?secretId=allowed&refreshNow=yes",
            "invalid refreshNow value",
        ),
        ("/v1/?versionStage=AWSCURRENT", "missing secret ID"),
        (
            "/v1/allowed?secretId=allowed",
            "unknown parameter: secretId",
        ),
        // Longer than any secret id: 2,049 bytes.
        (&too_long, "invalid parameter: secretId"),
        (&too_long_path, "invalid parameter: secretId"),
    ] {
        assert_eq!(
            status_and_text(agent_get(&broker, path, Some(AGENT_TOKEN)).await).await,
            (400, text.to_owned()),
            "{}",
            &path[..path.len().min(80)]
        );
    }
    // A request head past the read buffer (20 KiB): the HTTP layer's bare 431 (openapi.yaml's
    // `HeadTooLarge`), as on the API's listener.
    let huge = format!("/secretsmanager/get?secretId={}", encode(&"𝔸".repeat(2049)));
    assert_eq!(
        status_and_text(agent_get(&broker, &huge, Some(AGENT_TOKEN)).await).await,
        (431, String::new())
    );
    assert_eq!(
        status_and_text(agent_get(&broker, "/elsewhere", Some(AGENT_TOKEN)).await).await,
        (404, "Not found".into())
    );
    let post = broker
        .http
        .post(format!("http://{agent}{get}"))
        .header(TOKEN_HEADER, AGENT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(post.headers()["allow"], "GET");
    assert_eq!(status_and_text(post).await, (405, "Not allowed".into()));

    // A secret that does not exist: the service's code and message, as valid JSON.
    let missing = agent_get(
        &broker,
        "/secretsmanager/get?secretId=missing-one",
        Some(AGENT_TOKEN),
    )
    .await;
    assert_eq!(missing.status(), 400);
    let body: Value = missing.json().await.expect("valid JSON");
    assert_eq!(body["__type"], "ResourceNotFoundException");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );

    // A secret outside `secrets`: 403 with no upstream call.
    let calls = upstream.proxy.count("GetSecretValue");
    let outside = agent_get(
        &broker,
        "/secretsmanager/get?secretId=private",
        Some(AGENT_TOKEN),
    )
    .await;
    assert_eq!(outside.status(), 403);
    let body: Value = outside.json().await.unwrap();
    assert_eq!(body["__type"], "AccessDeniedException");
    assert_eq!(
        upstream.proxy.count("GetSecretValue"),
        calls,
        "no upstream call for it"
    );
    // Each read of an admitted caller is in the audit trail, by secret id (written out every
    // 100 ms).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let audited = |secret: &str, result: &str| {
        broker.log_events().iter().any(|e| {
            e["target"] == "audit"
                && e["client"] == "aws_agent"
                && e["secret_id"] == secret
                && e["result"] == result
        })
    };
    assert!(audited("private", "forbidden"));
    assert!(audited("missing-one", "ResourceNotFoundException"));
    assert!(audited("allowed", "ok"));
}

#[tokio::test]
async fn a_clients_own_token_reads_only_its_own_aws_agent_secrets() {
    let upstream = Upstream::start().await;
    let billing = json!({"username": "app", "password": new_password("agent-billing")});
    upstream.create_secret("billing/db", &billing).await;
    upstream
        .create_secret(
            "orders/db",
            &json!({"username": "app", "password": new_password("agent-orders")}),
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let billing_token = "billing-client-token-4f1a9c";
    let token_file = dir.path().join("billing-token");
    std::fs::write(&token_file, billing_token).unwrap();
    let broker = BrokerOptions {
        extra_toml: format!(
            "[compat.aws_agent]\nlisten = \"127.0.0.1:0\"\n\
             [clients.billing]\ntoken_file = {:?}\naws_agent_secrets = [\"billing/*\"]\n",
            token_file.display().to_string()
        ),
        env: vec![("AWS_TOKEN", AGENT_TOKEN.to_owned())],
        ..BrokerOptions::new(upstream.proxy.endpoint())
    }
    .spawn()
    .await;
    let billing_path = "/secretsmanager/get?secretId=billing/db";
    let response = agent_get(&broker, billing_path, Some(billing_token)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["SecretString"], billing.to_string());

    let calls = upstream.proxy.count("GetSecretValue");
    // Its token does not open another secret; the agent's token (no `secrets`) and the broker's
    // default client (no `aws_agent_secrets`) open none.
    for (path, token) in [
        ("/secretsmanager/get?secretId=orders/db", billing_token),
        (billing_path, AGENT_TOKEN),
        (billing_path, TOKEN),
    ] {
        let response = agent_get(&broker, path, Some(token)).await;
        assert_eq!(response.status(), 403, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["__type"], "AccessDeniedException");
    }
    assert_eq!(upstream.proxy.count("GetSecretValue"), calls);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(broker.log_events().iter().any(|e| {
        e["target"] == "audit"
            && e["client"] == "billing"
            && e["secret_id"] == "billing/db"
            && e["result"] == "ok"
    }));
}

#[tokio::test]
async fn fifty_cold_requests_make_one_upstream_call_and_an_outage_is_served_stale() {
    let upstream = Upstream::start().await;
    let value = json!({"username": "app", "password": new_password("agent-flight")});
    upstream.create_secret("shared", &value).await;
    let broker = agent_broker(&upstream, "\"shared\"", "1s").await;
    upstream.proxy.set_delay(Duration::from_millis(300));
    let requests = (0..50).map(|_| read_secret(&broker, "/secretsmanager/get?secretId=shared"));
    let bodies = futures_util::future::join_all(requests).await;
    assert!(
        bodies
            .iter()
            .all(|b| b["SecretString"].as_str() == Some(value.to_string().as_str()))
    );
    assert_eq!(upstream.proxy.count("GetSecretValue"), 1);

    // Past the TTL with the source resetting connections: the last value, marked stale.
    upstream.proxy.set_delay(Duration::ZERO);
    upstream.proxy.set_fault(Fault::Reset);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = agent_get(
        &broker,
        "/secretsmanager/get?secretId=shared",
        Some(AGENT_TOKEN),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-credential-broker-stale"], "true");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["SecretString"], value.to_string());
    // A cold key in the same outage: the agent's connection error.
    let cold = agent_get(
        &broker,
        "/secretsmanager/get?secretId=shared&versionStage=AWSPREVIOUS",
        Some(AGENT_TOKEN),
    )
    .await;
    assert_eq!(cold.status(), 502);
    let body: Value = cold.json().await.unwrap();
    assert_eq!(body["__type"], "ConnectionError");
}

/// A broker process started as the agent, killed when dropped.
struct AgentProcess(std::process::Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The broker started as the agent is: `--agent-config FILE`, the token in `AWS_TOKEN`, moto's
/// endpoint in `AWS_ENDPOINT_URL`; returns the process and its first stdout line.
fn start_as_agent(
    config: &str,
    dir: &std::path::Path,
    endpoint: &str,
    env: &[(&str, &str)],
) -> (AgentProcess, String) {
    use std::io::BufRead as _;
    let path = dir.join("agent.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_credential-broker"))
        .arg("--agent-config")
        .arg(&path)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("CREDENTIAL_BROKER_SERVER__ADMIN_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = AgentProcess(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

#[tokio::test]
async fn the_agents_own_configuration_files_start_the_broker_in_its_place() {
    let upstream = Upstream::start().await;
    let value = json!({"username": "app", "password": new_password("agent-file")});
    upstream.create_secret("from-file", &value).await;
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        "[default]\naws_access_key_id = test\naws_secret_access_key = test\n",
    )
    .unwrap();
    let port = free_port();
    let port_b = free_port();
    // The agent's documented examples: its README's, its integration tests', and its test
    // fixture with every key (its fixed port swapped for a free one, its token variable set).
    let examples = [
        (
            format!(
                "region = \"us-east-1\"\ncredentials_file_path = {:?}\nhttp_port = {port}\n",
                credentials.display().to_string()
            ),
            port,
            "/secretsmanager/get?secretId=from-file",
            TOKEN_HEADER,
            "AWS_TOKEN",
        ),
        (
            format!(
                "\nhttp_port = {port_b}\nlog_level = \"info\"\nttl_seconds = 5\nvalidate_credentials = true\n"
            ),
            port_b,
            "/v1/from-file",
            TOKEN_HEADER,
            "AWS_TOKEN",
        ),
        (
            format!(
                "# checking that all caps for log level is accpeted.\nlog_level = \"DEBUG\"\nhttp_port = \"{port}\"\n\
                 ssrf_headers = [\"X-Aws-Parameters-Secrets-Token\"]\nssrf_env_variables = [\"MY_TOKEN\"]\n\
                 path_prefix = \"/other\"\nttl_seconds = 300\ncache_size = '1000'\nmax_conn = 10\n\
                 region = \"us-east-1\"\nignore_transient_errors = false\nvalidate_credentials = false\n\
                 credentials_file_path = {:?}\n",
                credentials.display().to_string()
            ),
            port,
            "/otherfrom-file",
            TOKEN_HEADER,
            "MY_TOKEN",
        ),
    ];
    for (config, port, path, header, variable) in examples {
        let (child, line) = start_as_agent(
            &config,
            dir.path(),
            &upstream.proxy.endpoint(),
            &[(variable, AGENT_TOKEN)],
        );
        assert!(
            line.trim_end()
                .ends_with(&format!("listening on http://127.0.0.1:{port}")),
            "first stdout line: {line:?} for\n{config}"
        );
        let response = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}{path}"))
            .header(header, AGENT_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{config}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["SecretString"], value.to_string());
        drop(child);
    }

    // Bad files: non-zero exit and one line naming the key.
    for (config, key) in [
        (
            "# unrecognized configurations\nmax_connections = \"1001\"\n",
            "max_connections",
        ),
        (
            "log_level = \"an invalid log level\"\nhttp_port = \"9999\"",
            "log_level",
        ),
        ("ttl_seconds = 3601\n", "ttl_seconds"),
        ("http_port = 80\n", "http_port"),
        ("This is gibberish", "bad.toml"),
    ] {
        let stderr = refused_agent_config(dir.path(), config, Some(AGENT_TOKEN));
        assert!(stderr.contains(key), "{config}: {stderr}");
    }
    // No token variable set: no start.
    let stderr = refused_agent_config(dir.path(), "ttl_seconds = 5\n", None);
    assert!(stderr.contains("ssrf_env_variables"), "{stderr}");
}

/// Starts the broker with `config` as the agent's file (and `AWS_TOKEN` when given), expects
/// exit 64 with one line on stderr, and returns that line.
fn refused_agent_config(dir: &std::path::Path, config: &str, token: Option<&str>) -> String {
    let path = dir.join("bad.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_credential-broker"));
    command.arg("--agent-config").arg(&path).env_clear();
    if let Some(token) = token {
        command.env("AWS_TOKEN", token);
    }
    let out = command.output().unwrap();
    assert_eq!(out.status.code(), Some(64), "{config}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    stderr
}

#[tokio::test]
async fn the_documented_python_client_and_curl_line_run_unchanged() {
    let upstream = Upstream::start().await;
    let value = json!({"username": "app", "password": new_password("agent-client")});
    upstream.create_secret("MySecret", &value).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("awssmatoken");
    std::fs::write(&token_file, format!("{AGENT_TOKEN}\n")).unwrap();
    let port = free_port();
    let (_agent, line) = start_as_agent(
        &format!("http_port = {port}\n"),
        dir.path(),
        &upstream.proxy.endpoint(),
        &[("AWS_TOKEN", &format!("file://{}", token_file.display()))],
    );
    assert!(line.contains("listening on"), "{line:?}");

    let python = repo_root().join(".venv/moto/bin/python");
    assert!(
        python.is_file(),
        "python with requests not found at {}: run `bash .ci/setup`",
        python.display()
    );
    let printed = json_output(
        tokio::process::Command::new(&python)
            .arg(repo_root().join("examples/aws-agent/get_secret.py"))
            .arg("MySecret")
            .env("AWS_TOKEN", AGENT_TOKEN)
            .env("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", port.to_string()),
    )
    .await;
    assert_eq!(printed["SecretString"], value.to_string());

    // The agent README's curl line, its token file and port the only change.
    let curl = format!(
        "curl -v -H \\\n    \"X-Aws-Parameters-Secrets-Token: $(<{})\" \\\n    'http://localhost:{port}/secretsmanager/get?secretId=MySecret'; \\\n    echo",
        token_file.display()
    );
    let body = json_output(tokio::process::Command::new("bash").arg("-c").arg(&curl)).await;
    assert_eq!(body["SecretString"], value.to_string());
}

/// Runs `command` without blocking the test's thread (the fault proxy between the broker and
/// moto runs on it), checks that it succeeded, and reads its stdout as JSON.
async fn json_output(command: &mut tokio::process::Command) -> Value {
    let out = command.output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
