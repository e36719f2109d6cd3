//! Request guards: bearer token, X-Forwarded-For, unknown and invalid database names.

use serde_json::json;

use crate::helpers::{BrokerOptions, TOKEN, Upstream, json_body, new_password};

async fn broker_with_one_db(upstream: &Upstream) -> crate::helpers::TestBroker {
    let password = new_password("auth");
    upstream
        .create_secret("s", &json!({"username": "u", "password": password}))
        .await;
    let broker = BrokerOptions::new(upstream.proxy.endpoint())
        .database("orders", "s", "")
        .spawn()
        .await;
    broker.wait_ready(std::time::Duration::from_secs(10)).await;
    broker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_or_with_a_wrong_token_get_401() {
    let upstream = Upstream::start().await;
    let broker = broker_with_one_db(&upstream).await;
    let url = broker.url("/credentials/orders");

    let none = broker.send(broker.http.get(&url)).await;
    let wrong = broker
        .send(
            broker
                .http
                .get(&url)
                .bearer_auth("not-the-token-0000000000"),
        )
        .await;
    let prefix = broker
        .send(broker.http.get(&url).bearer_auth(&TOKEN[..TOKEN.len() - 1]))
        .await;
    for response in [none, wrong, prefix] {
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body = json_body(response).await;
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let refresh = broker
        .send(broker.http.post(broker.url("/credentials/orders/refresh")))
        .await;
    assert_eq!(refresh.status(), 401);
    assert_eq!(
        broker.get("orders").await.status(),
        200,
        "the right token still works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_x_forwarded_for_get_400() {
    let upstream = Upstream::start().await;
    let broker = broker_with_one_db(&upstream).await;
    let response = broker
        .send(
            broker
                .http
                .get(broker.url("/credentials/orders"))
                .bearer_auth(TOKEN)
                .header("X-Forwarded-For", "203.0.113.7"),
        )
        .await;
    assert_eq!(response.status(), 400);
    let body = json_body(response).await;
    assert_eq!(body["error"]["code"], "forwarded_request_rejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_invalid_database_names_never_reach_secrets_manager() {
    let upstream = Upstream::start().await;
    let broker = broker_with_one_db(&upstream).await;
    let calls_after_warmup = upstream.proxy.count("GetSecretValue");
    assert_eq!(
        calls_after_warmup, 1,
        "warm-up fetched the one database once"
    );

    let response = broker.get("not-configured").await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        json_body(response).await["error"]["code"],
        "unknown_database"
    );
    let response = broker.refresh("not-configured").await;
    assert_eq!(response.status(), 404);
    for bad in ["a%20b", "%2e%2e%2fetc", "orders%00", &"x".repeat(65)] {
        let response = broker.get(bad).await;
        assert_eq!(response.status(), 400, "{bad}");
        assert_eq!(
            json_body(response).await["error"]["code"],
            "invalid_database_name"
        );
    }
    assert_eq!(upstream.proxy.count("GetSecretValue"), calls_after_warmup);
}
