//! What a sink does when things go wrong: a directory made read-only or removed, a command that
//! hangs, the source down, and configurations refused at start.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use super::{eventually, sink_count, sink_toml, wait_until};
use crate::helpers::*;

/// How a test makes a directory unwritable for the broker, and undoes it.
#[derive(Debug, Clone, Copy)]
enum Breakage {
    /// Read-only: mode 0555, and for root (whom modes do not stop) the immutable attribute.
    ReadOnly,
    Removed,
}

impl Breakage {
    fn apply(self, dir: &Path) {
        match self {
            Self::ReadOnly => {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
                if is_root() {
                    chattr(dir, "+i");
                }
            }
            Self::Removed => std::fs::remove_dir_all(dir).unwrap(),
        }
    }

    fn undo(self, dir: &Path) {
        match self {
            Self::ReadOnly => {
                if is_root() {
                    chattr(dir, "-i");
                }
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            Self::Removed => std::fs::create_dir(dir).unwrap(),
        }
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Sets or clears a file attribute with e2fsprogs' `chattr`.
fn chattr(path: &Path, change: &str) {
    let status = Command::new("chattr")
        .arg(change)
        .arg(path)
        .status()
        .expect("chattr not found: install Debian's e2fsprogs");
    assert!(
        status.success(),
        "chattr {change} {} failed: the test needs a file system with file attributes (ext4, xfs, btrfs)",
        path.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_whose_directory_is_made_read_only_or_removed_is_reported_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    let path = files.join("orders.json");
    let secrets = |password: &str| json!({"orders": {"username": "app", "password": password}});
    let mut broker = FileBroker::spawn(
        &secrets(&new_password("unwritable-first")),
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
    let sink = path.display().to_string();
    for breakage in [Breakage::ReadOnly, Breakage::Removed] {
        let errors = |metrics: &str| {
            sink_count(
                metrics,
                "credential_broker_sink_writes_total",
                &sink,
                "error",
            )
        };
        let errors_before = errors(&broker.metrics().await);
        let warnings_before = broker
            .log_events()
            .iter()
            .filter(|e| e["message"] == "cannot write the credential file; trying again")
            .count();
        breakage.apply(&files);
        // The next version cannot be written.
        let new = new_password("unwritable-next");
        std::fs::write(&broker.secrets, secrets(&new).to_string()).unwrap();
        wait_until(
            Duration::from_secs(10),
            &format!("{breakage:?}: the failed write is logged"),
            || {
                broker
                    .log_events()
                    .iter()
                    .filter(|e| e["message"] == "cannot write the credential file; trying again")
                    .count()
                    > warnings_before
            },
        )
        .await;
        let ready = broker.admin_get("/readyz").await;
        assert_eq!(ready.status(), 503, "{breakage:?}");
        let body = json_body(ready).await;
        assert_eq!(
            body["sinks_not_ready"],
            json!([sink]),
            "{breakage:?}: {body}"
        );
        let metrics = broker.metrics().await;
        assert!(errors(&metrics) > errors_before, "{breakage:?}: {metrics}");
        // Fixed: the retry writes the new version and readiness returns.
        breakage.undo(&files);
        wait_until(
            Duration::from_secs(15),
            &format!("{breakage:?}: the retry writes the new version"),
            || {
                std::fs::read_to_string(&path).is_ok_and(|c| {
                    serde_json::from_str::<serde_json::Value>(&c)
                        .is_ok_and(|v| v["password"] == new.as_str())
                })
            },
        )
        .await;
        eventually(
            Duration::from_secs(5),
            &format!("{breakage:?}: ready again after the write"),
            || async { broker.admin_get("/readyz").await.status() == 200 },
        )
        .await;
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
    let failed = "the sink's on_change failed; trying again";
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
        ) >= 3,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_down_past_max_stale_leaves_the_last_file_untouched() {
    let upstream = Upstream::start().await;
    upstream
        .create_secret(
            "orders",
            &json!({"username": "app", "password": new_password("down-old")}),
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.json");
    let mut options =
        BrokerOptions::new(upstream.proxy.endpoint()).database("orders", "orders", "");
    (options.ttl, options.max_stale, options.operation_timeout) = ("1s", "1s", "1s");
    options.extra_toml = sink_toml("orders", "json", &path, "");
    let mut broker = options.spawn().await;
    broker
        .wait_for_log("credential file written", Duration::from_secs(10))
        .await;
    let snapshot = || {
        let meta = std::fs::metadata(&path).unwrap();
        (
            std::fs::read(&path).unwrap(),
            meta.ino(),
            meta.mtime_nsec(),
            meta.mtime(),
        )
    };
    let before = snapshot();
    upstream.proxy.set_fault(Fault::Reset);
    // Past ttl and max_stale: the broker has nothing left to serve.
    eventually(
        Duration::from_secs(15),
        "the credentials expire while the source is down",
        || async { broker.get("orders").await.status() == 503 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        snapshot() == before,
        "the file is untouched while the source is down"
    );
    upstream.proxy.set_fault(Fault::None);
    let new = new_password("down-new");
    upstream
        .rotate("orders", &json!({"username": "app", "password": new}))
        .await;
    wait_until(
        Duration::from_secs(15),
        "the new version once the source is back",
        || {
            std::fs::read_to_string(&path).is_ok_and(|c| {
                serde_json::from_str::<serde_json::Value>(&c)
                    .is_ok_and(|v| v["password"] == new.as_str())
            })
        },
    )
    .await;
    broker.assert_log_has_no_password();
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
    let pidfile = "on_change_pidfile = \"/run/pgbouncer/pgbouncer.pid\"";
    let signal_cases = [
        (
            format!("on_change_signal = \"SIGKILL\"\n{pidfile}"),
            "sinks[0].on_change_signal",
        ),
        (
            "on_change_signal = \"SIGHUP\"".to_owned(),
            "sinks[0].on_change_pidfile",
        ),
        (pidfile.to_owned(), "sinks[0].on_change_signal"),
        (
            "on_change_signal = \"SIGHUP\"\non_change_pidfile = \"pgbouncer.pid\"".to_owned(),
            "sinks[0].on_change_pidfile",
        ),
        (
            format!("on_change_signal = \"SIGHUP\"\n{pidfile}\non_change = [\"/bin/true\"]"),
            "sinks[0].on_change_signal",
        ),
    ];
    let cases = cases
        .into_iter()
        .chain(signal_cases.into_iter().map(|(extra, key)| {
            (
                sink_toml("orders", "pgbouncer", &dir.path().join("f"), &extra),
                key,
            )
        }));
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
