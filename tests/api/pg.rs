//! A throwaway PostgreSQL server for one test: `initdb` with scram-sha-256 password auth on a
//! random loopback port, run as the `postgres` user when the tests run as root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

/// Password of the cluster's superuser, `postgres`.
const SUPERUSER_PASSWORD: &str = "superuser-test-password";

pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

fn server_binaries() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.filter_map(Result::ok)
                .map(|d| d.path().join("bin"))
                .filter(|bin| bin.join("initdb").is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().expect(
        "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: run `bash .ci/setup` \
         (installs Debian's postgresql package)",
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a server binary, as `postgres` when we are root (initdb refuses to run as root).
fn run(bin: &Path, program: &str, args: &[&str]) -> Result<(), String> {
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    };
    let output = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

impl Postgres {
    pub async fn start() -> Self {
        let bin = server_binaries();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown to postgres failed");
        }
        let (data_s, pw_s, sock_s) = (
            data.to_str().unwrap(),
            pwfile.to_str().unwrap(),
            dir.path().to_str().unwrap(),
        );
        run(
            &bin,
            "initdb",
            &[
                "-D",
                data_s,
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "--pwfile",
                pw_s,
                "--no-sync",
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let options =
                format!("-p {port} -k {sock_s} -c listen_addresses=127.0.0.1 -c fsync=off");
            let log = format!("{sock_s}/server.log");
            let started = run(
                &bin,
                "pg_ctl",
                &["-D", data_s, "-o", &options, "-l", &log, "-w", "start"],
            );
            if started.is_ok() {
                let pg = Self {
                    port,
                    bin,
                    data,
                    _dir: dir,
                };
                pg.wait_ready().await;
                return pg;
            }
            last_error = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("PostgreSQL did not start: {last_error}");
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.connect("postgres", SUPERUSER_PASSWORD).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL not accepting connections"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A new connection as `user` with `password` to the `postgres` database.
    pub async fn connect(
        &self,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        self.connect_with(
            tokio_postgres::Config::new()
                .host("127.0.0.1")
                .port(self.port)
                .user(user)
                .password(password)
                .dbname("postgres")
                .connect_timeout(Duration::from_secs(5)),
        )
        .await
    }

    /// Connects with a prepared configuration and checks the session with `SELECT 1`.
    pub async fn connect_with(
        &self,
        config: &tokio_postgres::Config,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(connection);
        client.simple_query("SELECT 1").await?;
        Ok(client)
    }

    /// A connection as the superuser.
    pub async fn admin(&self) -> tokio_postgres::Client {
        self.connect("postgres", SUPERUSER_PASSWORD).await.unwrap()
    }

    /// Creates or changes a login role's password, as RDS does at rotation.
    pub async fn set_password(&self, role: &str, password: &str) {
        let admin = self.admin().await;
        let literal = password.replace('\'', "''");
        let exists = admin
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .await
            .unwrap()
            .is_some();
        let verb = if exists { "ALTER" } else { "CREATE" };
        admin
            .batch_execute(&format!(
                "{verb} ROLE \"{role}\" LOGIN PASSWORD '{literal}'"
            ))
            .await
            .unwrap();
    }
}

/// Whether `error` is PostgreSQL's "password authentication failed" (SQLSTATE 28P01).
pub fn is_wrong_password(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&SqlState::INVALID_PASSWORD)
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = command
            .args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
