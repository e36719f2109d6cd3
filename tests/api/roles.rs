//! Databases in other accounts against real moto: a database with `role_arn` is read with STS
//! `AssumeRole` credentials of that role (moto keeps each account's secrets apart), the role is
//! assumed once and again only before its credentials expire, whatever the number of requests.

use std::time::{Duration, Instant};

use aws_credential_types::provider::SharedCredentialsProvider;
use serde_json::json;

use crate::helpers::*;

const ROLE: &str = "arn:aws:iam::222222222222:role/broker-reader";

/// A Secrets Manager client acting as `role`, assumed through the proxy.
async fn client_as(upstream: &Upstream, role: &str) -> aws_sdk_secretsmanager::Client {
    let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .endpoint_url(upstream.proxy.endpoint())
        .load()
        .await;
    let provider = aws_config::sts::AssumeRoleProvider::builder(role)
        .session_name("seeding")
        .configure(&base)
        .build()
        .await;
    let sdk = base
        .to_builder()
        .credentials_provider(SharedCredentialsProvider::new(provider))
        .build();
    aws_sdk_secretsmanager::Client::new(&sdk)
}

/// Creates the secret `shared/orders` in the role's account (as the role); its password.
async fn seed_in_role_account(upstream: &Upstream) -> String {
    let password = new_password("cross-account");
    client_as(upstream, ROLE)
        .await
        .create_secret()
        .name("shared/orders")
        .secret_string(json!({"username": "app", "password": password}).to_string())
        .send()
        .await
        .expect("create_secret as the assumed role");
    password
}

/// A broker with `cross` read through [`ROLE`] and `own` with its own credentials, both naming
/// the secret `shared/orders`.
async fn role_broker(upstream: &Upstream, ttl: &'static str) -> TestBroker {
    BrokerOptions {
        ttl,
        ..BrokerOptions::new(upstream.proxy.endpoint())
            .database(
                "cross",
                "shared/orders",
                &format!("role_arn = {ROLE:?}\nexternal_id = \"broker-7f3a\""),
            )
            .database("own", "shared/orders", "")
    }
    .spawn()
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_a_role_is_read_in_that_account_and_the_role_is_assumed_once() {
    let upstream = Upstream::start().await;
    let password = seed_in_role_account(&upstream).await;
    let seeded = upstream.proxy.count_action("AssumeRole");
    assert_eq!(seeded, 1, "the seeding client assumed the role once");

    let broker = role_broker(&upstream, "5m").await;
    for _ in 0..20 {
        let body = json_body(broker.get("cross").await).await;
        assert_eq!(body["password"], password.as_str());
        let arn = body["secret_arn"].as_str().unwrap();
        assert!(arn.contains(":222222222222:"), "{arn}");
    }
    // The same name in the broker's own account does not exist.
    let own = broker.get("own").await;
    assert_eq!(own.status(), 502);
    assert_eq!(json_body(own).await["error"]["code"], "secret_not_found");
    assert_eq!(
        upstream.proxy.count_action("AssumeRole") - seeded,
        1,
        "one AssumeRole for the role, not one per request"
    );
    assert!(
        !broker.log_text().contains(&password),
        "the password is not logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_is_assumed_again_before_its_credentials_expire() {
    let upstream = Upstream::start().await;
    seed_in_role_account(&upstream).await;
    // Credentials of 8 s: renewed in their last quarter, so about every 6 s.
    upstream.proxy.set_assumed_lifetime(Duration::from_secs(8));
    let seeded = upstream.proxy.count_action("AssumeRole");
    let broker = role_broker(&upstream, "1s").await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(20);
    while upstream.proxy.count_action("AssumeRole") - seeded < 3 {
        let response = broker.get("cross").await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers().get("x-credential-broker-stale"),
            None,
            "never stale: the credentials are renewed before they expire"
        );
        assert!(
            Instant::now() < deadline,
            "the role was not assumed again within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // At start, then twice more, each once the last credentials are 6 s old: not per request.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(8),
        "3 AssumeRole calls within {took:?}"
    );
    let assumed = upstream.proxy.count_action("AssumeRole") - seeded;
    let reads = upstream.proxy.count("GetSecretValue");
    assert!(
        reads > assumed,
        "{reads} reads for {assumed} AssumeRole calls"
    );
    let metrics = broker.metrics().await;
    let failed = metric(
        &metrics,
        "credential_broker_upstream_requests_total",
        &[("operation", "GetSecretValue"), ("outcome", "error")],
    );
    assert_eq!(failed, None, "no read failed for expired credentials");
    eprintln!(
        "FIGURE roles assume_role_calls={assumed} get_secret_value_calls={reads} seconds={}",
        took.as_secs_f64()
    );
}
