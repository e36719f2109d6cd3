//! Unit tests of configuration loading and validation: defaults, ranges, and each error naming
//! its key.

use std::path::Path;
use std::time::Duration;

use super::*;

const MINIMAL: &str = r#"
    [auth]
    disabled = true
    [databases.orders]
    secret_id = "rds!db-1"
"#;

fn error_of(text: &str) -> ConfigError {
    Config::from_toml(text).expect_err("config should be rejected")
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let config = Config::from_toml(MINIMAL).unwrap();
    assert_eq!(
        config.server.listen,
        Some("127.0.0.1:2775".parse().unwrap())
    );
    assert_eq!(config.server.unix_socket, None);
    assert_eq!(config.audit, AuditConfig::Stderr);
    assert_eq!(config.server.admin_listen.to_string(), "127.0.0.1:2776");
    assert_eq!(config.cache.ttl, Duration::from_hours(6));
    assert_eq!(config.cache.capacity, 1000);
    assert_eq!(config.rotation.describe_interval, Duration::from_hours(1));
    assert_eq!(config.rotation.watch_interval, Duration::from_secs(10));
    assert!(config.cache.warm);
    assert!(matches!(config.auth, AuthConfig::Disabled));
    let SourceConfig::SecretsManager(aws) = &config.source else {
        panic!("default source should be secrets_manager");
    };
    assert_eq!(aws.operation_timeout, Duration::from_secs(8));
    assert_eq!(aws.max_attempts, 3);
    assert_eq!(config.databases.len(), 1);
}

#[test]
fn the_watch_interval_is_at_most_the_describe_interval() {
    let err = error_of(&format!(
        "{MINIMAL}\n[rotation]\ndescribe_interval = \"5s\"\nwatch_interval = \"6s\"\n"
    ));
    assert_eq!(err.key, "rotation.watch_interval", "{err}");
    let config = Config::from_toml(&format!(
        "{MINIMAL}\n[rotation]\ndescribe_interval = \"5s\"\nwatch_interval = \"5s\"\n"
    ))
    .unwrap();
    assert_eq!(config.rotation.watch_interval, Duration::from_secs(5));
    // Unset, it is the default or the describe interval, whichever is shorter.
    let config = Config::from_toml(&format!(
        "{MINIMAL}\n[rotation]\ndescribe_interval = \"3s\"\n"
    ))
    .unwrap();
    assert_eq!(config.rotation.watch_interval, Duration::from_secs(3));
}

#[test]
fn durations_are_human_strings() {
    let config = Config::from_toml(&format!(
        "{MINIMAL}\n[cache]\nttl = \"90s\"\n[aws]\noperation_timeout = \"1m 30s\"\n[server]\nrequest_timeout = \"2m\"\n"
    ))
    .unwrap();
    assert_eq!(config.cache.ttl, Duration::from_secs(90));
    let SourceConfig::SecretsManager(aws) = config.source else {
        unreachable!()
    };
    assert_eq!(aws.operation_timeout, Duration::from_secs(90));
}

#[test]
fn unknown_key_is_named_in_the_error() {
    let err = error_of(&format!("{MINIMAL}\n[cache]\nttl_seconds = 5\n"));
    assert_eq!(err.key, "cache.ttl_seconds", "{err}");
    assert!(err.message.contains("unknown field"), "{err}");
}

#[test]
fn bad_duration_names_its_key() {
    let err = error_of(&format!("{MINIMAL}\n[cache]\nttl = \"five minutes\"\n"));
    assert_eq!(err.key, "cache.ttl", "{err}");
}

#[test]
fn bad_listen_address_names_its_key() {
    let err = error_of(&format!("{MINIMAL}\n[server]\nlisten = \"localhost\"\n"));
    assert_eq!(err.key, "server.listen", "{err}");
}

#[test]
fn non_loopback_listen_needs_explicit_opt_in() {
    let err = error_of(&format!("{MINIMAL}\n[server]\nlisten = \"0.0.0.0:2775\"\n"));
    assert_eq!(err.key, "server.listen");
    let ok = Config::from_toml(&format!(
        "{MINIMAL}\n[server]\nlisten = \"0.0.0.0:2775\"\nallow_non_loopback = true\n"
    ));
    assert!(ok.is_ok());
}

#[test]
fn auth_must_be_configured_or_disabled_explicitly() {
    let err = error_of("[databases.a]\nsecret_id = \"s\"\n");
    assert_eq!(err.key, "auth");
    let err = error_of(
        "[auth]\ntoken_env = \"PATH\"\ndisabled = true\n[databases.a]\nsecret_id = \"s\"\n",
    );
    assert_eq!(err.key, "auth.disabled");
}

#[test]
fn token_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
    let config = Config::from_toml(&format!(
        "[auth]\ntoken_file = {:?}\n[databases.a]\nsecret_id = \"s\"\n",
        path.display().to_string()
    ))
    .unwrap();
    let AuthConfig::Clients { clients, .. } = config.auth else {
        panic!("expected a token")
    };
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].name, DEFAULT_CLIENT);
    assert_eq!(clients[0].scope, Scope::All);
    let token = clients[0].token.as_ref().unwrap();
    assert_eq!(token.source, TokenSource::File(path));
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&token.value),
        "0123456789abcdef0123"
    );
}

/// A config with databases `a` and `b` and the given `[clients]` tables.
fn clients_config(dir: &Path, clients: &str) -> Result<Config, ConfigError> {
    for (name, token) in [
        ("a", "token-of-client-a-0123"),
        ("b", "token-of-client-b-0123"),
    ] {
        std::fs::write(dir.join(name), token).unwrap();
    }
    Config::from_toml(&format!(
        "[server]\nunix_socket = {{ path = \"/run/b.sock\" }}\n{clients}\n[databases.a]\nsecret_id = \"s\"\n[databases.b]\nsecret_id = \"t\"\n",
    ))
}

#[test]
fn clients_are_scoped_to_configured_databases() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let config = clients_config(
        dir.path(),
        &format!(
            "[clients.app-a]\ntoken_file = \"{d}/a\"\ndatabases = [\"a\"]\n[clients.ops]\ntoken_file = \"{d}/b\"\ndatabases = [\"*\", \"a\"]\n[clients.batch]\nunix_uids = [1001]\ndatabases = [\"b\"]\n"
        ),
    )
    .unwrap();
    let AuthConfig::Clients {
        clients,
        reload_interval,
    } = config.auth
    else {
        panic!("expected clients")
    };
    assert_eq!(reload_interval, Duration::from_secs(5));
    let names: Vec<_> = clients.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["app-a", "batch", "ops"]);
    assert!(clients[0].scope.allows("a") && !clients[0].scope.allows("b"));
    assert!(clients[1].token.is_none() && clients[1].unix_uids == [1001]);
    assert_eq!(clients[2].scope, Scope::All);
}

#[test]
fn client_mistakes_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let cases = [
        (format!("[clients.x]\ntoken_file = \"{d}/a\"\ndatabases = [\"nope\"]\n"), "clients.x.databases"),
        (format!("[clients.x]\ntoken_file = \"{d}/a\"\ndatabases = []\n"), "clients.x.databases"),
        ("[clients.x]\ndatabases = [\"a\"]\n".to_owned(), "clients.x"),
        (format!("[clients.x]\ntoken_file = \"{d}/a\"\ndatabases = [\"a\"]\n[clients.y]\ntoken_file = \"{d}/a\"\ndatabases = [\"b\"]\n"), "clients.y"),
        (format!("[clients.\"a b\"]\ntoken_file = \"{d}/a\"\ndatabases = [\"a\"]\n"), "clients.a b"),
        (format!("[clients.x]\ntoken_file = \"{d}/missing\"\ndatabases = [\"a\"]\n"), "clients.x.token_file"),
        ("[clients.x]\nunix_uids = [7]\ndatabases = [\"a\"]\n[clients.y]\nunix_uids = [7]\ndatabases = [\"a\"]\n".to_owned(), "clients.y.unix_uids"),
    ];
    for (clients, key) in cases {
        let err = clients_config(dir.path(), &clients).expect_err(&clients);
        assert_eq!(err.key, key, "{clients}: {err}");
    }
}

#[test]
fn unix_socket_settings_are_checked() {
    let config = Config::from_toml(&format!(
        "{MINIMAL}\n[server]\nlisten = \"off\"\nunix_socket = {{ path = \"/run/cb/api.sock\", mode = \"0660\", group = 1000 }}\n"
    ))
    .unwrap();
    assert_eq!(config.server.listen, None);
    assert_eq!(
        config.server.unix_socket,
        Some(UnixSocketConfig {
            path: "/run/cb/api.sock".into(),
            mode: 0o660,
            group: Some(1000),
        })
    );
    for (server, key) in [
        ("listen = \"off\"", "server.listen"),
        (
            "unix_socket = { path = \"/s\", mode = \"0666\" }",
            "server.unix_socket.mode",
        ),
        (
            "unix_socket = { path = \"/s\", mode = \"rw\" }",
            "server.unix_socket.mode",
        ),
        (
            "unix_socket = { path = \"rel.sock\" }",
            "server.unix_socket.path",
        ),
    ] {
        let err = error_of(&format!("{MINIMAL}\n[server]\n{server}\n"));
        assert_eq!(err.key, key, "{server}: {err}");
    }
    let err = error_of(
        "[clients.x]\nunix_uids = [7]\ndatabases = [\"a\"]\n[databases.a]\nsecret_id = \"s\"\n",
    );
    assert_eq!(err.key, "clients.x.unix_uids", "{err}");
}

#[test]
fn audit_goes_to_stderr_a_file_or_nowhere() {
    let file = Config::from_toml(&format!(
        "{MINIMAL}\n[audit]\noutput = \"file\"\npath = \"/var/log/audit.jsonl\"\n"
    ))
    .unwrap();
    assert_eq!(file.audit, AuditConfig::File("/var/log/audit.jsonl".into()));
    let off = Config::from_toml(&format!("{MINIMAL}\n[audit]\noutput = \"off\"\n")).unwrap();
    assert_eq!(off.audit, AuditConfig::Off);
    let err = error_of(&format!("{MINIMAL}\n[audit]\noutput = \"file\"\n"));
    assert_eq!(err.key, "audit.path");
}

#[test]
fn short_or_missing_token_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "short").unwrap();
    let text = format!(
        "[auth]\ntoken_file = {:?}\n[databases.a]\nsecret_id = \"s\"\n",
        path.display().to_string()
    );
    assert_eq!(error_of(&text).key, "auth.token_file");
    std::fs::remove_file(&path).unwrap();
    assert_eq!(error_of(&text).key, "auth.token_file");
}

#[test]
fn request_timeout_must_exceed_the_upstream_operation_timeout() {
    let err = error_of(&format!(
        "{MINIMAL}\n[server]\nrequest_timeout = \"5s\"\n[aws]\noperation_timeout = \"5s\"\n"
    ));
    assert_eq!(err.key, "server.request_timeout");
}

#[test]
fn held_requests_have_their_own_documented_limits() {
    let limits = Config::from_toml(MINIMAL).unwrap().server.limits;
    assert_eq!(limits.max_waiters, 1024);
    assert_eq!(limits.max_wait, Duration::from_mins(5));
    assert_eq!(limits.max_connections, 2048);
    // Held requests keep their connections: at least one must be left for everything else.
    let err = error_of(&format!(
        "{MINIMAL}\n[server]\nmax_connections = 100\nmax_waiters = 100\n"
    ));
    assert_eq!(err.key, "server.max_waiters", "{err}");
    assert!(err.message.contains("max_connections (100)"), "{err}");
    // Unset, it follows a smaller max_connections down to half of it.
    let config = Config::from_toml(&format!("{MINIMAL}\n[server]\nmax_connections = 100\n"));
    assert_eq!(config.unwrap().server.limits.max_waiters, 50);
    let err = error_of(&format!("{MINIMAL}\n[server]\nmax_wait = \"2h\"\n"));
    assert_eq!(err.key, "server.max_wait", "{err}");
    let err = error_of(&format!("{MINIMAL}\n[server]\nmax_waiters = 0\n"));
    assert_eq!(err.key, "server.max_waiters", "{err}");
}

#[test]
fn backoff_max_must_not_be_below_the_initial_delay() {
    let err = error_of(&format!(
        "{MINIMAL}\n[upstream]\nbackoff_initial = \"2s\"\nbackoff_max = \"1s\"\n"
    ));
    assert_eq!(err.key, "upstream.backoff_max");
}

#[test]
fn databases_name_exactly_one_secret_reference() {
    let config = Config::from_toml(
        "[auth]\ndisabled = true\n[databases.a]\nrds_instance = \"database-1\"\n[databases.b]\nrds_cluster = \"c\"\n",
    )
    .unwrap();
    let a = &config.databases[&DbName::parse("a").unwrap()];
    assert_eq!(
        a.login,
        Login::Secret(SecretRef::Rds(RdsTarget::Instance("database-1".into())))
    );
    let b = &config.databases[&DbName::parse("b").unwrap()];
    assert_eq!(
        b.login,
        Login::Secret(SecretRef::Rds(RdsTarget::Cluster("c".into())))
    );
    let err = error_of(
        "[auth]\ndisabled = true\n[databases.a]\nsecret_id = \"s\"\nrds_instance = \"i\"\n",
    );
    assert_eq!(err.key, "databases.a");
    let err = error_of("[auth]\ndisabled = true\n[databases.a]\nport = 5432\n");
    assert_eq!(err.key, "databases.a");
}

#[test]
fn rds_databases_need_secrets_manager() {
    let err = error_of(
        "[auth]\ndisabled = true\n[source]\nkind = \"file\"\npath = \"x.json\"\n[databases.a]\nrds_instance = \"i\"\n",
    );
    assert_eq!(err.key, "databases.a.rds_instance");
}

#[test]
fn iam_logins_name_a_user_and_an_endpoint_and_no_secret() {
    let head = "[auth]\ndisabled = true\n[databases.a]\nauth = \"iam\"\n";
    let config = Config::from_toml(&format!(
        "{head}username = \"app_user\"\nrds_cluster = \"c\"\n[databases.b]\nauth = \"iam\"\nusername = \"b.user-2\"\nhost = \"db\"\nport = 5432\n"
    ))
    .unwrap();
    let a = &config.databases[&DbName::parse("a").unwrap()];
    assert_eq!(
        a.login,
        Login::Iam(IamLogin {
            username: "app_user".into(),
            rds: Some(RdsTarget::Cluster("c".into())),
        })
    );
    assert_eq!(a.rds(), Some(&RdsTarget::Cluster("c".into())));
    let b = &config.databases[&DbName::parse("b").unwrap()];
    assert!(matches!(&b.login, Login::Iam(IamLogin { rds: None, .. })));
    assert_eq!(b.secret_id(), None);
    for (rest, key) in [
        ("rds_instance = \"i\"\n", "databases.a.username"),
        (
            "username = \"u\"\nsecret_id = \"s\"\n",
            "databases.a.secret_id",
        ),
        ("username = \"u\"\nhost = \"db\"\n", "databases.a"),
        ("username = \"u\"\nport = 5432\n", "databases.a"),
        (
            "username = \"a&b=c\"\nrds_instance = \"i\"\n",
            "databases.a.username",
        ),
        (
            "username = \"\"\nrds_instance = \"i\"\n",
            "databases.a.username",
        ),
        ("auth = \"kerberos\"\n", "databases.a.auth"),
    ] {
        let err = error_of(&format!("{head}{rest}").replace("auth = \"iam\"\nauth", "auth"));
        assert_eq!(err.key, key, "{rest}");
    }
    let long = "u".repeat(64);
    let err = error_of(&format!(
        "{head}username = \"{long}\"\nrds_instance = \"i\"\n"
    ));
    assert_eq!(err.key, "databases.a.username");
    let err =
        error_of("[auth]\ndisabled = true\n[databases.a]\nsecret_id = \"s\"\nusername = \"u\"\n");
    assert_eq!(
        err.key, "databases.a.username",
        "a password login takes no user"
    );
    let err = error_of(
        "[auth]\ndisabled = true\n[source]\nkind = \"file\"\npath = \"x.json\"\n[databases.a]\nauth = \"iam\"\nusername = \"u\"\nhost = \"db\"\nport = 1\n",
    );
    assert_eq!(err.key, "databases.a.auth");
}

#[test]
fn a_role_is_an_iam_role_arn_with_an_optional_external_id() {
    let head = "[auth]\ndisabled = true\n[databases.a]\nsecret_id = \"s\"\n";
    let config = Config::from_toml(&format!(
        "{head}role_arn = \"arn:aws:iam::222222222222:role/team/reader\"\nexternal_id = \"ext-42\"\n"
    ))
    .unwrap();
    assert_eq!(
        config.databases[&DbName::parse("a").unwrap()].role,
        Some(AssumedRole {
            arn: "arn:aws:iam::222222222222:role/team/reader".into(),
            external_id: Some("ext-42".into()),
        })
    );
    for (rest, key) in [
        ("external_id = \"ext-42\"\n", "databases.a.external_id"),
        (
            "role_arn = \"arn:aws:iam::2222:role/r\"\n",
            "databases.a.role_arn",
        ),
        (
            "role_arn = \"arn:aws:iam::222222222222:user/r\"\n",
            "databases.a.role_arn",
        ),
        (
            "role_arn = \"arn:aws:s3:::222222222222:role/r\"\n",
            "databases.a.role_arn",
        ),
        (
            "role_arn = \"arn:aws:iam::222222222222:role/\"\n",
            "databases.a.role_arn",
        ),
        (
            "role_arn = \"arn:aws:iam::222222222222:role/a b\"\n",
            "databases.a.role_arn",
        ),
        (
            "role_arn = \"arn:aws:iam::222222222222:role/r\"\nexternal_id = \"x\"\n",
            "databases.a.external_id",
        ),
        (
            "role_arn = \"arn:aws:iam::222222222222:role/r\"\nexternal_id = \"a\\nb\"\n",
            "databases.a.external_id",
        ),
    ] {
        assert_eq!(error_of(&format!("{head}{rest}")).key, key, "{rest}");
    }
    let long = format!("arn:aws:iam::222222222222:role/{}", "r".repeat(2048));
    assert_eq!(
        error_of(&format!("{head}role_arn = {long:?}\n")).key,
        "databases.a.role_arn"
    );
}

#[test]
fn fallback_regions_come_from_aws_unless_a_database_names_its_own() {
    let config = Config::from_toml(
        "[auth]\ndisabled = true\n[aws]\nregion = \"us-east-1\"\nfallback_regions = [\"us-west-2\", \"eu-west-1\"]\n\
         [databases.a]\nsecret_id = \"s\"\n[databases.b]\nsecret_id = \"s\"\nfallback_regions = []\n\
         [databases.c]\nsecret_id = \"s\"\nfallback_regions = [\"ap-south-1\"]\n",
    )
    .unwrap();
    let regions = |db: &str| {
        config.databases[&DbName::parse(db).unwrap()]
            .fallback_regions
            .clone()
    };
    assert_eq!(regions("a"), ["us-west-2", "eu-west-1"]);
    assert!(regions("b").is_empty());
    assert_eq!(regions("c"), ["ap-south-1"]);
    let head = "[auth]\ndisabled = true\n[aws]\nregion = \"us-east-1\"\n";
    for (list, why) in [
        ("[\"us-east-1\"]", "the primary"),
        ("[\"us-west-2\", \"us-west-2\"]", "twice"),
        ("[\"US-WEST-2\"]", "case"),
        ("[\"uswest2\"]", "no dash"),
        ("[\"a-1\", \"b-2\", \"c-3\", \"d-4\", \"e-5\"]", "five"),
    ] {
        let err = error_of(&format!(
            "{head}fallback_regions = {list}\n[databases.a]\nsecret_id = \"s\"\n"
        ));
        assert_eq!(err.key, "aws.fallback_regions", "{why}");
        let err = error_of(&format!(
            "{head}[databases.a]\nsecret_id = \"s\"\nfallback_regions = {list}\n"
        ));
        assert_eq!(err.key, "databases.a.fallback_regions", "{why}");
    }
    let err = error_of(
        "[auth]\ndisabled = true\n[source]\nkind = \"file\"\npath = \"x.json\"\n[databases.a]\nsecret_id = \"s\"\nfallback_regions = [\"us-west-2\"]\n",
    );
    assert_eq!(err.key, "databases.a.fallback_regions");
}

#[test]
fn file_source_requires_a_path() {
    let err = error_of(&format!("{MINIMAL}\n[source]\nkind = \"file\"\n"));
    assert_eq!(err.key, "source.path");
}

#[test]
fn invalid_database_name_is_rejected() {
    let err = error_of("[auth]\ndisabled = true\n[databases.\"a/b\"]\nsecret_id = \"s\"\n");
    assert_eq!(err.key, "databases.a/b");
}

#[test]
fn zero_ttl_and_empty_databases_are_rejected() {
    assert_eq!(
        error_of(&format!("{MINIMAL}\n[cache]\nttl = \"0s\"\n")).key,
        "cache.ttl"
    );
    assert_eq!(error_of("[auth]\ndisabled = true\n").key, "databases");
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own large error type
fn environment_overrides_file_values() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("broker.toml", MINIMAL)?;
        jail.set_env("CREDENTIAL_BROKER_CACHE__TTL", "42s");
        jail.set_env("CREDENTIAL_BROKER_DATABASES__ORDERS__PORT", "6543");
        jail.set_env("CREDENTIAL_BROKER_CONFIG", "broker.toml");
        let config = Config::load(Path::new("broker.toml")).expect("loads");
        assert_eq!(config.cache.ttl, Duration::from_secs(42));
        let orders = DbName::parse("orders").unwrap();
        assert_eq!(config.databases[&orders].endpoint.port, Some(6543));
        Ok(())
    });
}

#[test]
fn missing_file_is_reported_with_its_path() {
    let err = Config::load(Path::new("/nonexistent/broker.toml")).unwrap_err();
    assert_eq!(err.key, "/nonexistent/broker.toml");
}
