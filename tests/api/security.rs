//! Least privilege per caller: scoped clients, token rotation without restart, the Unix socket
//! with peer-uid clients, the audit trail, and the non-loopback refusal.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use serde_json::{Value, json};

use crate::helpers::{
    BrokerOptions, Upstream, curl_unix_status, json_body, metric, new_password, passwords,
};

const TOKEN_A: &str = "token-of-client-a-7d1e0c";
const TOKEN_B: &str = "token-of-client-b-91aa2f";

/// moto with secrets `a` and `b`.
async fn upstream_with_a_and_b() -> Upstream {
    let upstream = Upstream::start().await;
    for name in ["a", "b"] {
        let password = new_password("security");
        upstream
            .create_secret(name, &json!({"username": name, "password": password}))
            .await;
    }
    upstream
}

/// Broker options with databases `a` and `b` backed by the secrets of the same names.
fn a_and_b(upstream: &Upstream) -> BrokerOptions {
    BrokerOptions::new(upstream.proxy.endpoint())
        .database("a", "a", "")
        .database("b", "b", "")
}

/// Writes client token files into `dir` and returns the `[clients]` tables naming them.
fn clients_toml(dir: &Path, extra_for_b: &str) -> String {
    std::fs::write(dir.join("a.token"), TOKEN_A).unwrap();
    std::fs::write(dir.join("b.token"), TOKEN_B).unwrap();
    format!(
        "[clients.app-a]\ntoken_file = {:?}\ndatabases = [\"a\"]\n[clients.app-b]\ntoken_file = {:?}\ndatabases = [\"b\"]\n{extra_for_b}\n",
        dir.join("a.token").display().to_string(),
        dir.join("b.token").display().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_token_opens_only_its_own_databases() {
    let upstream = upstream_with_a_and_b().await;
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerOptions {
        extra_toml: clients_toml(dir.path(), ""),
        ..BrokerOptions::new(upstream.proxy.endpoint())
            .cold()
            .database("a", "a", "")
            .database("b", "b", "")
    }
    .spawn()
    .await;

    let own = broker.get_as("a", TOKEN_A).await;
    assert_eq!(own.status(), 200);
    assert_eq!(json_body(own).await["username"], "a");
    let calls = upstream.proxy.count("GetSecretValue");
    for db in ["b", "no-such-db"] {
        let other = broker.get_as(db, TOKEN_A).await;
        assert_eq!(other.status(), 403, "{db}");
        assert_eq!(json_body(other).await["error"]["code"], "forbidden");
    }
    let refresh = broker.refresh_as("b", TOKEN_A).await;
    assert_eq!(refresh.status(), 403);
    assert_eq!(
        upstream.proxy.count("GetSecretValue"),
        calls,
        "a forbidden request makes no upstream call"
    );
    assert_eq!(broker.get_as("b", TOKEN_B).await.status(), 200);
    let unknown = broker.get_as("a", "token-nobody-has-0000000").await;
    assert_eq!(unknown.status(), 401);
    assert_eq!(
        broker.get("b").await.status(),
        200,
        "the [auth] token is client \"default\" with every database"
    );

    let metrics = broker.metrics().await;
    let access = |client, db, result| {
        metric(
            &metrics,
            "credential_broker_access_total",
            &[("client", client), ("db", db), ("result", result)],
        )
    };
    assert_eq!(access("app-a", "a", "ok"), Some(1.0));
    assert_eq!(access("app-a", "b", "forbidden"), Some(2.0));
    assert_eq!(access("app-a", "other", "forbidden"), Some(1.0));
    assert_eq!(access("unauthenticated", "a", "unauthorized"), Some(1.0));
    assert_eq!(access("default", "b", "ok"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_name_client_db_action_result_and_version_but_no_password() {
    let upstream = upstream_with_a_and_b().await;
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let broker = BrokerOptions {
        extra_toml: format!(
            "{}[audit]\noutput = \"file\"\npath = {:?}\n",
            clients_toml(dir.path(), ""),
            audit_path.display().to_string()
        ),
        ..a_and_b(&upstream)
    }
    .spawn()
    .await;
    broker.wait_ready(Duration::from_secs(10)).await;
    let served = json_body(broker.get_as("a", TOKEN_A).await).await;
    assert_eq!(broker.get_as("b", TOKEN_A).await.status(), 403);
    let refreshed = broker.refresh_as("a", TOKEN_A).await;
    assert_eq!(refreshed.status(), 200);
    assert_eq!(
        broker
            .get_as("a", "wrong-token-000000000000")
            .await
            .status(),
        401
    );

    let events = wait_for_lines(&audit_path, 4).await;
    let summary: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e["client"].as_str().unwrap().to_owned(),
                e["db"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("app-a", "a", "read", "ok"),
        ("app-a", "b", "read", "forbidden"),
        ("app-a", "a", "refresh", "ok"),
        ("unauthenticated", "a", "read", "unauthorized"),
    ];
    assert_eq!(
        summary,
        expected.map(|(c, d, a, r)| (c.to_owned(), d.to_owned(), a.to_owned(), r.to_owned()))
    );
    assert_eq!(events[0]["version_id"], served["version_id"]);
    for event in &events {
        assert_eq!(event["target"], "audit");
        assert!(event["timestamp"].is_string());
        assert_eq!(event["count"], 1, "one request each: {event}");
    }
    let text = std::fs::read_to_string(&audit_path).unwrap();
    for password in passwords() {
        assert!(!text.contains(&password), "a password in the audit file");
    }
    assert_eq!(
        std::fs::metadata(&audit_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        !broker.log_text().contains("\"target\":\"audit\""),
        "audit events go to the audit file only"
    );
}

/// The JSON lines of `path` once it has at least `count` of them (bounded wait).
async fn wait_for_lines(path: &Path, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} lines",
            path.display(),
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_token_file_takes_effect_and_the_old_token_is_refused() {
    let upstream = upstream_with_a_and_b().await;
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerOptions {
        auth_toml: "reload_interval = \"200ms\"".into(),
        extra_toml: clients_toml(dir.path(), ""),
        ..a_and_b(&upstream)
    }
    .spawn()
    .await;
    assert_eq!(broker.get_as("a", TOKEN_A).await.status(), 200);

    let rotated = "rotated-token-of-client-a-33";
    let temporary = dir.path().join("a.token.new");
    std::fs::write(&temporary, rotated).unwrap();
    std::fs::rename(&temporary, dir.path().join("a.token")).unwrap();
    let rotated_at = Instant::now();
    loop {
        if broker.get_as("a", rotated).await.status() == 200 {
            break;
        }
        assert!(
            rotated_at.elapsed() < Duration::from_secs(5),
            "the new token never worked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = rotated_at.elapsed();
    println!(
        "FIGURE token rotation took effect after {} ms (reload_interval 200 ms)",
        took.as_millis()
    );
    assert_eq!(broker.get_as("a", TOKEN_A).await.status(), 401);
    assert!(broker.log_text().contains("token changed"));
    assert!(!broker.log_text().contains(rotated) && !broker.log_text().contains(TOKEN_A));
}

/// One request over the Unix socket at `socket`; returns status and body. The body is checked
/// for leaks like every other response the suite sees.
async fn unix_get(socket: &Path, path: &str, token: Option<&str>) -> (u16, String) {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = axum::http::Request::get(path).header("host", "localhost");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    if status != 200 {
        for password in passwords() {
            assert!(!body.contains(&password), "a password in an error body");
        }
    }
    (status, body)
}

/// Runs curl as `user` against the Unix socket; returns the HTTP status it saw (0: no answer).
fn curl_as(user: &str, socket: &Path, path: &str) -> u16 {
    let mut runuser = std::process::Command::new("runuser");
    runuser.args(["-u", user, "--"]);
    curl_unix_status(runuser, socket, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_has_its_mode_and_group_identifies_peers_by_uid_and_is_removed() {
    let upstream = upstream_with_a_and_b().await;
    let dir = tempfile::tempdir().unwrap();
    // Other users need to traverse the directory to reach the socket.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let socket = dir.path().join("broker.sock");
    // A stale socket file, as a killed broker leaves it: replaced at start.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    // nobody (65534) is client app-b by uid and may connect through group nogroup (65534).
    let mut broker = BrokerOptions {
        server_toml: format!(
            "unix_socket = {{ path = {:?}, mode = \"0660\", group = 65534 }}",
            socket.display().to_string()
        ),
        extra_toml: clients_toml(dir.path(), "unix_uids = [65534]"),
        ..a_and_b(&upstream)
    }
    .spawn()
    .await;
    broker.wait_ready(Duration::from_secs(10)).await;

    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 65534);

    let (status, body) = unix_get(&socket, "/credentials/a", Some(TOKEN_A)).await;
    assert_eq!(status, 200, "a token works on the socket too");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["username"],
        "a"
    );
    let (status, _) = unix_get(&socket, "/credentials/a", None).await;
    assert_eq!(status, 401, "root's uid 0 is no client");

    assert_eq!(
        curl_as("nobody", &socket, "/credentials/b"),
        200,
        "uid 65534 is app-b"
    );
    assert_eq!(
        curl_as("nobody", &socket, "/credentials/a"),
        403,
        "app-b may not read a"
    );
    assert_eq!(
        curl_as("daemon", &socket, "/credentials/b"),
        0,
        "daemon is neither owner nor in the group: the mode keeps it out"
    );

    broker.terminate();
    assert_eq!(
        broker.wait_exit(Duration::from_secs(10)).await.code(),
        Some(0)
    );
    assert!(!socket.exists(), "the socket file is removed on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_in_use_by_a_live_process_is_not_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("busy.sock");
    let _live = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"off\"\nadmin_listen = \"127.0.0.1:0\"\nunix_socket = {{ path = {:?} }}\n[auth]\ntoken_env = \"PATH\"\n[source]\nkind = \"file\"\npath = \"/nonexistent.json\"\n[databases.a]\nsecret_id = \"a\"\n",
            socket.display().to_string()
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_credential-broker"))
        .arg("--config")
        .arg(&config)
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/local/bin:padding-to-16-chars")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("in use by another process"));
    assert!(socket.exists(), "the live socket is left alone");
}

#[test]
fn a_non_loopback_listen_without_the_flag_exits_64_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"0.0.0.0:2775\"\n[auth]\ndisabled = true\n[databases.a]\nsecret_id = \"a\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_credential-broker"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("server.listen") && stderr.contains("allow_non_loopback"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_says_nosniff_and_no_store_and_core_dumps_are_off() {
    let upstream = upstream_with_a_and_b().await;
    let broker = BrokerOptions::new(upstream.proxy.endpoint())
        .database("a", "a", "")
        .spawn()
        .await;
    broker.wait_ready(Duration::from_secs(10)).await;
    let responses = [
        broker.get("a").await,
        broker.get("nope").await,
        broker.get_as("a", "wrong-token-000000000000").await,
        broker.admin_get("/metrics").await,
        broker.admin_get("/readyz").await,
    ];
    for (i, response) in responses.into_iter().enumerate() {
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "response {i}");
        assert_eq!(headers["cache-control"], "no-store", "response {i}");
    }
    // By default the audit trail is JSON lines on stderr, next to the logs.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !broker
        .log_text()
        .contains(r#""target":"audit","client":"default","db":"a","action":"read","result":"ok""#)
    {
        assert!(Instant::now() < deadline, "no audit line on stderr");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", broker.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert!(
        core.split_whitespace().filter(|w| *w == "0").count() >= 2,
        "{core}"
    );
}
