//! PgBouncer 1.18+ with a `pgbouncer` sink as its `auth_file`: SCRAM logins of new clients
//! across an RDS-style rotation.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use super::{rotating_broker, sink_count, sink_toml};
use crate::helpers::*;
use crate::pg::Postgres;
use crate::watch::{rotate, seed_orders};

/// PgBouncer 1.18+ as user postgres on a free port: its clients log in with SCRAM against the
/// passwords of `auth_file`, and it logs in to `pg` with the same passwords.
pub(super) struct PgBouncer {
    child: std::process::Child,
    pub(super) port: u16,
    /// PgBouncer's own pid (`child` is runuser's, which does not pass SIGHUP on), and the file
    /// it writes it to.
    pub(super) pid: u32,
    pub(super) pidfile: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl PgBouncer {
    /// Starts PgBouncer; `dir` (its log, pid file and configuration) is given to user postgres.
    pub(super) fn start(pg: &Postgres, dir: &Path, auth_file: &Path) -> Self {
        assert!(
            Command::new("pgbouncer").arg("--version").output().is_ok(),
            "pgbouncer not found: run `bash .ci/setup` (installs Debian's pgbouncer)"
        );
        std::os::unix::fs::chown(dir, Some(postgres_uid()), None).unwrap();
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
                 auth_type = scram-sha-256\nauth_file = {auth}\npool_mode = session\n\
                 server_lifetime = 1\nserver_idle_timeout = 1\nserver_login_retry = 0.2\n\
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
        Self {
            child,
            port,
            pid,
            pidfile: dir.join("pgbouncer.pid"),
            log: dir.join("pgbouncer.log"),
        }
    }

    /// A client login as `app` with `password` through PgBouncer, checked with `SELECT 1`.
    pub(super) async fn login(&self, pg: &Postgres, password: &str) -> Result<(), String> {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user("app")
            .password(password)
            .dbname("orders")
            .connect_timeout(Duration::from_secs(5));
        pg.connect_with(&config)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// PgBouncer's log so far.
    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The uid of Debian's `postgres` user, which PgBouncer runs as (the owner its `auth_file`
/// needs).
pub(super) fn postgres_uid() -> u32 {
    let output = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("no user postgres: run `bash .ci/setup` (installs Debian's postgresql)")
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // runuser does not pass a kill on: PgBouncer itself is ended by its own pid, or it
        // outlives the test (two were left running after every run of the suite).
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_takes_the_rotated_password_from_its_auth_file_sink_within_2_s() {
    let (upstream, pg) = (Upstream::start().await, Postgres::start().await);
    seed_orders(&upstream, &pg, "bouncer-old").await;
    let dir = tempfile::tempdir().unwrap();
    let auth_file = dir.path().join("userlist.txt");
    let bouncer = PgBouncer::start(&pg, dir.path(), &auth_file);
    let mut options = rotating_broker(&upstream);
    options.extra_toml.push_str(&sink_toml(
        "orders",
        "pgbouncer",
        &auth_file,
        // The signal the broker sends itself, as in an image with no `kill`.
        &format!(
            "owner = {}\non_change_signal = \"SIGHUP\"\non_change_pidfile = {:?}",
            postgres_uid(),
            bouncer.pidfile.display().to_string()
        ),
    ));
    let mut broker = options.spawn().await;
    broker
        .wait_for_log("credential file written", Duration::from_secs(10))
        .await;
    // An application: for each new connection, the credentials from the broker, then a login
    // through PgBouncer.
    let login = || async {
        let body = json_body(broker.get("orders").await).await;
        let result = bouncer.login(&pg, body["password"].as_str().unwrap()).await;
        (
            SystemTime::now(),
            body["version_id"].as_str().unwrap().to_owned(),
            result,
        )
    };
    let start = Instant::now();
    while let (_, _, Err(e)) = login().await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "PgBouncer takes the first password: {e}; its log: {}",
            bouncer.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 20 logins a second, each a new client connection, across the rotation.
    let mut attempts = Vec::new();
    let rotation = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        rotate(&upstream, &pg, "orders", "bouncer-new").await
    };
    let load = async {
        for _ in 0..200 {
            attempts.push(login().await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let ((_, version), ()) = tokio::join!(rotation, load);
    let seen: SystemTime = broker
        .log_events()
        .into_iter()
        .find(|e| {
            e["message"] == "credentials version changed" && e["version_id"] == version.as_str()
        })
        .expect("the broker logged the new version")["timestamp"]
        .as_str()
        .unwrap()
        .parse::<humantime::Timestamp>()
        .unwrap()
        .into();
    let accepted = attempts
        .iter()
        .find(|(_, v, result)| *v == version && result.is_ok())
        .expect("a login with the new password succeeds")
        .0;
    let failed: Vec<_> = attempts
        .iter()
        .filter(|(_, _, result)| result.is_err())
        .collect();
    let since_seen = |at: SystemTime| {
        at.duration_since(seen)
            .map_or_else(|e| -e.duration().as_secs_f64(), |d| d.as_secs_f64())
    };
    println!(
        "PgBouncer across a rotation: {} logins, {} failed; the new password accepted {:.3} s after the broker saw it; failures (s from then, version): {:?}",
        attempts.len(),
        failed.len(),
        since_seen(accepted),
        failed
            .iter()
            .map(|(at, v, e)| (since_seen(*at), v == &version, e.as_ref().unwrap_err()))
            .collect::<Vec<_>>()
    );
    assert!(
        accepted.duration_since(seen).unwrap_or_default() < Duration::from_secs(2),
        "PgBouncer accepts the new password within 2 s of the broker seeing it; its log: {}",
        bouncer.log()
    );
    assert!(
        failed.iter().all(|(at, _, _)| *at < accepted),
        "once the new password is accepted every login succeeds: {failed:?}"
    );
    assert!(
        failed.len() <= 3,
        "at most the logins racing the change fail: {failed:?}"
    );
    let metrics = broker.metrics().await;
    let sink = auth_file.display().to_string();
    assert!(
        sink_count(
            &metrics,
            "credential_broker_sink_commands_total",
            &sink,
            "ok"
        ) >= 2,
        "the reload ran for both versions: {metrics}"
    );
    let meta = std::fs::metadata(&auth_file).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o7777),
        (postgres_uid(), 0o600),
        "owner and mode hold after rewrites"
    );
    broker.assert_log_has_no_password();
}
