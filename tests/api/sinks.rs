//! Credential files (`[[sinks]]`) read by their real consumers: psql through a password file and
//! PgBouncer through its `auth_file` across a rotation, the command run after each change, what
//! happens when a file cannot be written or a command hangs, and configuration errors.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::detection::{schedule, watching_broker};
use crate::helpers::*;
use crate::pg::Postgres;
use crate::watch::{rotate, seed_orders};

/// Whether psql, given only `pgpass` as its password file, logs in to `pg` as `app`.
fn psql_logs_in(pg: &Postgres, pgpass: &Path) -> Result<(), String> {
    let output = Command::new("psql")
        .args([
            "-X",
            "-w",
            "-tAc",
            "SELECT current_user",
            &format!(
                "host=127.0.0.1 port={} user=app dbname=postgres connect_timeout=5",
                pg.port
            ),
        ])
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", pgpass)
        .output()
        .expect("psql not found: run `bash .ci/setup` (installs Debian's postgresql-client)");
    if output.status.success() && String::from_utf8_lossy(&output.stdout).trim() == "app" {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// A sink table, as TOML text.
fn sink_toml(db: &str, format: &str, path: &Path, extra: &str) -> String {
    format!(
        "[[sinks]]\ndatabase = {db:?}\nformat = {format:?}\npath = {path:?}\n{extra}\n",
        path = path.display().to_string()
    )
}

/// A sink counter's value for `sink` and `result` (0 before the first count).
fn sink_count(metrics: &str, family: &str, sink: &str, result: &str) -> f64 {
    metric(metrics, family, &[("sink", sink), ("result", result)]).unwrap_or(0.0)
}

/// Waits until `check` holds, polling every 20 ms; the time it took.
async fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_logs_in_with_a_pgpass_sink_before_and_after_a_rotation() {
    let (upstream, pg) = (Upstream::start().await, Postgres::start().await);
    let old = seed_orders(&upstream, &pg, "sink-old").await;
    let dir = tempfile::tempdir().unwrap();
    let pgpass = dir.path().join("pgpass");
    let hook_env = dir.path().join("hook.env");
    let hook = dir.path().join("hook.sh");
    std::fs::write(&hook, format!("#!/bin/sh\nenv > {}\n", hook_env.display())).unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A rotation window open: the broker checks the secret's version every second.
    upstream
        .proxy
        .set_fault(schedule(SystemTime::now() - Duration::from_secs(30), "2h"));
    let mut options = watching_broker(&upstream, "orders", "orders", "1s");
    options.extra_toml.push_str(&sink_toml(
        "orders",
        "pgpass",
        &pgpass,
        &format!("on_change = [{:?}, \"reload\"]", hook.display().to_string()),
    ));
    let mut broker = options.spawn().await;
    broker
        .wait_for_log("credential file written", Duration::from_secs(10))
        .await;
    psql_logs_in(&pg, &pgpass).expect("psql logs in with the first file");
    let mode = std::fs::metadata(&pgpass).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "the file has the default mode");
    let ready = json_body(broker.admin_get("/readyz").await).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["sinks_not_ready"], json!([]), "{ready}");

    let started = Instant::now();
    let (new, version) = rotate(&upstream, &pg, "orders", "sink-new").await;
    assert!(
        psql_logs_in(&pg, &pgpass).is_err(),
        "the old password no longer logs in"
    );
    let mut attempts = 0;
    let took = wait_until(
        Duration::from_secs(15),
        "psql logs in after the rotation",
        || {
            attempts += 1;
            psql_logs_in(&pg, &pgpass).is_ok()
        },
    )
    .await;
    println!(
        "psql logged in with the rotated file {:?} after the promotion ({attempts} tries, {:?} since the rotation began)",
        took,
        started.elapsed()
    );
    let content = std::fs::read_to_string(&pgpass).unwrap();
    // pgpass escapes some of the passwords' characters; their cores are plain.
    let core = |password: &str| password.split('!').next().unwrap().to_owned();
    assert!(
        content.contains(&core(&new)) && !content.contains(&core(&old)),
        "the file holds the new password only: {content}"
    );
    wait_until(
        Duration::from_secs(10),
        "the hook ran for the new version",
        || std::fs::read_to_string(&hook_env).is_ok_and(|env| env.contains(&version)),
    )
    .await;
    let env = std::fs::read_to_string(&hook_env).unwrap();
    assert!(
        env.contains(&format!("CREDENTIAL_BROKER_FILE={}", pgpass.display())),
        "{env}"
    );
    assert!(env.contains("CREDENTIAL_BROKER_DATABASE=orders"), "{env}");
    for leaked in [&old, &new] {
        assert!(
            !env.contains(leaked.as_str()),
            "a password reached the command's environment"
        );
    }
    assert!(
        !env.contains("AWS_"),
        "the broker's AWS settings reached the command: {env}"
    );
    let metrics = broker.metrics().await;
    let sink = pgpass.display().to_string();
    assert!(
        sink_count(&metrics, "credential_broker_sink_writes_total", &sink, "ok") >= 2.0,
        "{metrics}"
    );
    assert!(
        sink_count(
            &metrics,
            "credential_broker_sink_commands_total",
            &sink,
            "ok"
        ) >= 2.0,
        "{metrics}"
    );
    assert!(!metrics.contains(new.as_str()) && !metrics.contains(old.as_str()));
    broker.assert_log_has_no_password();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_cannot_be_written_is_reported_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    let path = files.join("orders.json");
    let secrets = |password: &str| json!({"orders": {"username": "app", "password": password}});
    let mut broker = FileBroker::spawn(
        &secrets(&new_password("unwritable-old")),
        "",
        "",
        &format!(
            "[rotation]\ndescribe_interval = \"1h\"\nwatch_interval = \"1s\"\n{}",
            sink_toml("orders", "json", &path, "create_dirs = true")
        ),
        "[databases.orders]\nsecret_id = \"orders\"\n",
    )
    .await;
    broker
        .wait_for_log("credential file written", Duration::from_secs(10))
        .await;
    // The directory goes away: the next version cannot be written.
    std::fs::remove_dir_all(&files).unwrap();
    let new = new_password("unwritable-new");
    std::fs::write(&broker.secrets, secrets(&new).to_string()).unwrap();
    broker
        .wait_for_log(
            "cannot write the credential file; trying again",
            Duration::from_secs(10),
        )
        .await;
    let ready = broker.admin_get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let body = json_body(ready).await;
    assert_eq!(
        body["sinks_not_ready"],
        json!([path.display().to_string()]),
        "{body}"
    );
    let metrics = broker.metrics().await;
    let sink = path.display().to_string();
    assert!(
        sink_count(
            &metrics,
            "credential_broker_sink_writes_total",
            &sink,
            "error"
        ) >= 1.0,
        "{metrics}"
    );
    // Back: the retry writes the new version and readiness returns.
    std::fs::create_dir(&files).unwrap();
    wait_until(
        Duration::from_secs(15),
        "the retry writes the new version",
        || {
            std::fs::read_to_string(&path).is_ok_and(|c| {
                serde_json::from_str::<serde_json::Value>(&c)
                    .is_ok_and(|v| v["password"] == new.as_str())
            })
        },
    )
    .await;
    let start = Instant::now();
    loop {
        if broker.admin_get("/readyz").await.status() == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "ready again after the write"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker.assert_log_has_no_password();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_command_is_killed_at_its_timeout_and_tried_again_later_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.json");
    // A duration no other process sleeps, to look for leftovers by.
    let sleep = format!("60.{}", std::process::id());
    let broker = FileBroker::spawn(
        &json!({"orders": {"username": "app", "password": new_password("hang")}}),
        "",
        "",
        &sink_toml(
            "orders",
            "json",
            &path,
            &format!("on_change = [\"/bin/sleep\", \"{sleep}\"]\non_change_timeout = \"200ms\""),
        ),
        "[databases.orders]\nsecret_id = \"orders\"\n",
    )
    .await;
    let failed = "the sink's on_change command failed; trying again";
    let failures = || -> Vec<serde_json::Value> {
        broker
            .log_events()
            .into_iter()
            .filter(|e| e["message"] == failed)
            .collect()
    };
    wait_until(
        Duration::from_secs(20),
        "three tries of the command",
        || failures().len() >= 3,
    )
    .await;
    let events = failures();
    let times: Vec<humantime::Timestamp> = events
        .iter()
        .map(|e| {
            assert_eq!(e["outcome"], "killed at on_change_timeout", "{e}");
            e["timestamp"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    let gaps: Vec<Duration> = times
        .windows(2)
        .map(|w| {
            std::time::SystemTime::from(w[1])
                .duration_since(w[0].into())
                .unwrap()
        })
        .collect();
    println!("gaps between the command's tries: {gaps:?}");
    assert!(
        gaps[1] > gaps[0] + Duration::from_millis(500),
        "the delay grows: {gaps:?}"
    );
    let metrics = broker.metrics().await;
    assert!(
        sink_count(
            &metrics,
            "credential_broker_sink_commands_total",
            &path.display().to_string(),
            "timeout"
        ) >= 3.0,
        "{metrics}"
    );
    // The file was written once; the command's failures do not rewrite it.
    assert!(path.is_file());
    let sleeping = Command::new("pgrep")
        .args(["-f", &format!("^/bin/sleep {sleep}$")])
        .output()
        .unwrap();
    assert!(
        sleeping.stdout.is_empty(),
        "killed commands do not linger: {sleeping:?}"
    );
}

#[test]
fn a_bad_sink_exits_64_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent").join("pgpass");
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let base = "[auth]\ndisabled = true\n[databases.orders]\nsecret_id = \"s\"\n";
    let cases = [
        (
            sink_toml("orders", "pgpass", Path::new("pgpass"), ""),
            "sinks[0].path",
        ),
        (
            sink_toml("billing", "pgpass", &dir.path().join("f"), ""),
            "sinks[0].database",
        ),
        (
            sink_toml("orders", "yaml", &dir.path().join("f"), ""),
            "sinks[0].format",
        ),
        (sink_toml("orders", "pgpass", &missing, ""), "sinks[0].path"),
        (
            sink_toml("orders", "pgpass", &open.join("f"), ""),
            "sinks[0].path",
        ),
        (
            sink_toml("orders", "pgpass", &dir.path().join("f"), "mode = \"0999\""),
            "sinks[0].mode",
        ),
        (
            sink_toml(
                "orders",
                "pgpass",
                &dir.path().join("f"),
                "on_change = [\"pgbouncer\"]",
            ),
            "sinks[0].on_change",
        ),
        (
            sink_toml(
                "orders",
                "pgpass",
                &dir.path().join("f"),
                "on_change_timeout = \"1h\"",
            ),
            "sinks[0].on_change_timeout",
        ),
        (
            sink_toml("orders", "pgpass", &dir.path().join("f"), "")
                + &sink_toml("orders", "json", &dir.path().join("f"), ""),
            "sinks[1].path",
        ),
    ];
    for (sinks, key) in cases {
        let config = dir.path().join("broker.toml");
        std::fs::write(&config, format!("{base}{sinks}")).unwrap();
        let output = broker_command(&config, &dir.path().join("out.log"))
            .arg("check-config")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{key}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(key), "{key}: {stderr}");
    }
}

/// PgBouncer 1.18+ as user postgres on a free port, logging in to `pg` with the passwords of
/// `auth_file` (its clients are trusted, so only its server logins use them).
struct PgBouncer {
    child: std::process::Child,
    port: u16,
    /// PgBouncer's own pid (`child` is runuser's, which does not pass SIGHUP on).
    pid: u32,
}

impl PgBouncer {
    fn start(pg: &Postgres, dir: &Path, auth_file: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\norders = host=127.0.0.1 port={pg_port} dbname=postgres\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {auth}\npool_mode = session\n\
                 server_lifetime = 1\nserver_idle_timeout = 1\nserver_login_retry = 1\n\
                 logfile = {log}\npidfile = {pid}\n",
                pg_port = pg.port,
                auth = auth_file.display(),
                log = dir.join("pgbouncer.log").display(),
                pid = dir.join("pgbouncer.pid").display(),
            ),
        )
        .unwrap();
        let child = Command::new("runuser")
            .args(["-u", "postgres", "--", "pgbouncer"])
            .arg(&ini)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("pgbouncer.stderr")).unwrap())
            .spawn()
            .expect("runuser not found");
        let start = Instant::now();
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(dir.join("pgbouncer.pid"))
                .ok()
                .and_then(|text| text.trim().parse().ok())
            {
                break pid;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "PgBouncer did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Self { child, port, pid }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_reloads_its_auth_file_sink_and_keeps_serving_across_a_rotation() {
    assert!(
        Command::new("pgbouncer").arg("--version").output().is_ok(),
        "pgbouncer not found: run `bash .ci/setup` (installs Debian's pgbouncer)"
    );
    let (upstream, pg) = (Upstream::start().await, Postgres::start().await);
    seed_orders(&upstream, &pg, "bouncer-old").await;
    let dir = tempfile::tempdir().unwrap();
    // PgBouncer (user postgres) writes its log here and reads the auth file.
    std::os::unix::fs::chown(dir.path(), Some(101), Some(104)).unwrap();
    let auth_file = dir.path().join("userlist.txt");
    let bouncer = PgBouncer::start(&pg, dir.path(), &auth_file);
    upstream
        .proxy
        .set_fault(schedule(SystemTime::now() - Duration::from_secs(30), "2h"));
    let mut options = watching_broker(&upstream, "orders", "orders", "1s");
    options.extra_toml.push_str(&sink_toml(
        "orders",
        "pgbouncer",
        &auth_file,
        &format!(
            "owner = 101\non_change = [\"/bin/kill\", \"-HUP\", \"{}\"]",
            bouncer.pid
        ),
    ));
    let mut broker = options.spawn().await;
    broker
        .wait_for_log("credential file written", Duration::from_secs(10))
        .await;
    let bouncer_config = || {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(bouncer.port)
            .user("app")
            .dbname("orders")
            .connect_timeout(Duration::from_secs(5));
        config
    };
    // 20 queries a second, each on a new client connection, across the rotation.
    let query = || async {
        pg.connect_with(&bouncer_config())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let start = Instant::now();
    while let Err(e) = query().await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "PgBouncer serves the first password: {e}; its log: {}",
            std::fs::read_to_string(dir.path().join("pgbouncer.log")).unwrap_or_default()
                + &std::fs::read_to_string(dir.path().join("pgbouncer.stderr")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut ok, mut failed) = (0, Vec::new());
    let rotation = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        rotate(&upstream, &pg, "orders", "bouncer-new").await
    };
    let load = async {
        for _ in 0..200 {
            match query().await {
                Ok(()) => ok += 1,
                Err(e) => failed.push(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let ((_, version), ()) = tokio::join!(rotation, load);
    println!(
        "PgBouncer across a rotation: {ok} queries ok, {} failed {failed:?}",
        failed.len()
    );
    let metrics = broker.metrics().await;
    let sink = auth_file.display().to_string();
    assert!(
        sink_count(
            &metrics,
            "credential_broker_sink_commands_total",
            &sink,
            "ok"
        ) >= 2.0,
        "the reload ran for both versions: {metrics}"
    );
    assert!(broker.log_text().contains(&version));
    let meta = std::fs::metadata(&auth_file).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o7777),
        (101, 0o600),
        "owner and mode hold after rewrites"
    );
    // Past the rotation, new server logins need the new password: they must go on working.
    assert!(
        query().await.is_ok(),
        "PgBouncer logs in with the rotated password"
    );
    assert!(
        failed.len() <= 2,
        "at most the logins racing the password change fail: {failed:?}"
    );
    broker.assert_log_has_no_password();
}
