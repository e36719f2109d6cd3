//! The binary's configuration handling: exit code 64 with one line naming the bad key, and the
//! shipped example configurations.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::helpers::{TestBroker, broker_command};

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `credential-broker check-config` on `config` from the repository root.
fn check_config(config: &Path, envs: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut command = broker_command(config, &dir.path().join("out.log"));
    command
        .arg("check-config")
        .current_dir(repo_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn check_config_text(text: &str, envs: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(&config, text).unwrap();
    check_config(&config, envs)
}

#[test]
fn invalid_config_exits_64_with_one_line_naming_the_key() {
    let cases = [
        (
            "[auth]\ndisabled = true\n[cache]\nttl = \"soon\"\n[databases.a]\nsecret_id = \"s\"\n",
            "cache.ttl",
        ),
        (
            "[auth]\ndisabled = true\n[cache]\nttl_secs = 3\n[databases.a]\nsecret_id = \"s\"\n",
            "cache.ttl_secs",
        ),
        (
            "[auth]\ndisabled = true\n[server]\nlisten = \"0.0.0.0:1\"\n[databases.a]\nsecret_id = \"s\"\n",
            "server.listen",
        ),
        ("[auth]\ndisabled = true\n", "databases"),
        ("[databases.a]\nsecret_id = \"s\"\n", "auth"),
        ("[auth\n", "broker.toml"),
    ];
    for (text, key) in cases {
        let output = check_config_text(text, &[]);
        assert_eq!(output.status.code(), Some(64), "{key}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains("invalid configuration: "), "{stderr}");
        assert!(stderr.contains(key), "{key} not named: {stderr}");
    }
}

#[test]
fn an_invalid_aws_agent_section_exits_64_naming_the_key() {
    let section = |lines: &str| format!("[compat.aws_agent]\n{lines}\n");
    let cases = [
        (
            section("listen = \"0.0.0.0:2773\""),
            "compat.aws_agent.listen",
        ),
        (
            section("path_prefix = \"v1/\""),
            "compat.aws_agent.path_prefix",
        ),
        (
            section("path_prefix = \"/secretsmanager\""),
            "compat.aws_agent.path_prefix",
        ),
        (
            section("ssrf_headers = []"),
            "compat.aws_agent.ssrf_headers",
        ),
        (
            section("ssrf_headers = [\"X-Forwarded-For\"]"),
            "compat.aws_agent.ssrf_headers",
        ),
        (
            section("ssrf_env_variables = [\"NOT_SET_ANYWHERE\"]"),
            "compat.aws_agent.ssrf_env_variables",
        ),
        (section("ttl = \"2h\""), "compat.aws_agent.ttl"),
        (section("cache_size = 0"), "compat.aws_agent.cache_size"),
        (section("secrets = [\"\"]"), "compat.aws_agent.secrets"),
        (section("colour = \"red\""), "compat.aws_agent.colour"),
    ];
    for (text, key) in cases {
        let output = check_config_text(&text, &[("AWS_TOKEN", "agent-token")]);
        assert_eq!(output.status.code(), Some(64), "{key}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(key), "{key} not named: {stderr}");
    }
    // A client's agent list needs the agent's API.
    let output = check_config_text(
        "[databases.a]\nsecret_id = \"s\"\n[clients.x]\ntoken_env = \"X\"\naws_agent_secrets = [\"*\"]\n",
        &[("X", "client-token-0123456789")],
    );
    assert_eq!(output.status.code(), Some(64));
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("clients.x")
    );
    // No token variable set: no start.
    let output = check_config_text(&section(""), &[]);
    assert_eq!(output.status.code(), Some(64));
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("ssrf_env_variables")
    );
    // An empty token file named by `file://` is no token either.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("token");
    std::fs::write(&empty, "\n").unwrap();
    let output = check_config_text(
        &section(""),
        &[("AWS_TOKEN", &format!("file://{}", empty.display()))],
    );
    assert_eq!(output.status.code(), Some(64));
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("AWS_TOKEN")
    );
}

#[test]
fn serving_with_an_invalid_config_also_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(&config, "[auth]\ndisabled = true\n").unwrap();
    let output = broker_command(&config, &dir.path().join("out.log"))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("databases")
    );
}

#[test]
fn environment_variable_overrides_are_validated_too() {
    let text = "[auth]\ndisabled = true\n[databases.a]\nsecret_id = \"s\"\n";
    let output = check_config_text(text, &[("CREDENTIAL_BROKER_CACHE__CAPACITY", "lots")]);
    assert_eq!(output.status.code(), Some(64));
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("cache.capacity")
    );

    let output = check_config_text(text, &[("CREDENTIAL_BROKER_CACHE__TTL", "42s")]);
    assert_eq!(output.status.code(), Some(0));
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .contains("ttl: 42s")
    );
}

#[test]
fn shipped_example_configs_are_valid_and_print_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "deployment-token-0123456789").unwrap();
    // aws.toml names the token file of a deployment; point it at a local one.
    let aws = check_config(
        &repo_root().join("config/aws.toml"),
        &[(
            "CREDENTIAL_BROKER_AUTH__TOKEN_FILE",
            token.to_str().unwrap(),
        )],
    );
    let rds = check_config(
        &repo_root().join("config/rds.toml"),
        &[(
            "CREDENTIAL_BROKER_AUTH__TOKEN_FILE",
            token.to_str().unwrap(),
        )],
    );
    let local = check_config(&repo_root().join("config/local.toml"), &[]);
    // aws-agent.toml reads the AWS agent's token from AWS_TOKEN, as the agent does.
    let agent = check_config(
        &repo_root().join("config/aws-agent.toml"),
        &[("AWS_TOKEN", "agent-token-0123456789")],
    );

    // shared.toml names two clients' token files of a deployment.
    let reporting = dir.path().join("reporting");
    std::fs::write(&reporting, "reporting-token-0123456789").unwrap();
    let shared = check_config(
        &repo_root().join("config/shared.toml"),
        &[
            (
                "CREDENTIAL_BROKER_CLIENTS__ORDERS_API__TOKEN_FILE",
                token.to_str().unwrap(),
            ),
            (
                "CREDENTIAL_BROKER_CLIENTS__REPORTING__TOKEN_FILE",
                reporting.to_str().unwrap(),
            ),
        ],
    );
    for (name, output, secret) in [
        ("aws.toml", aws, "deployment-token-0123456789"),
        ("rds.toml", rds, "deployment-token-0123456789"),
        ("shared.toml", shared, "reporting-token-0123456789"),
        ("local.toml", local, "local-dev-token-not-a-secret"),
        ("aws-agent.toml", agent, "agent-token-0123456789"),
    ] {
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("REDACTED"), "{name}: {stdout}");
        assert!(!stdout.contains(secret), "{name} printed its token");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_config_serves_credentials_from_the_local_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("local.log");
    let mut command = broker_command(&repo_root().join("config/local.toml"), &log);
    command
        .current_dir(repo_root())
        .env("CREDENTIAL_BROKER_SERVER__LISTEN", "127.0.0.1:0")
        .env("CREDENTIAL_BROKER_SERVER__ADMIN_LISTEN", "127.0.0.1:0")
        .env("CREDENTIAL_BROKER_LOG__FORMAT", "json");
    let mut broker = TestBroker::from_command(command, log, dir).await;
    let token = std::fs::read_to_string(repo_root().join("config/local-token")).unwrap();
    broker.wait_ready(Duration::from_secs(10)).await;
    let body: serde_json::Value = broker
        .send(
            broker
                .http
                .get(broker.url("/credentials/orders"))
                .bearer_auth(token.trim()),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["username"], "orders_app");
    assert_eq!(body["password"], "local-only-orders-password");
    assert_eq!(body["secret_arn"], serde_json::Value::Null);
    assert_eq!(body["host"], "127.0.0.1");
    let admin = broker.admin.to_string();
    let probe = healthcheck(
        &["--config", "config/local.toml", "healthcheck"],
        &[("CREDENTIAL_BROKER_SERVER__ADMIN_LISTEN", &admin)],
    );
    assert!(probe.status.success(), "{probe:?}");
    broker.terminate();
    assert_eq!(
        broker.wait_exit(Duration::from_secs(10)).await.code(),
        Some(0)
    );
    let probe = healthcheck(
        &[
            "--config",
            "config/local.toml",
            "healthcheck",
            "--timeout",
            "1s",
        ],
        &[("CREDENTIAL_BROKER_SERVER__ADMIN_LISTEN", &admin)],
    );
    assert_eq!(
        probe.status.code(),
        Some(1),
        "a stopped broker is unhealthy"
    );
    assert!(String::from_utf8_lossy(&probe.stderr).contains("cannot reach"));
}

/// Runs the binary with `args` from the repository root and returns its output.
fn healthcheck(args: &[&str], envs: &[(&str, &str)]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_credential-broker"))
        .args(args)
        .envs(envs.iter().copied())
        .env_remove("CREDENTIAL_BROKER_CONFIG")
        .current_dir(repo_root())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_0_only_while_the_broker_is_ready() {
    let upstream = crate::helpers::Upstream::start().await;
    let broker = crate::helpers::BrokerOptions::new(upstream.proxy.endpoint())
        .database("missing", "no-such-secret", "")
        .spawn()
        .await;
    let url = format!("http://{}/readyz", broker.admin);
    let probe = healthcheck(&["healthcheck", "--url", &url], &[]);
    assert_eq!(probe.status.code(), Some(1), "{probe:?}");
    assert!(String::from_utf8_lossy(&probe.stderr).contains("503"));

    let probe = healthcheck(&["healthcheck", "--url", "ftp://127.0.0.1:1/"], &[]);
    assert_eq!(probe.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&probe.stderr).contains("not an http:// URL"));

    let help = healthcheck(&["--help"], &[]);
    let help = String::from_utf8_lossy(&help.stdout);
    for word in [
        "serve",
        "check-config",
        "healthcheck",
        "--config",
        "--version",
    ] {
        assert!(help.contains(word), "--help mentions {word}: {help}");
    }
    let version = healthcheck(&["--version"], &[]);
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("credential-broker {}", env!("CARGO_PKG_VERSION"))
    );
}
