//! What a hostile local caller, an operator's mistake or a real cluster does to the broker: each
//! test names the defect it guards against (issue "Hardening", items 1-11). The brokers here run
//! on the file source, so nothing but the broker binary is involved.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    FileBroker, TOKEN, TestBroker, broker_command, json_body, metric, new_password, raw_exchange,
    signal,
};

/// `[databases.a]` and `[databases.b]` on secrets `sec-a` and `sec-b`.
const A_AND_B: &str = "[databases.a]\nsecret_id = \"sec-a\"\nhost = \"h\"\nport = 5432\nengine = \"postgres\"\n\
                       [databases.b]\nsecret_id = \"sec-b\"\nhost = \"h\"\nport = 5432\nengine = \"postgres\"\n";

fn secrets(a: &str, b: &str) -> Value {
    json!({
        "sec-a": {"username": "a", "password": a},
        "sec-b": {"username": "b", "password": b},
    })
}

/// A broker on secrets `sec-a` and `sec-b` whose refreshes always read the file (no minimum
/// interval between fetches).
async fn file_broker(server: &str, auth: &str, extra: &str) -> FileBroker {
    let secrets = secrets(&new_password("hard-a"), &new_password("hard-b"));
    let extra = format!("[rotation]\nrefresh_min_interval = \"0s\"\n{extra}");
    FileBroker::spawn(&secrets, server, auth, &extra, A_AND_B).await
}

/// Replaces `path` atomically with `content` (write and rename, as Kubernetes does).
fn replace(path: &Path, content: &str) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, content).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// Waits at most `limit` for `child` to exit; kills it and says `None` when it does not.
async fn exit_within(child: &mut std::process::Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

async fn password_of(broker: &FileBroker, db: &str, token: &str) -> String {
    let response = broker.get_as(db, token).await;
    assert_eq!(response.status(), 200, "GET {db}");
    json_body(response).await["password"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The label values of `label` over every series of `name` in a Prometheus text page.
fn label_values(text: &str, name: &str, label: &str) -> Vec<String> {
    let needle = format!("{label}=\"");
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter_map(|line| {
            let start = line.find(&needle)? + needle.len();
            let end = start + line[start..].find('"')?;
            Some(line[start..end].to_owned())
        })
        .collect()
}

// --- 1. labels a caller controls ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_methods_add_no_metric_series_on_either_listener() {
    let broker = file_broker("", "", "").await;
    for n in 0..300 {
        for addr in [broker.api, broker.admin] {
            let request = format!(
                "M{n:04}XYZ /credentials/a HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            );
            let answer = raw_exchange(addr, request.as_bytes(), Duration::from_secs(2)).await;
            assert!(answer.starts_with(b"HTTP/1.1 "), "an answer to method {n}");
        }
    }
    let page = broker.metrics().await;
    let methods = label_values(&page, "credential_broker_http_requests_total", "method");
    let known = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "other",
    ];
    assert!(
        methods.iter().all(|m| known.contains(&m.as_str())),
        "method labels outside the fixed set: {methods:?}"
    );
    let series = page
        .lines()
        .filter(|l| l.starts_with("credential_broker_http_requests_total{"))
        .count();
    assert!(series <= 10, "{series} request series after 600 requests");
    assert!(
        metric(
            &page,
            "credential_broker_http_requests_total",
            &[("method", "other")]
        )
        .unwrap()
            >= 300.0
    );
}

// --- 2. idle sockets --------------------------------------------------------------------------

/// Opens `n` connections to `addr` that send nothing.
async fn idle_sockets(addr: std::net::SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        sockets.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    sockets
}

/// Runs `credential-broker healthcheck` against `admin` and returns whether it passed and how
/// long it took.
fn healthcheck(admin: std::net::SocketAddr) -> (bool, Duration) {
    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_credential-broker"))
        .args(["healthcheck", "--timeout", "3s", "--url"])
        .arg(format!("http://{admin}/readyz"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    (status.success(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_never_starve_probes_or_callers() {
    let broker = file_broker("max_connections = 1024", "", "").await;
    broker.wait_ready(Duration::from_secs(10)).await;
    // The admin listener keeps 64 connections: four times that many idle ones.
    let _admin_idle = idle_sockets(broker.admin, 256).await;
    let (passed, took) = healthcheck(broker.admin);
    assert!(passed, "healthcheck failed with 256 idle admin sockets");
    assert!(took < Duration::from_secs(1), "healthcheck took {took:?}");
    // The API keeps 1024 here: an authorised request still gets through past 1400 idle ones.
    let _api_idle = idle_sockets(broker.api, 1400).await;
    let started = Instant::now();
    assert_eq!(broker.get("a").await.status(), 200);
    let took_api = started.elapsed();
    assert!(took_api < Duration::from_secs(1), "GET took {took_api:?}");
    let (passed, took) = healthcheck(broker.admin);
    assert!(
        passed && took < Duration::from_secs(1),
        "probe during the API flood: {took:?}"
    );
    println!(
        "FIGURE with 256 idle admin and 1400 idle API sockets: healthcheck {} ms, GET {} ms",
        took.as_millis(),
        took_api.as_millis()
    );
    let page = broker.metrics().await;
    let evicted = |listener| {
        metric(
            &page,
            "credential_broker_connections_closed_total",
            &[("listener", listener), ("reason", "idle_evicted")],
        )
        .unwrap_or(0.0)
    };
    assert!(
        evicted("admin") >= 190.0 && evicted("api") >= 370.0,
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_cap_is_closed_at_once_when_every_other_is_busy() {
    let broker = file_broker("max_connections = 2", "", "").await;
    // Two requests in progress: refreshes whose declared body never comes.
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(broker.api).await.unwrap();
        let head = format!(
            "POST /credentials/a/refresh HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: 10\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        busy.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut third = tokio::net::TcpStream::connect(broker.api).await.unwrap();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buffer)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the third connection was neither closed nor refused: {read:?}"
    );
    println!(
        "FIGURE a connection over the cap was closed after {} ms",
        started.elapsed().as_millis()
    );
    let page = broker.metrics().await;
    assert_eq!(
        metric(
            &page,
            "credential_broker_connections_closed_total",
            &[("listener", "api"), ("reason", "over_capacity")]
        ),
        Some(1.0)
    );
    drop(busy);
}

/// Reads from `stream` until it closes (or `limit` passes: `None`), and says when it closed.
async fn closed_at(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<Instant> {
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// Reads from `stream` until `text` has come, and returns what came.
async fn read_until(stream: &mut tokio::net::TcpStream, text: &str) -> String {
    let mut got = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(text) {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(
            n > 0,
            "closed before {text:?}: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_request_head_closes_after_the_header_read_timeout_and_held_answers_do_not()
 {
    let broker = file_broker("header_read_timeout = \"1s\"\nmax_wait = \"5s\"", "", "").await;
    broker.wait_ready(Duration::from_secs(10)).await;
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let etag = broker.get("a").await.headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    let connect = || tokio::net::TcpStream::connect(broker.api);
    // Silent from the start; half a request head; one answer, then silence.
    let mut silent = connect().await.unwrap();
    let silent_since = Instant::now();
    let mut half = connect().await.unwrap();
    half.write_all(b"GET /credentials/a HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let half_since = Instant::now();
    let mut answered = connect().await.unwrap();
    answered
        .write_all(format!("GET /credentials/a HTTP/1.1\r\nHost: x\r\n{auth}\r\n").as_bytes())
        .await
        .unwrap();
    read_until(&mut answered, "\"password\"").await;
    let answered_since = Instant::now();
    // An event stream and a long poll of 3 s, held past the timeout.
    let mut stream = connect().await.unwrap();
    stream
        .write_all(
            format!("GET /credentials/a/events HTTP/1.1\r\nHost: x\r\n{auth}\r\n").as_bytes(),
        )
        .await
        .unwrap();
    read_until(&mut stream, "event: ").await;
    let mut poll = connect().await.unwrap();
    poll.write_all(
        format!(
            "GET /credentials/a?wait=3s HTTP/1.1\r\nHost: x\r\n{auth}If-None-Match: {etag}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let poll_since = Instant::now();

    for (name, socket, since) in [
        ("silent", &mut silent, silent_since),
        ("half a head", &mut half, half_since),
        ("after an answer", &mut answered, answered_since),
    ] {
        let at = closed_at(socket, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("{name}: still open after 5 s"));
        let idle = at - since;
        println!(
            "FIGURE header_read_timeout 1s: {name} closed after {} ms",
            idle.as_millis()
        );
        assert!(
            idle >= Duration::from_millis(950) && idle < Duration::from_secs(3),
            "{name}: closed after {idle:?}"
        );
    }
    let answer = read_until(&mut poll, "\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 304"), "{answer}");
    assert!(poll_since.elapsed() >= Duration::from_millis(2900));
    let mut buffer = [0u8; 256];
    let still = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buffer)).await;
    assert!(
        !matches!(still, Ok(Ok(0) | Err(_))),
        "the event stream was closed: {still:?}"
    );
    let page = broker.metrics().await;
    // Those three, and the test client's own connection once it idles.
    assert!(
        metric(
            &page,
            "credential_broker_connections_closed_total",
            &[("listener", "api"), ("reason", "header_timeout")]
        )
        .is_some_and(|closed| closed >= 3.0),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_keeps_its_place_and_an_idle_connection_gives_way() {
    let broker = file_broker("max_connections = 2\nheader_read_timeout = \"3s\"", "", "").await;
    broker.wait_ready(Duration::from_secs(10)).await;
    let mut stream = tokio::net::TcpStream::connect(broker.api).await.unwrap();
    stream
        .write_all(
            format!("GET /credentials/a/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    read_until(&mut stream, "event: ").await;
    // Idle: half a request head, the rest never sent.
    let mut idle = tokio::net::TcpStream::connect(broker.api).await.unwrap();
    idle.write_all(b"GET /credentials/a HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A third: the idle one gives way, not the stream (older, but sending its answer). Out of
    // the table, the idle one is closed a timeout later at the latest.
    let evicted = Instant::now();
    assert_eq!(broker.get("a").await.status(), 200);
    let closed = closed_at(&mut idle, Duration::from_secs(5))
        .await
        .expect("the idle connection stays open");
    println!(
        "FIGURE an idle connection that gave way closed after {} ms (header_read_timeout 3 s)",
        (closed - evicted).as_millis()
    );
    let mut buffer = [0u8; 256];
    let still = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buffer)).await;
    assert!(
        !matches!(still, Ok(Ok(0) | Err(_))),
        "the event stream was closed: {still:?}"
    );
}

// --- 4. a token reload that would widen access -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_gives_two_clients_one_token_is_refused_until_the_files_differ() {
    let dir = tempfile::tempdir().unwrap();
    let (a_file, ops_file) = (dir.path().join("a.token"), dir.path().join("ops.token"));
    let (a_token, ops_token) = ("token-of-client-a-11112222", "token-of-client-ops-3333444");
    std::fs::write(&a_file, a_token).unwrap();
    std::fs::write(&ops_file, ops_token).unwrap();
    let clients = format!(
        "[clients.a]\ntoken_file = {:?}\ndatabases = [\"a\"]\n\
         [clients.ops]\ntoken_file = {:?}\ndatabases = [\"*\"]\n",
        a_file.display().to_string(),
        ops_file.display().to_string()
    );
    let broker = file_broker("", "reload_interval = \"100ms\"", &clients).await;
    assert_eq!(broker.get_as("b", a_token).await.status(), 403);

    replace(&ops_file, a_token);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        broker.get_as("b", a_token).await.status(),
        403,
        "a's token must not read b through ops's file"
    );
    assert_eq!(
        broker.get_as("b", ops_token).await.status(),
        200,
        "ops keeps its token"
    );
    assert_eq!(
        broker.get_as("a", a_token).await.status(),
        200,
        "a keeps its token"
    );
    let errors: Vec<Value> = broker
        .log_events()
        .into_iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("hold the same token"))
        })
        .collect();
    assert_eq!(errors.len(), 1, "logged once while it lasts: {errors:?}");
    assert_eq!(errors[0]["level"], "ERROR");
    let named = format!("{} {}", errors[0]["client"], errors[0]["other_client"]);
    assert!(
        named.contains("\"a\"") && named.contains("\"ops\""),
        "{named}"
    );
    let page = broker.metrics().await;
    let refused = metric(
        &page,
        "credential_broker_token_reload_failures_total",
        &[("client", "ops"), ("reason", "duplicate")],
    )
    .unwrap();
    assert!(refused >= 3.0, "every refused reload counts: {refused}");

    let new_ops = "token-of-client-ops-new-5555";
    replace(&ops_file, new_ops);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(broker.get_as("b", new_ops).await.status(), 200);
    assert_eq!(broker.get_as("b", ops_token).await.status(), 401);
    assert_eq!(broker.get_as("b", a_token).await.status(), 403);
    let text = broker.log_text();
    assert!(!text.contains(a_token) && !text.contains(new_ops) && !text.contains(ops_token));
}

// --- 5. the body limit, however the body is framed ---------------------------------------------

/// A chunked refresh body of `size` bytes (all spaces but a JSON object at the start).
fn chunked_refresh(size: usize) -> Vec<u8> {
    let mut request = format!(
        "POST /credentials/a/refresh HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    let chunk = vec![b' '; 8192];
    let mut sent = 0;
    while sent < size {
        let n = chunk.len().min(size - sent);
        request.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        request.extend_from_slice(&chunk[..n]);
        request.extend_from_slice(b"\r\n");
        sent += n;
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

/// The status and body of a raw HTTP answer.
fn parse_answer(answer: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(answer);
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_the_limit_is_refused_with_the_json_error() {
    let broker = file_broker("", "", "").await;
    for size in [100 * 1024, 3 * 1024 * 1024] {
        let answer = raw_exchange(broker.api, &chunked_refresh(size), Duration::from_secs(5)).await;
        let (status, body) = parse_answer(&answer);
        assert_eq!(status, 413, "{size} bytes chunked: {body}");
        let body: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON: {body:?}"));
        assert_eq!(body["error"]["code"], "payload_too_large");
    }
    // Under the limit, chunked is fine.
    let answer = raw_exchange(broker.api, &chunked_refresh(1000), Duration::from_secs(5)).await;
    assert_eq!(
        parse_answer(&answer).0,
        400,
        "spaces alone are no JSON object"
    );
}

// --- 6. special files at a token path or the secrets path --------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_at_the_token_or_secrets_path_keeps_the_last_good_value_and_never_blocks_shutdown() {
    let mut broker =
        file_broker("", "reload_interval = \"100ms\"", "[cache]\nttl = \"1h\"\n").await;
    let before = password_of(&broker, "a", TOKEN).await;

    let token_file = broker.token_file.clone();
    mkfifo(&token_file);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        broker.get("a").await.status(),
        200,
        "the last good token stays"
    );
    let warnings = broker
        .log_events()
        .into_iter()
        .filter(|e| e["message"] == "token file unusable; keeping the current token")
        .count();
    assert_eq!(warnings, 1, "logged once, not every reload");

    mkfifo(&broker.secrets);
    let refresh = broker.refresh("a").await;
    assert_eq!(refresh.status(), 502, "a FIFO is no secrets file");
    assert_eq!(
        password_of(&broker, "a", TOKEN).await,
        before,
        "the cached value stays"
    );

    broker.terminate();
    let status = broker.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "SIGTERM with FIFOs in place: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_as_the_token_file_at_start_is_an_invalid_configuration_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("token");
    mkfifo(&fifo);
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\ntoken_file = {:?}\n[source]\nkind = \"file\"\npath = \"/nonexistent\"\n[databases.a]\nsecret_id = \"a\"\n",
            fifo.display().to_string()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_credential-broker"))
        .args(["check-config", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = exit_within(&mut child, Duration::from_secs(5))
        .await
        .expect("check-config hung on a FIFO token file");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("auth.token_file") && stderr.contains("not a regular file"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_as_the_audit_file_stops_start_up_with_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("audit.fifo");
    mkfifo(&fifo);
    let config = socket_config(dir.path());
    let mut text = std::fs::read_to_string(&config).unwrap();
    let _ = write!(
        text,
        "[audit]\noutput = \"file\"\npath = {:?}\n",
        fifo.display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("broker.log");
    let mut child = broker_command(&config, &log).spawn().unwrap();
    let status = exit_within(&mut child, Duration::from_secs(10))
        .await
        .expect("the broker hung opening a FIFO as its audit file");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{text}");
    assert!(
        text.contains("cannot open the audit output: not a regular file"),
        "{text}"
    );
}

// --- 7. the Unix socket's directory -------------------------------------------------------------

fn socket_config(dir: &Path) -> std::path::PathBuf {
    let socket = dir.join("broker.sock");
    let secrets = dir.join("secrets.json");
    std::fs::write(&secrets, secrets_json()).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let config = dir.join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"off\"\nadmin_listen = \"127.0.0.1:0\"\nunix_socket = {{ path = {:?}, mode = \"0660\" }}\n\
             [auth]\ntoken_file = {:?}\n[source]\nkind = \"file\"\npath = {:?}\n[log]\nformat = \"json\"\n{A_AND_B}",
            socket.display().to_string(),
            token.display().to_string(),
            secrets.display().to_string(),
        ),
    )
    .unwrap();
    config
}

fn secrets_json() -> String {
    secrets(&new_password("sock-a"), &new_password("sock-b")).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_directory_others_can_write_is_refused_unless_sticky() {
    let outer = tempfile::tempdir().unwrap();
    let open_dir = outer.path().join("open");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = socket_config(&open_dir);
    let log = outer.path().join("open.log");
    let mut child = broker_command(&config, &log).spawn().unwrap();
    let status = exit_within(&mut child, Duration::from_secs(10)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        status.is_some_and(|s| !s.success()),
        "a world-writable socket directory was accepted: {text}"
    );
    assert!(
        text.contains("writable by other users and not sticky"),
        "{text}"
    );
    assert!(!open_dir.join("broker.sock").exists());

    // Sticky (as /tmp is): other users cannot replace what is ours.
    let sticky = outer.path().join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let config = socket_config(&sticky);
    let log = outer.path().join("sticky.log");
    let mut broker = crate::helpers::TestBroker::from_command(
        broker_command(&config, &log),
        log,
        tempfile::tempdir().unwrap(),
    )
    .await;
    let socket = sticky.join("broker.sock");
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let left: Vec<_> = std::fs::read_dir(&sticky)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with(".credential-broker"))
        .collect();
    assert!(left.is_empty(), "staging directories left behind: {left:?}");
    broker.terminate();
    assert!(broker.wait_exit(Duration::from_secs(5)).await.success());
    assert!(!socket.exists(), "the socket is removed on exit");
}

// --- 8. values that pass the check but could not be served ---------------------------------------

/// `check-config` on a configuration of `text` (no environment): exit code and stderr.
fn check_config_text(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(&config, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_credential-broker"))
        .args(["check-config", "--config"])
        .arg(&config)
        .env_clear()
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// [`check_config_text`] of `extra` plus auth disabled and one database.
fn check_config(extra: &str) -> (Option<i32>, String) {
    check_config_text(&format!(
        "{extra}\n[auth]\ndisabled = true\n[databases.a]\nsecret_id = \"a\"\n"
    ))
}

#[test]
fn numbers_and_durations_outside_their_documented_ranges_exit_64_naming_the_key() {
    for (extra, key) in [
        (
            "[server]\nmax_header_bytes = 9223372036854775807",
            "server.max_header_bytes",
        ),
        (
            "[server]\nmax_connections = 1000000000",
            "server.max_connections",
        ),
        (
            "[server]\nheader_read_timeout = \"1000d\"",
            "server.header_read_timeout",
        ),
        ("[cache]\nttl = \"400000000000y\"", "cache.ttl"),
        ("[cache]\nmax_stale = \"1000y\"", "cache.max_stale"),
        ("[cache]\ncapacity = 9223372036854775807", "cache.capacity"),
        ("[aws]\nmax_attempts = 4000000000", "aws.max_attempts"),
        (
            "[upstream]\nbackoff_max = \"1000000h\"",
            "upstream.backoff_max",
        ),
        (
            "[rotation]\nwatch_interval = \"0s\"",
            "rotation.watch_interval",
        ),
    ] {
        let (code, stderr) = check_config(extra);
        assert_eq!(code, Some(64), "{extra}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains(key) && stderr.contains("must be between"),
            "{extra}: {stderr}"
        );
    }
    let (code, stderr) =
        check_config("[server]\nmax_header_bytes = 1048576\n[cache]\nttl = \"7d\"");
    assert_eq!(code, Some(0), "the largest values in range: {stderr}");
}

// --- 9. Kubernetes service links ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_service_links_do_not_stop_the_broker_and_real_keys_still_apply() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets.json");
    std::fs::write(&secrets, secrets_json()).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[auth]\ntoken_file = {:?}\n\
             [source]\nkind = \"file\"\npath = {:?}\n[log]\nformat = \"json\"\n{A_AND_B}",
            token.display().to_string(),
            secrets.display().to_string()
        ),
    )
    .unwrap();
    let links = [
        ("CREDENTIAL_BROKER_PORT", "tcp://10.0.0.1:2775"),
        ("CREDENTIAL_BROKER_PORT_2775_TCP", "tcp://10.0.0.1:2775"),
        ("CREDENTIAL_BROKER_PORT_2775_TCP_PROTO", "tcp"),
        ("CREDENTIAL_BROKER_PORT_2775_TCP_PORT", "2775"),
        ("CREDENTIAL_BROKER_PORT_2775_TCP_ADDR", "10.0.0.1"),
        ("CREDENTIAL_BROKER_SERVICE_HOST", "10.0.0.1"),
        ("CREDENTIAL_BROKER_SERVICE_PORT", "2775"),
        ("CREDENTIAL_BROKER_SERVICE_PORT_METRICS", "2776"),
    ];
    let with_links = |command: &mut Command| {
        for (name, value) in links {
            command.env(name, value);
        }
        command.env("CREDENTIAL_BROKER_CACHE__TTL", "42s");
    };
    let log = dir.path().join("broker.log");
    let mut command = broker_command(&config, &log);
    with_links(&mut command);
    let mut broker =
        crate::helpers::TestBroker::from_command(command, log, tempfile::tempdir().unwrap()).await;
    assert_eq!(broker.get("a").await.status(), 200);
    let warning = broker
        .wait_for_log(
            "ignoring environment variables that are not configuration keys (those are CREDENTIAL_BROKER_<SECTION>__<KEY>)",
            Duration::from_secs(2),
        )
        .await;
    let named = warning["variables"].to_string();
    for (name, value) in links {
        assert!(named.contains(name), "{name} in {named}");
        assert!(
            !broker.log_text().contains(value) || value.len() < 5,
            "no values logged"
        );
    }
    broker.terminate();

    let mut check = Command::new(env!("CARGO_BIN_EXE_credential-broker"));
    check
        .args(["check-config", "--config"])
        .arg(&config)
        .env_clear();
    with_links(&mut check);
    let output = check.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("ttl: 42s"),
        "the real key applies"
    );

    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/k8s/deployment.yaml"),
    )
    .unwrap();
    assert!(manifest.contains("enableServiceLinks: false"));
}

// --- 10. signals ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_tokens_and_the_secrets_file_at_once_and_never_stops_the_broker() {
    let mut broker = file_broker("", "", "[cache]\nttl = \"1h\"\n").await;
    // The default token file is re-read every 5 s and the cache holds for an hour: only the
    // signal can make these changes visible within the second allowed below.
    let before = password_of(&broker, "a", TOKEN).await;
    let new_token = "rotated-by-sighup-token-0123";
    let new_password = new_password("sighup");
    replace(&broker.token_file, new_token);
    replace(
        &broker.secrets,
        &secrets(&new_password, "unchanged-b").to_string(),
    );
    signal(broker.pid(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let response = broker.get_as("a", new_token).await;
        if response.status() == 200
            && json_body(response).await["password"].as_str() == Some(new_password.as_str())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(before, new_password);
    assert_eq!(
        broker.get_as("a", TOKEN).await.status(),
        401,
        "the old token is refused"
    );
    broker
        .wait_for_log(
            "reloading: re-reading token files and fetching every database again",
            Duration::from_secs(1),
        )
        .await;
    signal(broker.pid(), "HUP");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        broker.get_as("b", new_token).await.status(),
        200,
        "still serving"
    );
    broker.terminate();
    assert!(broker.wait_exit(Duration::from_secs(5)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_at_any_moment_of_start_up_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let config = socket_config(dir.path());
    // 2000 databases make start-up (reading and checking the configuration, building the
    // broker) last long enough, tens of milliseconds, that the signals below land inside it.
    let mut text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("listen = \"off\"", "listen = \"127.0.0.1:0\"");
    text.push_str("[cache]\nwarm = false\n");
    for n in 0..2000 {
        let _ = write!(text, "[databases.db{n}]\nsecret_id = \"sec-a\"\n");
    }
    std::fs::write(&config, text).unwrap();
    for delay_ms in [20, 30, 45, 60, 80] {
        let log = dir.path().join(format!("broker-{delay_ms}.log"));
        let mut child = broker_command(&config, &log).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        signal(child.id(), "TERM");
        let status = exit_within(&mut child, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no exit after SIGTERM at {delay_ms} ms"));
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERM {delay_ms} ms after start: {status} ({})",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
}

// --- 11. smaller items ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authorization_headers_and_proxy_headers_are_refused() {
    let broker = file_broker("", "", "").await;
    let url = broker.url("/credentials/a");
    let two = broker
        .send(
            broker
                .http
                .get(&url)
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("authorization", "Bearer not-the-token-at-all-000"),
        )
        .await;
    assert_eq!(two.status(), 400);
    assert_eq!(json_body(two).await["error"]["code"], "bad_request");
    for (name, value) in [
        ("forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43"),
        ("x-forwarded-host", "example.com"),
        ("x-real-ip", "192.0.2.60"),
        ("via", "1.1 proxy"),
    ] {
        let response = broker
            .send(broker.http.get(&url).bearer_auth(TOKEN).header(name, value))
            .await;
        assert_eq!(response.status(), 400, "{name}");
        assert_eq!(
            json_body(response).await["error"]["code"],
            "forwarded_request_rejected",
            "{name}"
        );
    }
    assert_eq!(broker.get("a").await.status(), 200);
}

#[test]
fn a_token_outside_visible_ascii_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    for (token, expected) in [
        ("token-visible-ascii-0123", 0),
        ("token-with-é-accent-0123", 64),
        ("token-with-\u{7f}-del-01234", 64),
    ] {
        std::fs::write(&file, token).unwrap();
        let (code, stderr) = check_config_text(&format!(
            "[auth]\ntoken_file = {:?}\n[databases.a]\nsecret_id = \"a\"\n",
            file.display().to_string()
        ));
        assert_eq!(code, Some(expected), "{token}: {stderr}");
        if expected == 64 {
            assert!(
                stderr.contains("visible ASCII") && !stderr.contains(token),
                "{stderr}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_entry_in_the_secrets_file_stops_no_other_entry_from_updating() {
    let broker = file_broker("", "", "[cache]\nttl = \"1h\"\n").await;
    let b_before = password_of(&broker, "b", TOKEN).await;
    let a_new = new_password("entry-a");
    let file = json!({"sec-a": {"username": "a", "password": a_new}, "sec-b": 42});
    replace(&broker.secrets, &file.to_string());
    let refreshed = broker.refresh("a").await;
    assert_eq!(refreshed.status(), 200, "a updates although b is broken");
    assert_eq!(json_body(refreshed).await["password"], a_new.as_str());
    let b = broker.refresh("b").await;
    assert_eq!(b.status(), 200, "b keeps its last good value");
    assert_eq!(json_body(b).await["password"], b_before.as_str());
    assert!(
        broker
            .log_events()
            .iter()
            .any(|e| e["message"].as_str().is_some_and(
                |m| m.starts_with("an entry of the secrets file is not a secret value")
            ) && e["secret_id"] == "sec-b"),
        "the bad entry is reported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_and_keyvalue_refuse_a_value_with_nul_and_json_escapes_it() {
    let secrets = json!({
        "sec-a": {"username": "a", "password": format!("{}\u{0}tail", new_password("nul"))},
        "sec-b": {"username": "b", "password": new_password("nul-b")},
    });
    let broker = FileBroker::spawn(&secrets, "", "", "", A_AND_B).await;
    for format in ["env", "keyvalue"] {
        let response = broker
            .send(
                broker
                    .http
                    .get(broker.url(&format!("/credentials/a?format={format}")))
                    .bearer_auth(TOKEN),
            )
            .await;
        assert_eq!(response.status(), 400, "{format}");
        let body = json_body(response).await;
        assert_eq!(body["error"]["code"], "format_unavailable");
        assert!(body["error"]["message"].as_str().unwrap().contains("NUL"));
    }
    let json = json_body(broker.get("a").await).await;
    assert!(json["password"].as_str().unwrap().contains('\0'));
    let env = broker
        .send(
            broker
                .http
                .get(broker.url("/credentials/b?format=env"))
                .bearer_auth(TOKEN),
        )
        .await;
    assert_eq!(env.status(), 200, "values without NUL still render");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_requests_cannot_flood_the_audit_trail() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let extra = format!(
        "[audit]\noutput = \"file\"\npath = {:?}\n",
        audit.display().to_string()
    );
    let broker = file_broker("", "", &extra).await;
    let started = Instant::now();
    for _ in 0..500 {
        let response = broker.get_as("a", "wrong-token-0123456789abc").await;
        assert_eq!(response.status(), 401);
    }
    let seconds = started.elapsed().as_secs() + 1;
    assert_eq!(broker.get("a").await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // One more second: the summary of the last one is written with its first event.
    assert_eq!(
        broker
            .get_as("a", "wrong-token-0123456789abc")
            .await
            .status(),
        401
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let lines: Vec<Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // A line stands for `count` identical events of one millisecond.
    let unauthenticated: u64 = lines
        .iter()
        .filter(|l| l["client"] == "unauthenticated" && l["action"] != "suppressed")
        .map(|l| l["count"].as_u64().unwrap())
        .sum();
    let limit = 10 * (seconds + 2);
    assert!(
        unauthenticated <= limit,
        "{unauthenticated} unauthenticated events for 501 requests in {seconds} s"
    );
    let suppressed: u64 = lines
        .iter()
        .filter(|l| l["action"] == "suppressed")
        .map(|l| {
            l["result"].as_str().unwrap().parse::<u64>().unwrap() * l["count"].as_u64().unwrap()
        })
        .sum();
    let page = broker.metrics().await;
    let counted = metric(&page, "credential_broker_audit_suppressed_total", &[]).unwrap();
    assert!((unauthenticated as f64 + counted - 501.0).abs() < 0.5);
    assert!(
        (suppressed as f64 - counted).abs() < 0.5,
        "the summaries add up to the counter"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["client"] == "default" && l["result"] == "ok")
    );
    assert_eq!(
        metric(
            &page,
            "credential_broker_access_total",
            &[("client", "unauthenticated"), ("result", "unauthorized")]
        ),
        Some(501.0),
        "the access counter counts every one"
    );
}

/// The broker under `sh -c "ulimit <args> && exec broker"`, on the file source.
async fn broker_with_ulimit(args: &str) -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets.json");
    std::fs::write(&secrets, secrets_json()).unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[auth]\n\
             disabled = true\n[source]\nkind = \"file\"\npath = {:?}\n[log]\nformat = \"json\"\n\
             level = \"trace\"\n{A_AND_B}",
            secrets.display().to_string()
        ),
    )
    .unwrap();
    let log = dir.path().join("broker.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("ulimit {args} && exec \"$0\" --config \"$1\""))
        .arg(env!("CARGO_BIN_EXE_credential-broker"))
        .arg(&config)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    TestBroker::from_command(command, log, dir).await
}

/// The soft and hard "Max open files" of process `pid`.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_file_limit_is_raised_to_the_hard_one_and_a_low_one_is_named() {
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .expect("a finite hard open-file limit");
    assert!(
        hard > 300,
        "the test needs a hard open-file limit above 300, not {hard}"
    );
    // A soft limit of 300 under a higher hard one: raised, nothing to warn about.
    let raised = broker_with_ulimit("-Sn 300").await;
    assert_eq!(
        open_files_limits(raised.pid()),
        (hard.to_string(), hard.to_string())
    );
    assert!(
        !raised.log_text().contains("open-file limit"),
        "{}",
        raised.log_text()
    );
    drop(raised);
    // Both at 400, under the 2,048 connections by default: the broker serves, and says so once.
    let low = broker_with_ulimit("-n 400").await;
    assert_eq!(
        open_files_limits(low.pid()),
        ("400".to_owned(), "400".to_owned())
    );
    let warnings: Vec<Value> = low
        .log_events()
        .into_iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("the open-file limit is below"))
        })
        .collect();
    assert_eq!(warnings.len(), 1, "{}", low.log_text());
    assert_eq!(warnings[0]["open_files"], 400);
    assert_eq!(warnings[0]["needed"], 2048 + 256);
    assert_eq!(low.get("a").await.status(), 200);
}
