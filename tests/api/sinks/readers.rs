//! Each format's file read by its real reader with hostile passwords (libpq through psql for
//! `pgpass` and `service`, a POSIX shell for `env`, MariaDB's option-file reader for `mysql`,
//! PgBouncer for `pgbouncer`), and a reader looping on a file while it is rewritten 100 times.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use super::pgbouncer::{PgBouncer, postgres_uid};
use super::{REFRESH_AT_ONCE, psql_logs_in, sink_count, sink_toml, wait_until};
use crate::helpers::*;
use crate::pg::Postgres;

/// Characters each reader unescapes in its own way, and space.
const HOSTILE: &[char] = &[
    ':', '\\', '\'', '"', '$', ' ', '#', ';', '=', '`', '!', '%', '&', '*', '?', '[', ']', '{',
    '}', '(', ')', '<', '>', '|', '~', '@', '/', ',', '^', '+', 'é', '\t',
];

/// `count` passwords, each a fresh core and a tail of 1 to 24 characters drawn from
/// [`HOSTILE`] by a seeded xorshift (the same every run); the first, and any that would end in
/// white space, end in a backslash.
fn hostile_passwords(count: usize) -> Vec<String> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|i| {
            let len = 1 + next() % 24;
            let mut tail: String = (0..len)
                .map(|_| HOSTILE[usize::try_from(next()).unwrap() % HOSTILE.len()])
                .collect();
            // libpq trims white space at a service file line's end: `service` refuses it.
            if i == 0 || tail.ends_with([' ', '\t']) {
                tail.push('\\');
            }
            new_password_ending("hostile", &tail)
        })
        .collect()
}

/// The password a POSIX shell (`sh`, dash on Debian) sees after sourcing `env_file`.
fn shell_password(env_file: &Path) -> String {
    let output = Command::new("sh")
        .args(["-c", ". \"$1\" && printf %s \"$PGPASSWORD\"", "sh"])
        .arg(env_file)
        .env_clear()
        .output()
        .unwrap();
    assert!(output.status.success(), "sh: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// The password MariaDB's option-file reader takes from `option_file`'s `[client]` group.
fn option_file_password(option_file: &Path) -> String {
    let output = Command::new("my_print_defaults")
        .arg(format!("--defaults-extra-file={}", option_file.display()))
        .arg("client")
        .output()
        .expect("my_print_defaults not found: run `bash .ci/setup` (installs Debian's mariadb-client-core)");
    assert!(output.status.success(), "my_print_defaults: {output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("--password="))
        .expect("the option file has a password")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_format_s_real_reader_takes_hostile_passwords_from_its_sink() {
    let pg = Postgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name);
    let (pgpass, service, env, mysql) = (
        file("orders.pgpass"),
        file("pg_service.conf"),
        file("orders.env"),
        file("maria.cnf"),
    );
    let auth_file = file("bouncer/userlist.txt");
    std::fs::create_dir(file("bouncer")).unwrap();
    let bouncer = PgBouncer::start(&pg, &file("bouncer"), &auth_file);
    let secrets = |password: &str| {
        json!({
            "orders": {"username": "app", "password": password, "host": "127.0.0.1",
                       "port": pg.port, "dbname": "postgres", "engine": "postgres"},
            "maria": {"username": "app", "password": password, "host": "127.0.0.1",
                      "port": 3306, "engine": "mariadb"},
        })
    };
    let passwords = hostile_passwords(25);
    pg.set_password("app", &passwords[0]).await;
    let sinks = [
        sink_toml("orders", "pgpass", &pgpass, ""),
        sink_toml("orders", "service", &service, ""),
        sink_toml("orders", "env", &env, ""),
        sink_toml("maria", "mysql", &mysql, ""),
        sink_toml(
            "orders",
            "pgbouncer",
            &auth_file,
            &format!(
                "owner = {}\non_change = [\"/bin/kill\", \"-HUP\", \"{}\"]",
                postgres_uid(),
                bouncer.pid
            ),
        ),
    ];
    let broker = FileBroker::spawn(
        &secrets(&passwords[0]),
        "",
        "",
        &format!("{REFRESH_AT_ONCE}{}", sinks.concat()),
        "[databases.orders]\nsecret_id = \"orders\"\n[databases.maria]\nsecret_id = \"maria\"\n",
    )
    .await;
    let mut checked = 0;
    for (i, password) in passwords.iter().enumerate() {
        if i > 0 {
            pg.set_password("app", password).await;
            std::fs::write(&broker.secrets, secrets(password).to_string()).unwrap();
            for db in ["orders", "maria"] {
                assert_eq!(broker.refresh(db).await.status(), 200);
            }
        }
        // Every file written and PgBouncer told, for this password.
        let expected = i as u64 + 1;
        let start = std::time::Instant::now();
        loop {
            let metrics = broker.metrics().await;
            let written = [&pgpass, &service, &env, &mysql, &auth_file]
                .iter()
                .all(|path| {
                    sink_count(
                        &metrics,
                        "credential_broker_sink_writes_total",
                        &path.display().to_string(),
                        "ok",
                    ) >= expected
                });
            let reloaded = sink_count(
                &metrics,
                "credential_broker_sink_commands_total",
                &auth_file.display().to_string(),
                "ok",
            ) >= expected;
            if written && reloaded {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "password {i}: every sink written: {metrics}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let shown = password.escape_debug();
        psql_logs_in(&pg, "", &[("PGPASSFILE", &pgpass)])
            .unwrap_or_else(|e| panic!("psql with the pgpass file, password {i} {shown}: {e}"));
        psql_logs_in(&pg, "service=orders", &[("PGSERVICEFILE", &service)])
            .unwrap_or_else(|e| panic!("psql with the service file, password {i} {shown}: {e}"));
        assert_eq!(&shell_password(&env), password, "sh sourcing the env file");
        assert_eq!(
            &option_file_password(&mysql),
            password,
            "the mysql option file"
        );
        // PgBouncer reloads on its own time after the signal.
        let start = std::time::Instant::now();
        while let Err(e) = bouncer.login(&pg, password).await {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "PgBouncer with its auth_file, password {i} {shown}: {e}; its log: {}",
                bouncer.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        checked += 1;
    }
    println!(
        "{checked} hostile passwords read back by psql (pgpass, service), sh, my_print_defaults and PgBouncer"
    );
    assert_eq!(checked, passwords.len());
    broker.assert_log_has_no_password();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_looping_on_a_sink_during_100_rewrites_never_sees_it_missing_partial_or_looser() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.json");
    let secrets = |password: &str| json!({"orders": {"username": "app", "password": password}});
    let passwords: Vec<String> = (0..=100).map(|_| new_password("atomic")).collect();
    let broker = FileBroker::spawn(
        &secrets(&passwords[0]),
        "",
        "",
        &format!(
            "{REFRESH_AT_ONCE}{}",
            sink_toml(
                "orders",
                "json",
                &path,
                "mode = \"0640\"\nowner = 65534\ngroup = 65534"
            )
        ),
        "[databases.orders]\nsecret_id = \"orders\"\n",
    )
    .await;
    let read_password = |path: &Path| -> Option<String> {
        let text = std::fs::read_to_string(path).ok()?;
        let body: serde_json::Value = serde_json::from_str(&text).ok()?;
        body["password"].as_str().map(str::to_owned)
    };
    wait_until(Duration::from_secs(10), "the first file", || {
        read_password(&path).is_some()
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let reader = std::thread::spawn({
        let (stop, path, known) = (stop.clone(), path.clone(), passwords.clone());
        move || {
            let (mut reads, mut bad) = (0_u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                reads += 1;
                let seen = std::fs::File::open(&path).and_then(|mut f| {
                    let meta = f.metadata()?;
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut f, &mut text)?;
                    Ok((meta, text))
                });
                match seen {
                    Err(e) => bad.push(format!("open or read: {e}")),
                    Ok((meta, text)) => {
                        let (mode, owner) =
                            (meta.permissions().mode() & 0o7777, (meta.uid(), meta.gid()));
                        if mode != 0o640 || owner != (65534, 65534) {
                            bad.push(format!("mode {mode:o}, owner {owner:?}"));
                        }
                        let password = serde_json::from_str::<serde_json::Value>(&text)
                            .ok()
                            .and_then(|v| v["password"].as_str().map(str::to_owned));
                        if !password.is_some_and(|p| known.contains(&p)) {
                            bad.push(format!("{} bytes that are not a whole file", text.len()));
                        }
                    }
                }
            }
            (reads, bad)
        }
    });
    for password in &passwords[1..] {
        // The secrets file is replaced whole, so the broker never reads half of it.
        let staged = broker.secrets.with_extension("staged");
        std::fs::write(&staged, secrets(password).to_string()).unwrap();
        std::fs::rename(&staged, &broker.secrets).unwrap();
        assert_eq!(broker.refresh("orders").await.status(), 200);
        wait_until(Duration::from_secs(10), "the rewrite", || {
            read_password(&path).as_ref() == Some(password)
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let (reads, bad) = reader.join().unwrap();
    let metrics = broker.metrics().await;
    let rewrites = sink_count(
        &metrics,
        "credential_broker_sink_writes_total",
        &path.display().to_string(),
        "ok",
    );
    println!("{reads} reads during {rewrites} writes; {} bad", bad.len());
    assert_eq!(rewrites, 101, "the first write and 100 rewrites");
    assert!(reads > 1000, "the reader kept reading: {reads}");
    assert!(
        bad.is_empty(),
        "the reader saw: {:?}",
        &bad[..bad.len().min(5)]
    );
}
