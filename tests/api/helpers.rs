//! Shared test harness: a real moto server per test, a counting (and delaying) HTTP proxy in front
//! of it, a Secrets Manager client for seeding, and the real broker binary spawned on port 0 with
//! trace-level JSON logs that are scanned for every password the suite used.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client as SmClient;
use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials as AwsCredentials, Region};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;

/// The bearer token every test broker is configured with.
pub const TOKEN: &str = "integration-test-token-5f2c9a";

/// The unique core of every password handed to moto by any test in this binary; broker logs must
/// contain none. The core has no character that any escaping (JSON, URI, shell) would change.
static PASSWORDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A fresh password with characters that need escaping in JSON, URIs and shells, recorded so that
/// every broker log can be checked for it.
pub fn new_password(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let core = format!("Pw-{tag}-{n}-{nanos:x}");
    PASSWORDS.lock().unwrap().push(core.clone());
    format!("{core}!#$%&'()*+,/:;=?@[]~\"\\")
}

/// The unique cores of the passwords made so far.
pub fn passwords() -> Vec<String> {
    PASSWORDS.lock().unwrap().clone()
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn moto_server_binary() -> PathBuf {
    let path = std::env::var_os("MOTO_SERVER").map_or_else(
        || repo_root().join(".venv/moto/bin/moto_server"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "moto server not found at {}: run `bash .ci/setup` (installs moto 5.2.5 into .venv/moto) \
         or set MOTO_SERVER to a moto_server binary",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A moto server process of this test's own, killed on drop.
pub struct Moto {
    pub addr: SocketAddr,
    child: Child,
}

impl Moto {
    pub async fn start() -> Self {
        let binary = moto_server_binary();
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new(&binary)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let mut moto = Self {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                child,
            };
            if moto.wait_ready().await {
                return moto;
            }
        }
        panic!("moto server did not become ready on any of 5 ports");
    }

    async fn wait_ready(&mut self) -> bool {
        let url = format!("http://{}/moto-api/", self.addr);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            if let Ok(response) = reqwest::get(&url).await
                && response.status().is_success()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Freezes moto (SIGSTOP): connections are accepted by the kernel but never answered.
    pub fn freeze(&self) {
        signal(self.pid(), "STOP");
    }

    /// Resumes a frozen moto (SIGCONT).
    pub fn thaw(&self) {
        signal(self.pid(), "CONT");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        signal(self.pid(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// What the fault proxy does with the requests it receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward to moto.
    None,
    /// Close the connection without answering.
    Reset,
    /// Answer with this HTTP status and an empty JSON body.
    Status(u16),
    /// Answer 400 `ThrottlingException`, as Secrets Manager does when rate-limiting.
    Throttle,
    /// Answer `GetSecretValue` with this status and body (a broken or hostile endpoint); other
    /// operations are forwarded.
    GetSecretValue(u16, String),
}

/// The proxy's shared knobs and records.
struct ProxyState {
    /// Requests seen, by `X-Amz-Target` (`GetSecretValue` for `AWSPENDING` counted apart, as
    /// `GetSecretValue#AWSPENDING`).
    counts: Mutex<HashMap<String, usize>>,
    /// When each `GetSecretValue` request for `AWSCURRENT` arrived.
    arrivals: Mutex<Vec<Instant>>,
    delay_ms: AtomicU64,
    fault: Mutex<Fault>,
}

/// A fault-injection HTTP proxy in front of moto: counts requests by `X-Amz-Target`, records
/// their arrival times, and can delay them, reset them, or answer errors or throttling.
pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            counts: Mutex::new(HashMap::new()),
            arrivals: Mutex::new(Vec::new()),
            delay_ms: AtomicU64::new(0),
            fault: Mutex::new(Fault::None),
        });
        let client: HyperClient<HttpConnector, Full<Bytes>> =
            HyperClient::builder(TokioExecutor::new()).build_http();
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (client, state) = (client.clone(), Arc::clone(&shared));
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        forward(request, upstream, client.clone(), Arc::clone(&state))
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests with `X-Amz-Target: secretsmanager.<operation>` arrived; for
    /// `GetSecretValue`, those for `AWSCURRENT` (pass `GetSecretValue#AWSPENDING` for the others).
    pub fn count(&self, operation: &str) -> usize {
        let key = format!("secretsmanager.{operation}");
        let counts = self.state.counts.lock().unwrap();
        counts.get(&key).copied().unwrap_or(0)
    }

    /// When each `GetSecretValue` request arrived, in order.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.state.arrivals.lock().unwrap().clone()
    }

    /// Delays every later request by `delay` before handling it.
    pub fn set_delay(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap();
        self.state.delay_ms.store(millis, Ordering::SeqCst);
    }

    /// Applies `fault` to every later request.
    pub fn set_fault(&self, fault: Fault) {
        *self.state.fault.lock().unwrap() = fault;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    request: hyper::Request<Incoming>,
    upstream: SocketAddr,
    client: HyperClient<HttpConnector, Full<Bytes>>,
    state: Arc<ProxyState>,
) -> Result<hyper::Response<Full<Bytes>>, std::io::Error> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let mut target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("other")
        .to_owned();
    if String::from_utf8_lossy(&body).contains("AWSPENDING") {
        target.push_str("#AWSPENDING");
    }
    let mut request = hyper::Request::from_parts(parts, Full::new(body));
    if target == "secretsmanager.GetSecretValue" {
        state.arrivals.lock().unwrap().push(Instant::now());
    }
    *state
        .counts
        .lock()
        .unwrap()
        .entry(target.clone())
        .or_default() += 1;
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let answer = |status: u16, body: &'static str| {
        Ok(hyper::Response::builder()
            .status(status)
            .header("content-type", "application/x-amz-json-1.1")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap())
    };
    let fault = state.fault.lock().unwrap().clone();
    match fault {
        // An error from the service makes hyper drop the connection without a response.
        Fault::Reset => return Err(std::io::Error::other("injected reset")),
        Fault::Status(status) => return answer(status, "{}"),
        Fault::Throttle => {
            let body = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
            return answer(400, body);
        }
        Fault::GetSecretValue(status, body) if target == "secretsmanager.GetSecretValue" => {
            return Ok(hyper::Response::builder()
                .status(status)
                .header("content-type", "application/x-amz-json-1.1")
                .body(Full::new(Bytes::from(body)))
                .unwrap());
        }
        Fault::None | Fault::GetSecretValue(..) => {}
    }
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", hyper::http::uri::PathAndQuery::as_str)
        .to_owned();
    *request.uri_mut() = format!("http://{upstream}{path}").parse().unwrap();
    match client.request(request).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            let collected = body.collect().await;
            let bytes = collected
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            Ok(hyper::Response::from_parts(parts, Full::new(bytes)))
        }
        Err(_) => answer(502, "{}"),
    }
}

/// moto plus a counting proxy plus a seeding client: the upstream side of one test.
pub struct Upstream {
    pub moto: Moto,
    pub proxy: Proxy,
    pub sm: SmClient,
    pub rds: aws_sdk_rds::Client,
}

impl Upstream {
    pub async fn start() -> Self {
        let moto = Moto::start().await;
        let proxy = Proxy::start(moto.addr).await;
        let config = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(AwsCredentials::new("test", "test", None, None, "test"))
            .endpoint_url(format!("http://{}", moto.addr))
            .build();
        let rds = aws_sdk_rds::Config::builder()
            .behavior_version(aws_sdk_rds::config::BehaviorVersion::latest())
            .region(aws_sdk_rds::config::Region::new("us-east-1"))
            .credentials_provider(AwsCredentials::new("test", "test", None, None, "test"))
            .endpoint_url(format!("http://{}", moto.addr))
            .build();
        Self {
            sm: SmClient::from_conf(config),
            rds: aws_sdk_rds::Client::from_conf(rds),
            moto,
            proxy,
        }
    }

    /// Creates a secret whose `SecretString` is `value` and returns its ARN.
    pub async fn create_secret(&self, name: &str, value: &Value) -> String {
        self.create_secret_string(name, &value.to_string()).await
    }

    pub async fn create_secret_string(&self, name: &str, text: &str) -> String {
        let out = self
            .sm
            .create_secret()
            .name(name)
            .secret_string(text)
            .send()
            .await
            .expect("create_secret in moto");
        out.arn.expect("moto returns an ARN")
    }

    /// Stores a new AWSCURRENT version of `name` (a rotation as moto can simulate it) and returns
    /// the new version id.
    pub async fn rotate(&self, name: &str, value: &Value) -> String {
        let out = self
            .sm
            .put_secret_value()
            .secret_id(name)
            .secret_string(value.to_string())
            .send()
            .await
            .expect("put_secret_value in moto");
        out.version_id.expect("moto returns a version id")
    }
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
        let command = broker_command(&config_path, &log_path);
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

/// A JSON body as a `Value`, asserting the content type on the way.
pub async fn json_body(response: reqwest::Response) -> Value {
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/json"));
    response.json().await.unwrap()
}

/// Reads one sample from Prometheus text, e.g. `metric(text, "x_total", &[("db","a")])`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric_name, label_text) = series.split_once('{').unwrap_or((series, "}"));
            if metric_name != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse().unwrap())
        })
}

/// Sends `request` as raw bytes on a new connection to `addr` and returns everything the server
/// wrote until it closed the connection or `limit` passed (write errors are ignored: a server may
/// answer and close before it has read everything).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return Vec::new();
    };
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await;
    answer
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
