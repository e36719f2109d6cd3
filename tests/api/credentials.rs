//! Serving credentials: body, headers, secret shapes, rotation, malformed secrets.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{BrokerOptions, Upstream, json_body, new_password};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_returns_the_documented_body_and_headers() {
    let upstream = Upstream::start().await;
    let password = new_password("body");
    let arn = upstream
        .create_secret(
            "prod/orders",
            &json!({"username": "app", "password": password, "host": "db.internal", "port": 5432,
                    "dbname": "orders", "engine": "postgres"}),
        )
        .await;
    let broker = BrokerOptions::new(upstream.proxy.endpoint())
        .database("orders", "prod/orders", "")
        .spawn()
        .await;

    let response = broker.get("orders").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["age"], "0");
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let body = json_body(response).await;
    assert_eq!(body["db"], "orders");
    assert_eq!(body["username"], "app");
    assert_eq!(body["password"], password.as_str());
    assert_eq!(body["host"], "db.internal");
    assert_eq!(body["port"], 5432);
    assert_eq!(body["dbname"], "orders");
    assert_eq!(body["engine"], "postgres");
    assert_eq!(body["secret_arn"], arn.as_str());
    let version = body["version_id"].as_str().unwrap();
    assert_eq!(etag, format!("\"{version}\""));
    humantime::parse_rfc3339(body["fetched_at"].as_str().unwrap()).expect("RFC 3339");
    assert_eq!(body["stale"], false);
    assert_eq!(body["auth"], "password");
    assert_eq!(body["expires_at"], serde_json::Value::Null);
    assert_eq!(body["region"], "us-east-1");
    assert_eq!(
        body.as_object().unwrap().len(),
        17,
        "exactly the documented fields: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rds_managed_secret_takes_host_port_and_dbname_from_config() {
    let upstream = Upstream::start().await;
    let password = new_password("rds");
    let name = "rds!db-8fcc3794-ab80-4353-86fb-641f99a65793";
    upstream
        .create_secret(name, &json!({"username": "admin", "password": password}))
        .await;
    let broker = BrokerOptions::new(upstream.proxy.endpoint())
        .database(
            "orders",
            name,
            "host = \"orders.abc123.eu-central-1.rds.amazonaws.com\"\nport = 5432\ndbname = \"orders\"\nengine = \"postgres\"",
        )
        .spawn()
        .await;

    let body = json_body(broker.get("orders").await).await;
    assert_eq!(body["username"], "admin");
    assert_eq!(body["password"], password.as_str());
    assert_eq!(body["host"], "orders.abc123.eu-central-1.rds.amazonaws.com");
    assert_eq!(body["port"], 5432);
    assert_eq!(body["dbname"], "orders");
    assert_eq!(body["engine"], "postgres");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_binary_and_secrets_named_by_arn_are_served() {
    let upstream = Upstream::start().await;
    let password = new_password("binary");
    let secret = json!({"username": "bin", "password": password, "port": "6432"}).to_string();
    let out = upstream
        .sm
        .create_secret()
        .name("binary/secret")
        .secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(
            secret.into_bytes(),
        ))
        .send()
        .await
        .unwrap();
    let arn = out.arn.unwrap();
    let broker = BrokerOptions::new(upstream.proxy.endpoint())
        .database("bin", "binary/secret", "")
        .database("byarn", &arn, "")
        .spawn()
        .await;

    for db in ["bin", "byarn"] {
        let body = json_body(broker.get(db).await).await;
        assert_eq!(body["username"], "bin", "{db}");
        assert_eq!(body["password"], password.as_str(), "{db}");
        assert_eq!(
            body["port"], 6432,
            "port given as a string in the secret: {db}"
        );
        assert_eq!(body["secret_arn"], arn.as_str(), "{db}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_is_served_after_refresh() {
    let upstream = Upstream::start().await;
    let old = new_password("old");
    let new = new_password("new");
    upstream
        .create_secret("rotating", &json!({"username": "app", "password": old}))
        .await;
    let broker = BrokerOptions::new(upstream.proxy.endpoint())
        .database("orders", "rotating", "")
        .spawn()
        .await;
    let before = json_body(broker.get("orders").await).await;
    assert_eq!(before["password"], old.as_str());

    let new_version = upstream
        .rotate("rotating", &json!({"username": "app", "password": new}))
        .await;
    let cached = json_body(broker.get("orders").await).await;
    assert_eq!(
        cached["password"],
        old.as_str(),
        "a GET within the TTL is served from cache"
    );

    // Past the refresh minimum interval (1 s) since the warm-up fetch.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = broker.refresh("orders").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["etag"],
        format!("\"{new_version}\"").as_str()
    );
    let refreshed = json_body(response).await;
    assert_eq!(refreshed["password"], new.as_str());
    assert_eq!(refreshed["version_id"], new_version.as_str());
    let after = json_body(broker.get("orders").await).await;
    assert_eq!(
        after["password"],
        new.as_str(),
        "the refresh replaced the cached copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_secret_is_502_without_its_content_in_body_or_logs() {
    let upstream = Upstream::start().await;
    let password = new_password("malformed");
    upstream
        .create_secret_string("broken", &format!("user=app password={password}"))
        .await;
    upstream
        .create_secret("nopassword", &json!({"username": "app", "token": password}))
        .await;
    let broker = BrokerOptions::new(upstream.proxy.endpoint())
        .database("broken", "broken", "")
        .database("nopassword", "nopassword", "")
        .spawn()
        .await;

    for db in ["broken", "nopassword"] {
        let response = broker.get(db).await;
        assert_eq!(response.status(), 502);
        let text = response.text().await.unwrap();
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["error"]["code"], "malformed_secret");
        assert!(body["error"]["message"].as_str().unwrap().contains(db));
        assert!(
            !text.contains("Pw-malformed"),
            "secret content leaked: {text}"
        );
    }
    assert!(
        broker.log_text().contains("is missing"),
        "the reason is logged"
    );
    broker.assert_log_has_no_password();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_secret_is_502_secret_not_found() {
    let upstream = Upstream::start().await;
    let broker = BrokerOptions::new(upstream.proxy.endpoint())
        .database("ghost", "does/not/exist", "")
        .cold()
        .spawn()
        .await;
    let response = broker.get("ghost").await;
    assert_eq!(response.status(), 502);
    let body = json_body(response).await;
    assert_eq!(body["error"]["code"], "secret_not_found");
}
