//! The client examples in `examples/` (Python, Node, Java, shell) run as child processes against
//! the real broker, moto and a real PostgreSQL: they connect, and after a rotation they refresh
//! once, reconnect, and never print a password. Interpreters come from `.ci/test`'s environment.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{BrokerOptions, Fault, TOKEN, TestBroker, Upstream, json_body, metric};
use crate::helpers::{new_password, passwords};
use crate::pg::{Postgres, is_wrong_password};

/// The PostgreSQL role whose password the examples' secret holds.
const ROLE: &str = "example_app";
/// The secret in moto and the database name in the broker.
const SECRET: &str = "example-app-db";
const DB: &str = "app";
/// No example run may take longer (the slowest, Java, takes about 1.5 s).
const RUN_LIMIT: Duration = Duration::from_mins(1);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path from an environment variable set by `.ci/test`; fails (never skips) when missing.
fn required_path(var: &str, what: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(
        || panic!("{var} is not set: run `bash .ci/setup` and set {var} to {what}, as `bash .ci/test` does"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{var}={} does not exist: run `bash .ci/setup` (installs {what})",
        path.display()
    );
    path
}

/// How to start one example: a program and its arguments.
#[derive(Debug)]
pub(crate) struct Example {
    pub(crate) name: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
    /// Whether to hand the token over as `BROKER_TOKEN_FILE` (else `BROKER_TOKEN`).
    token_file: bool,
}

impl Example {
    fn python() -> Self {
        Self::python_script("python", "broker_client.py")
    }

    /// `examples/python/<script>` with the examples' venv.
    pub(crate) fn python_script(name: &'static str, script: &str) -> Self {
        let python = required_path(
            "EXAMPLES_PYTHON",
            "the Python of the venv .venv/examples with psycopg and psycopg-pool",
        );
        Self {
            name,
            program: python,
            args: vec![repo_root().join("examples/python").join(script).into()],
            token_file: true,
        }
    }

    fn node() -> Self {
        Self::node_script("node", "broker_client.js")
    }

    /// `examples/node/<script>` with its `node_modules`.
    pub(crate) fn node_script(name: &'static str, script: &str) -> Self {
        let dir = required_path(
            "EXAMPLES_NODE_DIR",
            "examples/node with its node_modules (npm ci)",
        );
        assert!(
            dir.join("node_modules/pg/package.json").is_file(),
            "{} has no node_modules/pg: run `bash .ci/setup` (npm ci in examples/node)",
            dir.display()
        );
        Self {
            name,
            program: "node".into(),
            args: vec![dir.join(script).into()],
            token_file: false,
        }
    }

    fn java() -> Self {
        Self::java_class("java", "BrokerClient")
    }

    /// A class of `examples/java`, all of which are compiled once per test process against
    /// Debian's JDBC driver and `HikariCP` (with slf4j).
    pub(crate) fn java_class(name: &'static str, class: &str) -> Self {
        static CLASSES: OnceLock<PathBuf> = OnceLock::new();
        let mut libraries = OsString::from(required_path(
            "EXAMPLES_JDBC_JAR",
            "the PostgreSQL JDBC driver (Debian's libpostgresql-jdbc-java)",
        ));
        let hikari = std::env::var_os("EXAMPLES_HIKARI_CLASSPATH").unwrap_or_else(|| {
            panic!(
                "EXAMPLES_HIKARI_CLASSPATH is not set: run `bash .ci/setup` and set it to \
                 HikariCP.jar, slf4j-api.jar and slf4j-simple.jar, as `bash .ci/test` does"
            )
        });
        for jar in std::env::split_paths(&hikari) {
            assert!(
                jar.is_file(),
                "{} does not exist: run `bash .ci/setup` (installs libhikaricp-java)",
                jar.display()
            );
        }
        libraries.push(":");
        libraries.push(&hikari);
        let classes = CLASSES.get_or_init(|| {
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("examples-java");
            let _ = std::fs::remove_dir_all(&out);
            let output = Command::new("javac")
                .args(["-Xlint:all", "-Werror", "-cp"])
                .arg(&libraries)
                .arg("-d")
                .arg(&out)
                .arg(repo_root().join("examples/java/BrokerClient.java"))
                .arg(repo_root().join("examples/java/PoolWatch.java"))
                .output()
                .unwrap_or_else(|e| panic!("cannot run javac ({e}): run `bash .ci/setup`"));
            assert!(
                output.status.success(),
                "javac failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            out
        });
        let mut classpath = OsString::from(classes);
        classpath.push(":");
        classpath.push(&libraries);
        Self {
            name,
            program: "java".into(),
            args: vec!["-cp".into(), classpath, class.into()],
            token_file: true,
        }
    }

    /// `examples/go/main.go`, built once per test process with Debian's Go and pgx v4 in GOPATH
    /// mode (no module download).
    fn go() -> Self {
        static BINARY: OnceLock<PathBuf> = OnceLock::new();
        let binary = BINARY.get_or_init(|| {
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("examples-go");
            std::fs::create_dir_all(&out).unwrap();
            let binary = out.join("broker_client");
            let output = Command::new("go")
                .args(["build", "-o"])
                .arg(&binary)
                .arg(repo_root().join("examples/go/main.go"))
                .env("GO111MODULE", "off")
                .env("GOPATH", "/usr/share/gocode")
                .env("GOCACHE", out.join("cache"))
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run go ({e}): run `bash .ci/setup` (installs golang-go)")
                });
            assert!(
                output.status.success(),
                "go build failed (pgx v4 from golang-github-jackc-pgx-v4-dev: run `bash .ci/setup`): {}",
                String::from_utf8_lossy(&output.stderr)
            );
            binary
        });
        Self {
            name: "go",
            program: binary.clone(),
            args: Vec::new(),
            token_file: true,
        }
    }

    /// Starts the example against `stage`'s broker for database `db`.
    fn start(&self, stage: &Stage, db: &str) -> Running {
        self.spawn(&stage.broker, &stage.token_file, db, &[])
    }

    /// Starts the example against `broker` (whose token is in `token_file`) for database `db`,
    /// with more environment variables.
    pub(crate) fn spawn(
        &self,
        broker: &TestBroker,
        token_file: &Path,
        db: &str,
        env: &[(&str, &str)],
    ) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", std::env::var_os("HOME").unwrap_or_default())
            .env("BROKER_URL", broker.url(""))
            .env("BROKER_DB", db)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        if self.token_file {
            command.env("BROKER_TOKEN_FILE", token_file);
        } else {
            command.env("BROKER_TOKEN", TOKEN);
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start the {} example ({}): {e}; run `bash .ci/setup`",
                self.name,
                self.program.display()
            )
        });
        Running {
            name: self.name,
            child,
            started: Instant::now(),
            stderr_path: err,
            stdout_path: out,
            _dir: dir,
        }
    }

    async fn run(&self, stage: &Stage, db: &str) -> Outcome {
        self.start(stage, db).finish().await
    }
}

/// An example process in flight, killed if the test fails before it ends.
pub(crate) struct Running {
    name: &'static str,
    child: Child,
    started: Instant,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub(crate) fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Waits until a line of the example's stdout contains `text`; returns the line.
    pub(crate) async fn wait_for_stdout(&mut self, text: &str) -> String {
        self.wait_for(text, |running| {
            let stdout = running.stdout();
            stdout.lines().find(|l| l.contains(text)).map(str::to_owned)
        })
        .await
    }

    /// Waits until the example's stderr contains `text`.
    async fn wait_for_stderr(&mut self, text: &str) {
        self.wait_for(text, |running| {
            running.stderr().contains(text).then_some(())
        })
        .await;
    }

    /// Polls `found` until it finds what the example printed (`text`, for the failure message);
    /// fails if the example exits first or takes longer than [`RUN_LIMIT`].
    async fn wait_for<T>(&mut self, text: &str, found: impl Fn(&Self) -> Option<T>) -> T {
        loop {
            if let Some(value) = found(self) {
                return value;
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "the {} example exited before printing {text:?}: {}",
                self.name,
                self.stderr()
            );
            assert!(
                self.started.elapsed() < RUN_LIMIT,
                "the {} example never printed {text:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) async fn finish(mut self) -> Outcome {
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                self.started.elapsed() < RUN_LIMIT,
                "the {} example did not finish within {RUN_LIMIT:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let outcome = Outcome {
            name: self.name,
            status,
            took: self.started.elapsed(),
            stdout: std::fs::read_to_string(&self.stdout_path).unwrap(),
            stderr: self.stderr(),
        };
        outcome.assert_no_password();
        outcome
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What an example run printed and how it ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) name: &'static str,
    pub(crate) status: ExitStatus,
    pub(crate) took: Duration,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Outcome {
    pub(crate) fn assert_success(&self) {
        assert!(
            self.status.success(),
            "the {} example failed ({}): {}",
            self.name,
            self.status,
            self.stderr
        );
    }

    /// The one JSON line a successful run prints.
    fn json(&self) -> Value {
        self.assert_success();
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stdout: {:?}", self.stdout);
        serde_json::from_str(lines[0]).expect("the output line is JSON")
    }

    /// Asserts the run failed and its stderr names `text`.
    fn assert_failed_with(&self, text: &str) {
        assert_eq!(
            self.status.code(),
            Some(1),
            "the {} example should exit 1; stderr: {}",
            self.name,
            self.stderr
        );
        assert!(self.stdout.is_empty(), "no result line: {:?}", self.stdout);
        assert!(
            self.stderr.contains(text),
            "the {} example's stderr should contain {text:?}: {}",
            self.name,
            self.stderr
        );
    }

    pub(crate) fn assert_no_password(&self) {
        for password in passwords() {
            assert!(
                !self.stdout.contains(&password) && !self.stderr.contains(&password),
                "a password appeared in the output of the {} example",
                self.name
            );
        }
    }
}

/// moto, PostgreSQL with the role, and a broker serving database `app` from the role's secret.
struct Stage {
    upstream: Upstream,
    pg: Postgres,
    broker: TestBroker,
    token_file: PathBuf,
    password: String,
    _dir: tempfile::TempDir,
}

impl Stage {
    async fn start(ttl: &'static str, max_stale: &'static str) -> Self {
        let (upstream, pg) = (Upstream::start().await, Postgres::start().await);
        let password = new_password("example-initial");
        pg.set_password(ROLE, &password).await;
        upstream
            .create_secret(SECRET, &json!({"username": ROLE, "password": password}))
            .await;
        let connection = format!(
            "host = \"127.0.0.1\"\nport = {}\ndbname = \"postgres\"\nengine = \"postgres\"",
            pg.port
        );
        let broker = BrokerOptions {
            ttl,
            max_stale,
            // A rotation comes long after the last fetch in real life; keep tests short.
            extra_toml: "[rotation]\nrefresh_min_interval = \"100ms\"\n".into(),
            ..BrokerOptions::new(upstream.proxy.endpoint()).database(DB, SECRET, &connection)
        }
        .spawn()
        .await;
        broker.wait_ready(Duration::from_secs(10)).await;
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        Self {
            upstream,
            pg,
            broker,
            token_file,
            password,
            _dir: dir,
        }
    }

    async fn current_version(&self) -> String {
        let body = json_body(self.broker.get(DB).await).await;
        body["version_id"].as_str().unwrap().to_owned()
    }

    fn upstream_gets(&self) -> usize {
        self.upstream.proxy.count("GetSecretValue")
    }
}

/// First run, rotation, run with refresh, run with the new version, then a rejected refresh.
async fn example_survives_a_rotation(example: Example) {
    let stage = Stage::start("5m", "1h").await;
    let first_version = stage.current_version().await;

    let before = stage.upstream_gets();
    let plain = example.run(&stage, DB).await;
    assert_eq!(
        plain.json(),
        json!({"user": ROLE, "refreshed": false, "version_id": first_version})
    );
    assert_eq!(
        stage.upstream_gets(),
        before,
        "the credentials come from the cache"
    );
    assert!(!plain.stderr.contains("login rejected"), "{}", plain.stderr);

    // Rotation as RDS does it: a new AWSCURRENT version, then the role's password changes.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let rotated = new_password("example-rotated");
    let new_version = stage
        .upstream
        .rotate(SECRET, &json!({"username": ROLE, "password": rotated}))
        .await;
    stage.pg.set_password(ROLE, &rotated).await;
    let rotated_at = Instant::now();
    let error = stage
        .pg
        .connect(ROLE, &stage.password)
        .await
        .expect_err("the old password no longer works");
    assert!(is_wrong_password(&error), "expected 28P01, got {error}");
    assert_eq!(
        stage.current_version().await,
        first_version,
        "the broker still serves the cached old version"
    );

    let before = stage.upstream_gets();
    let refreshed = example.run(&stage, DB).await;
    let rotation_to_reconnect = rotated_at.elapsed();
    assert_eq!(
        refreshed.json(),
        json!({"user": ROLE, "refreshed": true, "version_id": new_version})
    );
    assert!(
        refreshed
            .stderr
            .contains(&format!("login rejected with version {first_version}")),
        "the first login failed with the old version: {}",
        refreshed.stderr
    );
    assert_eq!(
        stage.upstream_gets() - before,
        1,
        "one upstream call, made by the refresh"
    );
    eprintln!(
        "FIGURE examples {} run_ms={} refreshed_run_ms={} rotation_to_reconnect_ms={}",
        example.name,
        plain.took.as_millis(),
        refreshed.took.as_millis(),
        rotation_to_reconnect.as_millis()
    );

    let after = example.run(&stage, DB).await;
    assert_eq!(
        after.json(),
        json!({"user": ROLE, "refreshed": false, "version_id": new_version}),
        "the broker now serves the new version"
    );

    // The role's password changes but the secret does not: one refresh, then a fatal error.
    tokio::time::sleep(Duration::from_millis(150)).await;
    stage
        .pg
        .set_password(ROLE, &new_password("example-unknown"))
        .await;
    let rejected = example.run(&stage, DB).await;
    rejected.assert_failed_with("login rejected");
    assert_eq!(
        rejected.stderr.matches("login rejected").count(),
        1,
        "refreshes once, not in a loop: {}",
        rejected.stderr
    );

    let metrics = stage.broker.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "credential_broker_credential_rotations_total",
            &[("db", DB)]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_example_refreshes_once_and_reconnects_after_a_rotation() {
    example_survives_a_rotation(Example::python()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_example_refreshes_once_and_reconnects_after_a_rotation() {
    example_survives_a_rotation(Example::node()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_example_refreshes_once_and_reconnects_after_a_rotation() {
    example_survives_a_rotation(Example::java()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_example_refreshes_once_and_reconnects_after_a_rotation() {
    example_survives_a_rotation(Example::go()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_wait_out_a_503_and_report_other_errors_by_code() {
    // 1 s TTL and 1 s of stale answers: an outage turns into 503 credentials_expired quickly.
    let stage = Stage::start("1s", "1s").await;
    for example in [
        Example::python(),
        Example::node(),
        Example::java(),
        Example::go(),
    ] {
        let unknown = example.run(&stage, "no-such-db").await;
        unknown.assert_failed_with("404 unknown_database");

        stage.upstream.proxy.set_fault(Fault::Status(503));
        let deadline = Instant::now() + Duration::from_secs(10);
        while stage.broker.get(DB).await.status() != 503 {
            assert!(Instant::now() < deadline, "the credentials never expired");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut running = example.start(&stage, DB);
        running
            .wait_for_stderr("503 credentials_expired, retrying in 1")
            .await;
        stage.upstream.proxy.set_fault(Fault::None);
        let recovered = running.finish().await;
        assert_eq!(recovered.json()["user"], ROLE, "{}", example.name);
        eprintln!(
            "FIGURE examples {} outage_run_ms={}",
            example.name,
            recovered.took.as_millis()
        );
    }
}

/// Runs `sh` with `args` and the broker's address, token file and `db` in the environment.
fn sh(stage: &Stage, db: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let output = Command::new("sh")
        .args(args)
        .env("BROKER_URL", stage.broker.url(""))
        .env("BROKER_DB", db)
        .env("BROKER_TOKEN_FILE", &stage.token_file)
        .stdin(Stdio::null())
        .output()
        .expect("running sh");
    (
        output.status,
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_example_reads_versions_and_formats_and_refreshes_with_if_match() {
    let stage = Stage::start("5m", "1h").await;
    let first_version = stage.current_version().await;
    let curl_sh = repo_root().join("examples/curl.sh");
    let curl_sh = curl_sh.to_str().unwrap();

    let (status, out, _) = sh(&stage, DB, &[curl_sh, "version"]);
    assert!(status.success());
    assert_eq!(out.trim(), first_version);
    let (status, out, _) = sh(&stage, DB, &[curl_sh, "get", "uri"]);
    assert!(status.success());
    assert!(out.starts_with(&format!("postgresql://{ROLE}:")), "{out}");
    // `env` evaluates in a POSIX shell to the PG* variables and the version of the same answer.
    let script = format!(
        "eval \"$(sh '{curl_sh}' env)\" && printf '%s\\n' \"$PGUSER\" \"$BROKER_VERSION_ID\" \"$PGPASSWORD\""
    );
    let (status, out, err) = sh(&stage, DB, &["-c", &script]);
    assert!(status.success(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [ROLE, first_version.as_str(), stage.password.as_str()]
    );

    tokio::time::sleep(Duration::from_millis(150)).await;
    let new_version = stage
        .upstream
        .rotate(
            SECRET,
            &json!({"username": ROLE, "password": new_password("curl-rotated")}),
        )
        .await;
    let before = stage.upstream_gets();
    let (status, out, _) = sh(&stage, DB, &[curl_sh, "refresh", &first_version]);
    assert!(status.success());
    assert_eq!(
        out.trim(),
        new_version,
        "the refresh returns the new version"
    );
    assert_eq!(stage.upstream_gets() - before, 1);

    let (status, out, err) = sh(&stage, "no-such-db", &[curl_sh, "version"]);
    assert_eq!(status.code(), Some(1));
    assert!(out.is_empty());
    assert!(
        err.contains("broker answered 404 unknown_database"),
        "{err}"
    );
}
