//! IAM database authentication against real moto: the token the broker serves is the one
//! botocore's `generate_db_auth_token` signs for the same credentials, endpoint, user and time;
//! it is signed with no Secrets Manager call, carried by every format with its TLS options,
//! signed again before it expires, and never logged.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

/// botocore at the signing time `stamp` (`X-Amz-Date`), with the credentials the broker has.
const BOTOCORE_TOKEN: &str = r#"
import datetime, sys
from unittest import mock
import botocore.auth, botocore.session
host, port, user, stamp, region, session_token = sys.argv[1:7]
at = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ")
client = botocore.session.get_session().create_client(
    "rds", region_name=region, aws_access_key_id="test", aws_secret_access_key="test",
    aws_session_token=session_token or None)
with mock.patch.object(botocore.auth, "get_current_datetime", return_value=at):
    sys.stdout.write(client.generate_db_auth_token(host, int(port), user))
"#;

/// The Python of moto's venv, which has botocore.
fn botocore_python() -> PathBuf {
    let moto = std::env::var_os("MOTO_SERVER").map_or_else(
        || repo_root().join(".venv/moto/bin/moto_server"),
        PathBuf::from,
    );
    let python = moto.with_file_name("python");
    assert!(
        python.is_file(),
        "no Python beside moto at {}: run `bash .ci/setup` (installs moto and botocore into .venv/moto)",
        python.display()
    );
    python
}

/// A session token of temporary credentials, with the characters STS puts in one.
const SESSION_TOKEN: &str = "FwoGZXIvYXdzEJr//////////wEaDHc0+IAM/Test=";

/// What botocore signs for `host:port` and `user` at the time the broker's `token` was signed,
/// with the session token when the broker has one.
fn botocore_token(token: &str, host: &str, port: u16, user: &str) -> String {
    let stamp = query_value(token, "X-Amz-Date");
    let session = if token.contains("X-Amz-Security-Token") {
        SESSION_TOKEN
    } else {
        ""
    };
    let output = Command::new(botocore_python())
        .args([
            "-c",
            BOTOCORE_TOKEN,
            host,
            &port.to_string(),
            user,
            &stamp,
            "us-east-1",
            session,
        ])
        .env_clear()
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "botocore failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A query parameter of a token, decoded.
fn query_value(token: &str, name: &str) -> String {
    let url = url::Url::parse(&format!("https://{token}")).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("{name} in the token"))
        .1
        .into_owned()
}

async fn text_of(broker: &TestBroker, path: &str) -> String {
    let response = broker
        .http
        .get(broker.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.text().await.unwrap()
}

/// The IAM database named by RDS instance `orders-db`.
const ORDERS: &str =
    "[databases.orders]\nauth = \"iam\"\nusername = \"orders_app\"\nrds_instance = \"orders-db\"\n";

/// A broker with two IAM databases at a configured endpoint, and `more`; its AWS credentials
/// are `env`'s.
async fn iam_broker(
    upstream: &Upstream,
    ttl: &'static str,
    more: &str,
    env: Vec<(&'static str, String)>,
) -> TestBroker {
    let databases = "[databases.reports]\nauth = \"iam\"\nusername = \"reporting\"\nhost = \"reports.example.internal\"\nport = 5432\nengine = \"postgres\"\ndbname = \"reports\"\n\
         [databases.shop]\nauth = \"iam\"\nusername = \"shop\"\nhost = \"shop.example.internal\"\nport = 3306\nengine = \"mysql\"\n";
    BrokerOptions {
        databases: format!("{databases}{more}"),
        ttl,
        env,
        ..BrokerOptions::new(upstream.proxy.endpoint())
    }
    .spawn()
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iam_database_is_served_the_token_botocore_signs_with_no_secrets_manager_call() {
    let upstream = Upstream::start().await;
    let instance = upstream
        .rds
        .create_db_instance()
        .db_instance_identifier("orders-db")
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("admin_user")
        .master_user_password("not-used-by-iam-1")
        .enable_iam_database_authentication(true)
        .send()
        .await
        .expect("create_db_instance in moto")
        .db_instance
        .unwrap();
    let endpoint = instance.endpoint().unwrap();
    let (rds_host, rds_port) = (
        endpoint.address().unwrap().to_owned(),
        u16::try_from(endpoint.port().unwrap()).unwrap(),
    );
    let broker = iam_broker(&upstream, "5m", ORDERS, Vec::new()).await;
    broker.wait_ready(Duration::from_secs(10)).await;

    let mut tokens = Vec::new();
    for (db, host, port, user) in [
        ("orders", rds_host.as_str(), rds_port, "orders_app"),
        ("reports", "reports.example.internal", 5432, "reporting"),
        ("shop", "shop.example.internal", 3306, "shop"),
    ] {
        let response = broker.get(db).await;
        assert_eq!(response.status(), 200);
        let etag = response.headers()["etag"].to_str().unwrap().to_owned();
        let body = json_body(response).await;
        assert_eq!(body["auth"], "iam", "{db}");
        assert_eq!(body["username"], user);
        assert_eq!(body["host"], host);
        assert_eq!(body["port"], port);
        assert_eq!(body["secret_arn"], Value::Null);
        let token = body["password"].as_str().unwrap().to_owned();
        assert_eq!(
            token,
            botocore_token(&token, host, port, user),
            "{db}: the broker's token is botocore's, byte for byte"
        );
        assert_eq!(query_value(&token, "X-Amz-Expires"), "900");
        // expires_at is the signing time plus 900 s.
        let signed = humantime::parse_rfc3339(body["fetched_at"].as_str().unwrap()).unwrap();
        let expires = humantime::parse_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
        assert_eq!(
            expires.duration_since(signed).unwrap(),
            Duration::from_mins(15),
            "{db}"
        );
        let version = body["version_id"].as_str().unwrap();
        assert!(version.starts_with("iam-"), "{version}");
        assert_eq!(etag, format!("\"{version}\""));
        tokens.push(token);
    }
    text_of(&broker, "/credentials/orders?format=json").await;

    // The formats carry the token, escaped, with the options IAM auth needs.
    let reports = &tokens[1];
    let uri = url::Url::parse(&text_of(&broker, "/credentials/reports?format=uri").await).unwrap();
    let decoded = percent_encoding::percent_decode_str(uri.password().unwrap())
        .decode_utf8()
        .unwrap();
    assert_eq!(&decoded, reports);
    assert_eq!(uri.query(), Some("sslmode=require"));
    let keyvalue: tokio_postgres::Config = text_of(&broker, "/credentials/reports?format=keyvalue")
        .await
        .parse()
        .unwrap();
    assert_eq!(keyvalue.get_password(), Some(reports.as_bytes()));
    assert_eq!(
        keyvalue.get_ssl_mode(),
        tokio_postgres::config::SslMode::Require
    );
    let jdbc = text_of(&broker, "/credentials/reports?format=jdbc").await;
    let jdbc = url::Url::parse(jdbc.strip_prefix("jdbc:").unwrap()).unwrap();
    let pairs: Vec<(String, String)> = jdbc.query_pairs().into_owned().collect();
    assert!(
        pairs.contains(&("password".into(), reports.clone())),
        "{pairs:?}"
    );
    assert!(
        pairs.contains(&("sslmode".into(), "require".into())),
        "{pairs:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("env");
    std::fs::write(
        &env_file,
        text_of(&broker, "/credentials/reports?format=env").await,
    )
    .unwrap();
    let sourced = Command::new("sh")
        .arg("-c")
        .arg(r#". "$1" && printf '%s\n%s' "$PGSSLMODE" "$PGPASSWORD""#)
        .arg("sh")
        .arg(&env_file)
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(sourced.stdout).unwrap(),
        format!("require\n{reports}")
    );
    let option_file = dir.path().join("my.cnf");
    std::fs::write(
        &option_file,
        text_of(&broker, "/credentials/shop?format=mysql").await,
    )
    .unwrap();
    let defaults = Command::new("my_print_defaults")
        .arg(format!("--defaults-file={}", option_file.display()))
        .arg("client")
        .output()
        .expect("my_print_defaults runs: apt-get install mariadb-client-core");
    let options = String::from_utf8(defaults.stdout).unwrap();
    assert!(
        options
            .lines()
            .any(|l| l == format!("--password={}", tokens[2])),
        "{options}"
    );
    assert!(
        options.lines().any(|l| l == "--ssl-mode=REQUIRED"),
        "{options}"
    );
    assert!(
        options.lines().any(|l| l == "--enable-cleartext-plugin"),
        "{options}"
    );

    // No Secrets Manager call at all; the RDS database was described for its endpoint.
    for operation in ["GetSecretValue", "BatchGetSecretValue", "DescribeSecret"] {
        assert_eq!(upstream.proxy.count(operation), 0, "{operation}");
    }
    let metrics = broker.metrics().await;
    let described = metric(
        &metrics,
        "credential_broker_upstream_requests_total",
        &[("operation", "DescribeDBInstances"), ("outcome", "success")],
    );
    assert!(described >= Some(1.0), "{described:?}");
    assert_eq!(
        metric(
            &metrics,
            "credential_broker_upstream_requests_total",
            &[("operation", "SignAuthToken"), ("outcome", "success")]
        ),
        Some(3.0)
    );

    // Neither a token nor its signature is logged, at trace level.
    let log = broker.log_text();
    for token in &tokens {
        let signature = query_value(token, "X-Amz-Signature");
        assert!(
            !log.contains(token.as_str()) && !log.contains(&signature),
            "a token is in the log"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_signed_again_in_the_background_before_it_is_stale_with_temporary_credentials() {
    let upstream = Upstream::start().await;
    // Temporary credentials: the token carries the session token, where botocore puts it.
    let session = vec![("AWS_SESSION_TOKEN", SESSION_TOKEN.to_owned())];
    let broker = iam_broker(&upstream, "2s", "", session).await;
    broker.wait_ready(Duration::from_secs(10)).await;
    let first = json_body(broker.get("reports").await).await;
    let token = first["password"].as_str().unwrap();
    assert_eq!(query_value(token, "X-Amz-Security-Token"), SESSION_TOKEN);
    let deadline = Instant::now() + Duration::from_secs(8);
    let next = loop {
        let response = broker.get("reports").await;
        assert_eq!(
            response.headers().get("x-credential-broker-stale"),
            None,
            "never served stale"
        );
        let body = json_body(response).await;
        if body["version_id"] != first["version_id"] {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the token was not signed again within 8 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(next["password"], first["password"]);
    assert_eq!(
        next["password"].as_str().unwrap(),
        botocore_token(
            next["password"].as_str().unwrap(),
            "reports.example.internal",
            5432,
            "reporting"
        )
    );
    // Every request was a cache hit: the background task signed it, no request waited.
    let metrics = broker.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "credential_broker_cache_lookups_total",
            &[("db", "reports"), ("result", "miss")]
        ),
        Some(0.0),
        "{metrics}"
    );
}
