//! Unit tests of the credentials model, parsing and every output format (round trips through
//! libpq, JDBC URL and shell parsers).

use serde_json::Value;

use super::*;

const PASSWORD: &str = "pa:ss@w/o\"rd!#%";

fn config() -> Endpoint {
    Endpoint {
        host: Some("config-host".into()),
        port: Some(5433),
        dbname: Some("orders".into()),
        engine: Some("postgres".into()),
        reader_host: None,
    }
}

fn parse_string(text: &str) -> Result<Credentials, MalformedSecret> {
    Credentials::from_secret(
        DbName::parse("orders").unwrap(),
        config(),
        None,
        SecretVersion {
            payload: SecretPayload::String(text.into()),
            version_id: "v1".into(),
            arn: Some("arn:aws:secretsmanager:us-east-1:1:secret:x".into()),
        },
    )
}

#[test]
fn bodies_are_rendered_once_per_format_and_shared() {
    let c = parse_string(&format!(
        r#"{{"username":"u","password":{}}}"#,
        serde_json::to_string(PASSWORD).unwrap()
    ))
    .unwrap();
    let mysql = with_password(PASSWORD, "mysql");
    for format in Format::all() {
        // Each format with an engine it renders: the MySQL option file needs a MySQL one.
        let c = if format == Format::Mysql { &mysql } else { &c };
        let first = c.render(format, false).unwrap().body;
        let second = c.render(format, false).unwrap().body;
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "{format:?} is not re-rendered"
        );
    }
    let fresh = c.render(Format::Json, false).unwrap().body;
    let stale = c.render(Format::Json, true).unwrap().body;
    assert_ne!(fresh, stale, "the stale flag has its own body");
    assert_eq!(
        serde_json::from_slice::<Value>(&stale).unwrap()["stale"],
        true
    );
    assert_eq!(c.etag().as_ref(), b"\"v1\"");
    assert!(!format!("{c:?}").contains(PASSWORD));
}

#[test]
fn rds_managed_shape_takes_the_rest_from_config() {
    let c =
        parse_string(&serde_json::json!({"username": "admin", "password": PASSWORD}).to_string())
            .unwrap();
    assert_eq!(c.username, "admin");
    assert_eq!(c.password(), PASSWORD);
    assert_eq!(c.endpoint.host.as_deref(), Some("config-host"));
    assert_eq!(c.endpoint.port, Some(5433));
    assert_eq!(c.endpoint.dbname.as_deref(), Some("orders"));
    assert_eq!(c.endpoint.engine.as_deref(), Some("postgres"));
}

#[test]
fn classic_shape_values_win_over_config_and_port_may_be_a_string() {
    let c = parse_string(
        r#"{"username":"u","password":"p","host":"secret-host","port":"6432","dbname":"d","engine":"mysql","dbInstanceIdentifier":"x"}"#,
    )
    .unwrap();
    assert_eq!(c.endpoint.host.as_deref(), Some("secret-host"));
    assert_eq!(c.endpoint.port, Some(6432));
    assert_eq!(c.endpoint.dbname.as_deref(), Some("d"));
    assert_eq!(c.endpoint.engine.as_deref(), Some("mysql"));
    let c = parse_string(r#"{"username":"u","password":"p","port":3306}"#).unwrap();
    assert_eq!(c.endpoint.port, Some(3306));
}

#[test]
fn secret_binary_holding_json_parses() {
    let c = Credentials::from_secret(
        DbName::parse("orders").unwrap(),
        config(),
        None,
        SecretVersion {
            payload: SecretPayload::Binary(br#"{"username":"u","password":"p"}"#.to_vec().into()),
            version_id: "v1".into(),
            arn: None,
        },
    )
    .unwrap();
    assert_eq!(c.password(), "p");
}

#[test]
fn malformed_secrets_are_classified_without_their_content() {
    let cases = [
        (
            format!("not json {PASSWORD}"),
            MalformedSecret::NotJson { line: 1, column: 2 },
        ),
        (
            serde_json::json!([PASSWORD]).to_string(),
            MalformedSecret::NotAnObject,
        ),
        (
            serde_json::json!({"password": PASSWORD}).to_string(),
            MalformedSecret::MissingField("username"),
        ),
        (
            r#"{"username":"u"}"#.to_owned(),
            MalformedSecret::MissingField("password"),
        ),
        (
            serde_json::json!({"username": "u", "password": PASSWORD, "port": PASSWORD})
                .to_string(),
            MalformedSecret::InvalidField("port"),
        ),
        (
            r#"{"username":"u","password":"p","port":70000}"#.to_owned(),
            MalformedSecret::InvalidField("port"),
        ),
        (
            r#"{"username":7,"password":"p"}"#.to_owned(),
            MalformedSecret::InvalidField("username"),
        ),
    ];
    for (text, expected) in cases {
        let err = parse_string(&text).unwrap_err();
        if let MalformedSecret::NotJson { .. } = expected {
            assert!(matches!(err, MalformedSecret::NotJson { .. }), "{err:?}");
        } else {
            assert_eq!(err, expected);
        }
        assert!(!err.to_string().contains(PASSWORD));
        assert!(!format!("{err:?}").contains(PASSWORD));
    }
}

#[test]
fn debug_output_never_shows_the_password() {
    let c = parse_string(&serde_json::json!({"username": "u", "password": PASSWORD}).to_string())
        .unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains(PASSWORD), "{debug}");
    assert!(debug.contains("[REDACTED]"));
    let payload = SecretPayload::String(PASSWORD.into());
    assert!(!format!("{payload:?}").contains(PASSWORD));
}

#[test]
fn json_body_has_every_documented_field() {
    let c = parse_string(&serde_json::json!({"username": "u", "password": PASSWORD}).to_string())
        .unwrap();
    let body: Value = serde_json::from_slice(&c.render(Format::Json, false).unwrap().body).unwrap();
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "db",
        "engine",
        "host",
        "port",
        "dbname",
        "username",
        "password",
        "version_id",
        "secret_arn",
        "fetched_at",
        "stale",
        "auth",
        "expires_at",
        "region",
    ] {
        assert!(keys.contains(&key), "missing {key}");
    }
    assert_eq!(body["auth"], "password");
    assert_eq!(body["expires_at"], Value::Null);
    assert_eq!(body["password"], PASSWORD);
    assert_eq!(body["port"], 5433);
    let fetched_at = body["fetched_at"].as_str().unwrap();
    humantime::parse_rfc3339(fetched_at).expect("fetched_at is RFC 3339");
}

#[test]
fn db_names_are_validated() {
    for good in ["orders", "a", "db-1_x.y", &"a".repeat(64)] {
        assert!(DbName::parse(good).is_ok(), "{good}");
    }
    for bad in ["", ".", "..", "a/b", "a b", "é", "%2e", &"a".repeat(65)] {
        assert!(DbName::parse(bad).is_err(), "{bad}");
    }
}

/// Every printable ASCII punctuation character, as RDS-generated passwords may contain.
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

fn with_password(password: &str, engine: &str) -> Credentials {
    Credentials::from_secret(
        DbName::parse("orders").unwrap(),
        Endpoint {
            host: Some("db.example.internal".into()),
            port: Some(5432),
            dbname: Some("or ders/%".into()),
            engine: Some(engine.into()),
            reader_host: None,
        },
        None,
        SecretVersion {
            payload: SecretPayload::String(
                serde_json::json!({"username": "app user@x", "password": password})
                    .to_string()
                    .into(),
            ),
            version_id: "v1".into(),
            arn: None,
        },
    )
    .unwrap()
}

fn text(c: &Credentials, format: Format) -> String {
    String::from_utf8(c.render(format, false).unwrap().body.to_vec()).unwrap()
}

/// libpq's own parsers, as tokio-postgres implements them, read back URI and key/value.
fn libpq_password(rendered: &str) -> (String, String) {
    let config: tokio_postgres::Config = rendered.parse().expect("libpq parses it");
    let password = String::from_utf8(config.get_password().unwrap().to_vec()).unwrap();
    (config.get_user().unwrap().to_owned(), password)
}

fn jdbc_password(rendered: &str) -> (String, String) {
    let url = url::Url::parse(rendered.strip_prefix("jdbc:").unwrap()).unwrap();
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    (query["user"].clone(), query["password"].clone())
}

fn shell_password(rendered: &str) -> String {
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{rendered}printf %s \"$PGPASSWORD\""))
        .output()
        .expect("sh runs");
    String::from_utf8(output.stdout).unwrap()
}

fn assert_round_trips(password: &str) {
    let c = with_password(password, "postgres");
    let (user, pass) = libpq_password(&text(&c, Format::Uri));
    assert_eq!(
        (user.as_str(), pass.as_str()),
        ("app user@x", password),
        "uri"
    );
    let uri = url::Url::parse(&text(&c, Format::Uri)).unwrap();
    assert_eq!(uri.host_str(), Some("db.example.internal"));
    assert_eq!(uri.port(), Some(5432));
    let (user, pass) = libpq_password(&text(&c, Format::KeyValue));
    assert_eq!(
        (user.as_str(), pass.as_str()),
        ("app user@x", password),
        "keyvalue"
    );
    let (user, pass) = jdbc_password(&text(&c, Format::Jdbc));
    assert_eq!(
        (user.as_str(), pass.as_str()),
        ("app user@x", password),
        "jdbc"
    );
    assert_eq!(shell_password(&text(&c, Format::Env)), password, "env");
    let mysql = with_password(password, "mysql");
    let uri = url::Url::parse(&text(&mysql, Format::Uri)).unwrap();
    let decoded = percent_encoding::percent_decode_str(uri.password().unwrap())
        .decode_utf8()
        .unwrap();
    assert_eq!(uri.scheme(), "mysql");
    assert_eq!(decoded, password, "mysql uri");
}

#[test]
fn every_format_round_trips_all_printable_punctuation() {
    assert_round_trips(PUNCTUATION);
    assert_round_trips(&format!("a{PUNCTUATION}z 0 9"));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn every_format_round_trips_random_printable_passwords(password in "[ -~]{1,40}") {
        assert_round_trips(&password);
    }
}

#[test]
fn formats_name_the_engine_and_refuse_what_they_cannot_express() {
    let c = with_password("p", "postgres");
    assert!(
        text(&c, Format::Uri)
            .starts_with("postgresql://app%20user%40x:p@db.example.internal:5432/or%20ders%2F%25")
    );
    assert!(text(&c, Format::Jdbc).starts_with("jdbc:postgresql://db.example.internal:5432/"));
    assert!(text(&c, Format::Env).starts_with("PGHOST='db.example.internal'\nPGPORT='5432'\n"));
    let m = with_password("p", "mariadb");
    assert!(text(&m, Format::Jdbc).starts_with("jdbc:mariadb://"));
    assert!(text(&m, Format::Env).contains("MYSQL_PWD='p'"));
    assert_eq!(
        m.render(Format::KeyValue, false).unwrap_err(),
        RenderError::Unsupported("keyvalue is the libpq format, for PostgreSQL only")
    );
    let unknown = with_password("p", "oracle-ee");
    assert_eq!(
        unknown.render(Format::Uri, false).unwrap_err(),
        RenderError::UnknownEngine
    );
    assert!(unknown.render(Format::Json, false).is_ok());
}

#[test]
fn ipv6_hosts_are_bracketed() {
    let mut c = with_password("p", "postgres");
    c.endpoint.host = Some("::1".into());
    assert!(text(&c, Format::Uri).contains("@[::1]:5432/"));
}

#[test]
fn pending_version_is_exposed_only_when_it_differs() {
    let pending = |id: &str| SecretVersion {
        payload: SecretPayload::String(r#"{"username":"u","password":"next"}"#.into()),
        version_id: id.into(),
        arn: None,
    };
    let c = with_password("p", "postgres")
        .with_pending(pending("v1"))
        .unwrap();
    assert!(
        c.pending.is_none(),
        "the pending label on the current version is no rotation"
    );
    let c = with_password("p", "postgres")
        .with_pending(pending("v2"))
        .unwrap();
    let body: Value = serde_json::from_slice(&c.render(Format::Json, false).unwrap().body).unwrap();
    assert_eq!(body["pending"]["password"], "next");
    assert_eq!(body["pending"]["version_id"], "v2");
    assert!(
        !format!("{c:?}").contains("next"),
        "Debug hides the pending password"
    );
}

#[test]
fn every_format_is_documented_in_openapi_and_parses_by_its_name() {
    let spec: Value = serde_norway::from_str(include_str!("../../openapi.yaml")).unwrap();
    let documented: Vec<&str> = spec
        .pointer("/paths/~1credentials~1{db}/get/parameters/0/schema/enum")
        .and_then(Value::as_array)
        .expect("the format parameter's enum")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let names: Vec<&str> = Format::all().map(Format::name).collect();
    assert_eq!(documented, names);
    for format in Format::all() {
        assert_eq!(format.name().parse::<Format>(), Ok(format));
    }
    assert!("JSON".parse::<Format>().is_err());
}

#[test]
fn an_endpoint_takes_each_field_from_itself_first_then_the_fallback() {
    let secret = Endpoint {
        host: Some("secret-host".into()),
        ..Endpoint::default()
    };
    let merged = secret.or(config());
    assert_eq!(merged.host.as_deref(), Some("secret-host"));
    assert_eq!(merged.port, Some(5433));
    assert_eq!(merged.engine.as_deref(), Some("postgres"));
    assert_eq!(merged.reader_host, None);
    let reader = Endpoint {
        reader_host: Some("reader".into()),
        ..Endpoint::default()
    };
    assert_eq!(
        Endpoint::default().or(reader).reader_host.as_deref(),
        Some("reader")
    );
}

#[test]
fn file_formats_escape_what_their_readers_unescape() {
    let mut c = with_password(r#"a:b\c"d*#e"#, "postgres");
    c.endpoint.reader_host = Some("reader.example.internal".into());
    assert_eq!(
        text(&c, Format::Pgpass),
        "db.example.internal:5432:or ders/%:app user@x:a\\:b\\\\c\"d\\*\\#e\n\
         reader.example.internal:5432:or ders/%:app user@x:a\\:b\\\\c\"d\\*\\#e\n"
    );
    assert_eq!(
        text(&c, Format::Pgbouncer),
        "\"app user@x\" \"a:b\\c\"\"d*#e\"\n"
    );
    assert_eq!(
        text(&c, Format::Service),
        "[orders]\nhost=db.example.internal\nport=5432\ndbname=or ders/%\nuser=app user@x\npassword=a:b\\c\"d*#e\n\
         \n[orders-reader]\nhost=reader.example.internal\nport=5432\ndbname=or ders/%\nuser=app user@x\npassword=a:b\\c\"d*#e\n"
    );
    let m = with_password("p\"q\\r#s\tt", "mysql");
    assert_eq!(
        text(&m, Format::Mysql),
        "[client]\nuser=\"app user@x\"\npassword=\"p\\\"q\\\\r#s\\tt\"\nhost=\"db.example.internal\"\nport=\"5432\"\n"
    );
}

#[test]
fn an_unknown_port_or_database_is_a_pgpass_wildcard() {
    let mut c = with_password("p", "postgres");
    c.endpoint.port = None;
    c.endpoint.dbname = None;
    assert_eq!(
        text(&c, Format::Pgpass),
        "db.example.internal:*:*:app user@x:p\n"
    );
}

#[test]
fn file_formats_refuse_what_their_readers_cannot_take() {
    let broken = with_password("line\nbreak", "postgres");
    for format in [Format::Pgpass, Format::Pgbouncer] {
        assert_eq!(
            broken.render(format, false).unwrap_err(),
            RenderError::LineBreak(format.name())
        );
    }
    let trailing = with_password("space at the end ", "postgres");
    assert!(matches!(
        trailing.render(Format::Service, false),
        Err(RenderError::Unsupported(_))
    ));
    assert!(matches!(
        broken.render(Format::Service, false),
        Err(RenderError::Unsupported(_))
    ));
    let m = with_password("p", "mariadb");
    for format in [Format::Pgpass, Format::Pgbouncer, Format::Service] {
        assert!(matches!(
            m.render(format, false),
            Err(RenderError::Unsupported(_))
        ));
    }
    let pg = with_password("p", "postgres");
    assert!(matches!(
        pg.render(Format::Mysql, false),
        Err(RenderError::Unsupported(_))
    ));
    let mut hostless = with_password("p", "postgres");
    hostless.endpoint.host = None;
    assert_eq!(
        hostless.render(Format::Pgpass, false).unwrap_err(),
        RenderError::MissingHost
    );
    let mut nul = with_password("p\0q", "postgres");
    nul.endpoint.reader_host = None;
    assert_eq!(
        nul.render(Format::Pgbouncer, false).unwrap_err(),
        RenderError::Nul
    );
}

/// A token of the shape RDS takes, with every character a query string holds.
const IAM_TOKEN: &str = "db.example:5432/?Action=connect&DBUser=app&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20261204%2Fus-east-1%2Frds-db%2Faws4_request&X-Amz-Date=20261204T160000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=0f";

fn with_token(engine: &str) -> Credentials {
    let signed = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_hours(499_000);
    Credentials::from_token(
        DbName::parse("orders").unwrap(),
        Endpoint {
            engine: Some(engine.into()),
            ..config()
        },
        AuthToken::new(
            "app".into(),
            IAM_TOKEN.into(),
            signed,
            signed + std::time::Duration::from_mins(15),
        ),
    )
}

#[test]
fn an_iam_token_is_carried_escaped_with_the_tls_options_each_format_needs() {
    let c = with_token("postgres");
    let body: Value = serde_json::from_slice(&c.render(Format::Json, false).unwrap().body).unwrap();
    assert_eq!(body["auth"], "iam");
    assert_eq!(body["password"], IAM_TOKEN);
    assert_eq!(body["expires_at"], "2026-12-04T16:15:00Z");
    assert_eq!(c.valid_for(), Some(std::time::Duration::from_mins(15)));
    let uri = text(&c, Format::Uri);
    assert!(uri.ends_with("/orders?sslmode=require"), "{uri}");
    assert_eq!(libpq_password(&uri).1, IAM_TOKEN);
    let keyvalue = text(&c, Format::KeyValue);
    let config: tokio_postgres::Config = keyvalue.parse().unwrap();
    assert_eq!(config.get_password(), Some(IAM_TOKEN.as_bytes()));
    assert_eq!(
        config.get_ssl_mode(),
        tokio_postgres::config::SslMode::Require
    );
    let jdbc = text(&c, Format::Jdbc);
    assert_eq!(jdbc_password(&jdbc).1, IAM_TOKEN);
    assert!(jdbc.ends_with("&sslmode=require"), "{jdbc}");
    let env = text(&c, Format::Env);
    assert_eq!(shell_password(&env), IAM_TOKEN);
    assert!(env.contains("PGSSLMODE='require'\n"), "{env}");
    assert!(text(&c, Format::Service).contains("\nsslmode=require\n"));

    let mysql = with_token("mysql");
    assert!(text(&mysql, Format::Jdbc).ends_with("&sslMode=REQUIRED"));
    assert!(text(&mysql, Format::Uri).ends_with("?ssl-mode=REQUIRED"));
    let options = text(&mysql, Format::Mysql);
    assert!(
        options.ends_with("ssl-mode=REQUIRED\nenable-cleartext-plugin\n"),
        "{options}"
    );
    assert!(!text(&mysql, Format::Env).contains("SSL"));
    let mariadb = with_token("mariadb");
    assert!(text(&mariadb, Format::Jdbc).ends_with("&sslMode=trust"));
    assert!(text(&mariadb, Format::Mysql).ends_with("\nssl\n"));

    // A password login asks for none of it.
    let password = with_password("pw", "postgres");
    assert!(!text(&password, Format::Uri).contains('?'));
    assert!(!text(&password, Format::KeyValue).contains("sslmode"));
}
