//! Credential files (`[[sinks]]`) read by their real consumers: psql, PgBouncer, a POSIX shell
//! and the MariaDB option-file reader, across rotations and with hostile passwords; what a
//! reader sees while a file is rewritten; what happens when a file cannot be written, a command
//! hangs or the source is down; configuration errors.

mod failures;
mod pgbouncer;
mod readers;
mod rotation;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use crate::detection::{schedule, watching_broker};
use crate::helpers::*;
use crate::pg::Postgres;

/// Whether psql logs in to `pg` as `app` with no password of its own: `conninfo` added to the
/// connection string, `env` (the password or service file) set.
fn psql_logs_in(pg: &Postgres, conninfo: &str, env: &[(&str, &Path)]) -> Result<(), String> {
    let output = Command::new("psql")
        .args([
            "-X",
            "-w",
            "-tAc",
            "SELECT current_user",
            &format!(
                "host=127.0.0.1 port={} user=app dbname=postgres connect_timeout=5 {conninfo}",
                pg.port
            ),
        ])
        .env_remove("PGPASSWORD")
        .envs(env.iter().copied())
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
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a counter is a whole number from 0, far below 2^53"
)]
fn sink_count(metrics: &str, family: &str, sink: &str, result: &str) -> u64 {
    metric(metrics, family, &[("sink", sink), ("result", result)]).map_or(0, |v| v as u64)
}

/// Waits until `check` holds, polling every 20 ms; the time it took.
async fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    eventually(limit, what, || std::future::ready(check())).await
}

/// [`wait_until`] for a check that awaits (an HTTP call to the broker).
async fn eventually<F: Future<Output = bool>>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> Duration {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// A broker watching `orders` every second inside an open rotation window (it opened 30 s ago
/// and lasts 2 h), so that it sees a promotion within the second.
fn rotating_broker(upstream: &Upstream) -> BrokerOptions {
    upstream
        .proxy
        .set_fault(schedule(SystemTime::now() - Duration::from_secs(30), "2h"));
    watching_broker(upstream, "orders", "orders", "1s")
}

/// The `[rotation]` table of a file-source broker that fetches at once on every refresh.
const REFRESH_AT_ONCE: &str =
    "[rotation]\ndescribe_interval = \"1h\"\nrefresh_min_interval = \"0s\"\n";
