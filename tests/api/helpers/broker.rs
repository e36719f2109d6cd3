//! The real broker binary, spawned on port 0 with trace-level JSON logs that are scanned for
//! every password the suite used; its options, signals and memory.

use serde_json::Value;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::*;

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// What to put in a test broker's configuration.
pub struct BrokerOptions {
    pub endpoint: String,
    /// `[databases.NAME]` tables, as TOML text.
    pub databases: String,
    pub warm: bool,
    pub operation_timeout: &'static str,
    pub ttl: &'static str,
    pub max_stale: &'static str,
    pub topology_ttl: &'static str,
    /// Extra `key = value` lines for the `[server]` table.
    pub server_toml: String,
    /// Extra `key = value` lines for the `[auth]` table.
    pub auth_toml: String,
    pub extra_toml: String,
    /// Environment variables of the broker process besides the test defaults.
    pub env: Vec<(&'static str, String)>,
}

impl BrokerOptions {
    pub fn new(endpoint: String) -> Self {
        Self {
            endpoint,
            databases: String::new(),
            warm: true,
            operation_timeout: "3s",
            ttl: "5m",
            max_stale: "1h",
            topology_ttl: "15m",
            server_toml: String::new(),
            auth_toml: String::new(),
            extra_toml: String::new(),
            env: Vec::new(),
        }
    }

    /// Adds a database backed by `secret_id`, with extra `key = value` lines.
    #[must_use]
    pub fn database(mut self, name: &str, secret_id: &str, extra: &str) -> Self {
        let _ = writeln!(
            self.databases,
            "[databases.{name}]\nsecret_id = {secret_id:?}\n{extra}"
        );
        self
    }

    /// Adds a database named by an RDS identifier: `kind` is `rds_instance` or `rds_cluster`.
    #[must_use]
    pub fn rds_database(mut self, name: &str, kind: &str, id: &str, extra: &str) -> Self {
        let _ = writeln!(
            self.databases,
            "[databases.{name}]\n{kind} = {id:?}\n{extra}"
        );
        self
    }

    #[must_use]
    pub fn cold(mut self) -> Self {
        self.warm = false;
        self
    }

    pub async fn spawn(self) -> TestBroker {
        TestBroker::spawn(self).await
    }
}

/// The real `credential-broker` binary, on port 0, logging JSON at trace level to a file.
pub struct TestBroker {
    pub api: SocketAddr,
    pub admin: SocketAddr,
    /// The AWS agent's API, when it is configured.
    pub agent: Option<SocketAddr>,
    pub http: reqwest::Client,
    child: Child,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestBroker {
    async fn spawn(options: BrokerOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace = "5s"
{server}

[auth]
token_file = {token_file:?}
{auth}

[cache]
ttl = {ttl:?}
max_stale = {max_stale:?}
topology_ttl = {topology_ttl:?}
warm = {warm}

[source]
kind = "secrets_manager"

[aws]
region = "us-east-1"
endpoint_url = {endpoint:?}
connect_timeout = "1s"
attempt_timeout = {timeout:?}
operation_timeout = {timeout:?}
max_attempts = 1

[upstream]
backoff_initial = "100ms"
backoff_max = "2s"

[log]
format = "json"
level = "trace"
{extra}
{databases}"#,
            token_file = token_file.display().to_string(),
            warm = options.warm,
            server = options.server_toml,
            auth = options.auth_toml,
            ttl = options.ttl,
            max_stale = options.max_stale,
            topology_ttl = options.topology_ttl,
            endpoint = options.endpoint,
            timeout = options.operation_timeout,
            extra = options.extra_toml,
            databases = options.databases,
        );
        let config_path = dir.path().join("broker.toml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = dir.path().join("broker.log");
        let mut command = broker_command(&config_path, &log_path);
        command.envs(options.env);
        Self::from_command(command, log_path, dir).await
    }

    /// Starts `command` (a broker logging JSON to `log_path`) and waits until it listens.
    pub async fn from_command(
        mut command: Command,
        log_path: PathBuf,
        dir: tempfile::TempDir,
    ) -> Self {
        let child = command.spawn().unwrap();
        let mut broker = Self {
            api: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            agent: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            child,
            log_path,
            _dir: dir,
        };
        let listening = broker
            .wait_for_log("listening", Duration::from_secs(20))
            .await;
        // `off` when the API listens on a Unix socket only.
        if let Ok(api) = listening["api"].as_str().unwrap().parse() {
            broker.api = api;
        }
        broker.admin = listening["admin"].as_str().unwrap().parse().unwrap();
        broker.agent = listening["aws_agent"].as_str().and_then(|a| a.parse().ok());
        broker
    }

    /// Waits until the broker logs an event with this message and returns that event.
    pub async fn wait_for_log(&mut self, message: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(event) = self
                .log_events()
                .into_iter()
                .find(|e| e["message"] == message)
            {
                return event;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("broker exited with {status} before logging {message:?}");
            }
            assert!(
                Instant::now() < deadline,
                "broker did not log {message:?} within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Every JSON event the broker logged so far.
    pub fn log_events(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub async fn get(&self, db: &str) -> reqwest::Response {
        self.get_as(db, TOKEN).await
    }

    pub async fn refresh(&self, db: &str) -> reqwest::Response {
        self.refresh_as(db, TOKEN).await
    }

    /// `GET /credentials/{db}` with `token`.
    pub async fn get_as(&self, db: &str, token: &str) -> reqwest::Response {
        let url = self.url(&format!("/credentials/{db}"));
        self.send(self.http.get(url).bearer_auth(token)).await
    }

    /// `POST /credentials/{db}/refresh` with `token`.
    pub async fn refresh_as(&self, db: &str, token: &str) -> reqwest::Response {
        let url = self.url(&format!("/credentials/{db}/refresh"));
        self.send(self.http.post(url).bearer_auth(token)).await
    }

    /// A GET on the admin listener.
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.send(self.http.get(self.admin_url(path))).await
    }

    /// Sends `request` and checks the answer for leaks: no header may hold a password the suite
    /// used, and no body either, except the 200 body of a credentials request (whose job it is).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let response = request.send().await.unwrap();
        let credentials_body =
            response.status() == 200 && response.url().path().starts_with("/credentials/");
        let mut rebuilt = axum::http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            rebuilt = rebuilt.header(name, value);
        }
        let url = response.url().clone();
        let headers = format!("{:?}", response.headers());
        let body = response.bytes().await.unwrap();
        let text = String::from_utf8_lossy(&body);
        for password in passwords() {
            assert!(
                !headers.contains(&password),
                "a password in the headers of {url}"
            );
            assert!(
                credentials_body || !text.contains(&password),
                "a password in the body of {url}"
            );
        }
        // The rebuilt response has no URL (reqwest offers no way to set it).
        reqwest::Response::from(rebuilt.body(body).unwrap())
    }

    pub async fn metrics(&self) -> String {
        self.admin_get("/metrics").await.text().await.unwrap()
    }

    /// Scrapes `/metrics` until the sample `name{labels}` is there and `done` with its value, for
    /// at most `limit` (then panics with the last value read); returns that value.
    pub async fn wait_for_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        limit: Duration,
        done: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + limit;
        loop {
            let value = metric(&self.metrics().await, name, labels);
            if let Some(value) = value.filter(|value| done(*value)) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} not there within {limit:?}: last {value:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let status = self.admin_get("/readyz").await.status();
            if status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "broker not ready within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        signal(self.pid(), "TERM");
    }

    /// Waits for the process to exit (bounded) and returns its status.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "broker did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Panics if the log holds any password the suite has used.
    pub fn assert_log_has_no_password(&self) {
        let text = self.log_text();
        assert!(!text.is_empty(), "the broker logged nothing at trace level");
        for password in passwords() {
            assert!(
                !text.contains(&password),
                "a password appeared in the broker's log ({})",
                self.log_path.display()
            );
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            self.assert_log_has_no_password();
        }
    }
}

/// The broker binary with a clean environment: dummy AWS credentials, no metadata endpoint,
/// all output to `log`.
pub fn broker_command(config: &Path, log: &Path) -> Command {
    let out = std::fs::File::create(log).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_credential-broker"));
    command
        .arg("--config")
        .arg(config)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    command
}

/// The resident set size of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// A broker on the file source (no AWS) with [`TOKEN`] in its token file: `secrets` is the
/// secrets file's JSON, `server` and `auth` more lines for those tables, `extra` more tables
/// (after `[log]`), `databases` the `[databases.*]` tables. Logs JSON at trace.
pub struct FileBroker {
    pub broker: TestBroker,
    pub secrets: PathBuf,
    pub token_file: PathBuf,
}

impl FileBroker {
    pub async fn spawn(
        secrets: &Value,
        server: &str,
        auth: &str,
        extra: &str,
        databases: &str,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let secrets_path = path.join("secrets.json");
        std::fs::write(&secrets_path, secrets.to_string()).unwrap();
        let token_file = path.join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n{server}\n\
             [auth]\ntoken_file = {token:?}\n{auth}\n[source]\nkind = \"file\"\npath = {secrets:?}\n\
             [log]\nformat = \"json\"\nlevel = \"trace\"\n{extra}\n{databases}",
            secrets = secrets_path.display().to_string(),
            token = token_file.display().to_string(),
        );
        let config_path = path.join("broker.toml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = path.join("broker.log");
        let command = broker_command(&config_path, &log_path);
        let broker = TestBroker::from_command(command, log_path, dir).await;
        Self {
            broker,
            secrets: secrets_path,
            token_file,
        }
    }
}

impl std::ops::Deref for FileBroker {
    type Target = TestBroker;

    fn deref(&self) -> &TestBroker {
        &self.broker
    }
}

impl std::ops::DerefMut for FileBroker {
    fn deref_mut(&mut self) -> &mut TestBroker {
        &mut self.broker
    }
}

/// Runs curl through `wrapper` (a command that takes another: `runuser -u USER --`, `setpriv
/// ...`) against the Unix socket; returns the HTTP status it saw (0: no answer).
pub fn curl_unix_status(mut wrapper: Command, socket: &Path, path: &str) -> u16 {
    let output = wrapper
        .args([
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .arg("--unix-socket")
        .arg(socket)
        .arg(format!("http://localhost{path}"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {wrapper:?} curl (apt-get install curl): {e}"));
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}
