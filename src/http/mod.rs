//! The two routers, as plain functions of state: the credentials API (loopback, token) and the
//! admin listener (health, readiness, metrics). Handlers only; the work happens in the broker.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};

use crate::audit::AuditSink;
use crate::broker::Broker;
use crate::clients::{Client, Clients};
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::sink::Sink;

mod admin;
mod agent;
mod audit;
mod auth;
mod credentials;
mod error;
mod front;
mod hold;
mod observe;
mod route;
mod state;
mod watch;

pub use agent::{AgentApi, agent_api};
pub use auth::PeerUid;
pub use error::ApiError;
pub use front::Front;
use route::{CREDENTIALS_ROUTE, EVENTS_ROUTE, REFRESH_ROUTE, RouterLayer};
use state::ApiState;

/// The credentials API: its router behind [`Front`]. `clients` is `None` only when auth is
/// disabled in the configuration; audit events go to `audit` when there is one (the access
/// counter always counts). The handlers check the caller's scope once the database name is
/// parsed.
pub fn api_service(
    broker: Arc<Broker>,
    clients: Option<Arc<Clients>>,
    audit: Option<Arc<AuditSink>>,
    metrics: Metrics,
    limits: Limits,
) -> Front {
    let clients_count = clients.as_deref().map_or(0, Clients::len);
    let state = Arc::new(ApiState {
        audit: audit::Audit::new(audit, &metrics, &broker, clients_count),
        broker,
        clients,
        anonymous: Client::anonymous(),
        limits,
        in_progress: AtomicUsize::new(0),
        waiters: AtomicUsize::new(0),
        metrics,
    });
    let router = Router::new()
        .route(CREDENTIALS_ROUTE, get(credentials::get))
        .route(REFRESH_ROUTE, post(credentials::refresh))
        .route(EVENTS_ROUTE, get(watch::events))
        // One body limit, `server.max_body_bytes`, applied by `Front` to the bytes received.
        .layer(DefaultBodyLimit::disable())
        .fallback(route::not_found)
        .method_not_allowed_fallback(route::method_not_allowed)
        .with_state(Arc::clone(&state))
        // After every route and fallback, so that it wraps them all.
        .layer(middleware::from_fn_with_state(
            RouterLayer::Api(Arc::clone(&state)),
            route::routed,
        ));
    Front::new(state, router)
}

/// The admin listener: `/healthz`, `/readyz` (which waits for `sinks` too), `/status`,
/// `/metrics`.
pub fn admin_router(broker: Arc<Broker>, sinks: Arc<[Arc<Sink>]>, metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/status", get(admin::status))
        .with_state(admin::ReadyState { broker, sinks })
        .route("/metrics", get(admin::metrics).with_state(metrics.clone()))
        .fallback(route::not_found)
        .method_not_allowed_fallback(route::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            RouterLayer::Admin(metrics),
            route::routed,
        ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::testing::{PASSWORD, TestBroker};
    use crate::clients::Clients;
    use crate::credentials::DbName;
    use axum::body::Body;
    use axum::extract::{MatchedPath, Request};
    use axum::http::{Method, StatusCode, header};
    use axum::response::Response;
    use http_body_util::BodyExt;
    use std::time::Duration;
    use tower::ServiceExt;

    const TOKEN: &str = "unit-test-token-0123456789";
    const ORDERS_TOKEN: &str = "unit-test-orders-token-0123";

    fn app() -> (Front, Router) {
        app_with_audit(None)
    }

    /// The test API with its audit events going to `audit`.
    fn app_with_audit(audit: Option<Arc<AuditSink>>) -> (Front, Router) {
        let metrics = Metrics::new();
        let (broker, _) = TestBroker {
            metrics: metrics.clone(),
            ..TestBroker::default()
        }
        .database("orders", "good")
        .database("broken", "broken")
        .database("slow", "slow")
        .build();
        (
            api_service(
                Arc::clone(&broker),
                Some(Arc::new(Clients::new(
                    vec![
                        crate::config::ClientConfig {
                            name: "all".into(),
                            token: Some(crate::config::TokenConfig {
                                source: crate::config::TokenSource::Env("UNUSED".into()),
                                value: secrecy::SecretString::from(TOKEN),
                            }),
                            unix_uids: Vec::new(),
                            scope: crate::config::Scope::All,
                            aws_agent_secrets: crate::config::SecretPatterns::default(),
                        },
                        crate::config::ClientConfig {
                            name: "orders-only".into(),
                            token: Some(crate::config::TokenConfig {
                                source: crate::config::TokenSource::Env("UNUSED".into()),
                                value: secrecy::SecretString::from(ORDERS_TOKEN),
                            }),
                            unix_uids: Vec::new(),
                            scope: crate::config::Scope::Only(
                                [DbName::parse("orders").unwrap()].into(),
                            ),
                            aws_agent_secrets: crate::config::SecretPatterns::default(),
                        },
                    ],
                    Duration::from_secs(5),
                    &metrics,
                ))),
                audit,
                metrics.clone(),
                Limits {
                    max_header_bytes: 1024,
                    max_body_bytes: 64,
                    ..Limits::default()
                },
            ),
            admin_router(broker, Arc::new([]), metrics),
        )
    }

    async fn call<S>(
        router: &S,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, axum::http::HeaderMap, serde_json::Value)
    where
        S: tower::Service<Request, Response = Response, Error = std::convert::Infallible> + Clone,
    {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, headers, body)
    }

    /// The admin router's `/metrics` page.
    async fn metrics_text(admin: &Router) -> String {
        let response = admin
            .clone()
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    const AUTH: (&str, &str) = ("authorization", "Bearer unit-test-token-0123456789");

    #[tokio::test]
    async fn credentials_are_served_with_no_store_and_etag() {
        let (api, _) = app();
        let (status, headers, body) = call(&api, Method::GET, "/credentials/orders", &[AUTH]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(headers[header::ETAG], "\"v1\"");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(body["password"], PASSWORD);
        assert_eq!(body["secret_arn"], "arn:test:good");
    }

    #[tokio::test]
    async fn missing_wrong_or_non_bearer_token_is_unauthorized() {
        let (api, _) = app();
        for headers in [
            vec![],
            vec![("authorization", "Bearer wrong-token-0123456789abc")],
            vec![(
                "authorization",
                "Basic dW5pdC10ZXN0LXRva2VuLTAxMjM0NTY3ODk=",
            )],
            vec![("authorization", "Bearer")],
        ] {
            let (status, headers, body) =
                call(&api, Method::GET, "/credentials/orders", &headers).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
        let (status, _, _) = call(
            &api,
            Method::GET,
            "/credentials/orders",
            &[("authorization", "bearer unit-test-token-0123456789")],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "the scheme is case-insensitive");
    }

    #[tokio::test]
    async fn a_scoped_client_gets_403_outside_its_databases_without_a_hint_of_existence() {
        let (api, admin) = app();
        let orders = ("authorization", "Bearer unit-test-orders-token-0123");
        let (status, _, _) = call(&api, Method::GET, "/credentials/orders", &[orders]).await;
        assert_eq!(status, StatusCode::OK);
        for uri in [
            "/credentials/broken",
            "/credentials/no-such-db",
            "/credentials/broken/refresh",
        ] {
            let method = if uri.ends_with("refresh") {
                Method::POST
            } else {
                Method::GET
            };
            let (status, headers, body) = call(&api, method, uri, &[orders]).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{uri}");
            assert_eq!(body["error"]["code"], "forbidden");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
        let text = metrics_text(&admin).await;
        crate::metrics::assert_series(
            &text,
            crate::metrics::ACCESS_TOTAL,
            &[
                r#"credential_broker_access_total{client="orders-only",db="orders",result="ok"} 1"#,
                r#"credential_broker_access_total{client="orders-only",db="broken",result="forbidden"} 2"#,
                r#"credential_broker_access_total{client="orders-only",db="other",result="forbidden"} 1"#,
            ],
        );
    }

    #[tokio::test]
    async fn the_access_counter_keeps_each_client_and_answer_apart() {
        let (api, admin) = app();
        let all = ("authorization", format!("Bearer {TOKEN}"));
        let orders = ("authorization", "Bearer unit-test-orders-token-0123");
        let all = (all.0, all.1.as_str());
        for _ in 0..3 {
            let (status, _, _) = call(&api, Method::GET, "/credentials/orders", &[all]).await;
            assert_eq!(status, StatusCode::OK);
        }
        let (status, headers, _) = call(&api, Method::GET, "/credentials/orders", &[orders]).await;
        assert_eq!(status, StatusCode::OK);
        let etag = headers[header::ETAG].to_str().unwrap().to_owned();
        for _ in 0..2 {
            let (status, _, _) = call(
                &api,
                Method::GET,
                "/credentials/orders",
                &[orders, ("if-none-match", &etag)],
            )
            .await;
            assert_eq!(status, StatusCode::NOT_MODIFIED);
        }
        let (status, _, _) = call(&api, Method::GET, "/credentials/nope", &[all]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        crate::metrics::assert_series(
            &metrics_text(&admin).await,
            crate::metrics::ACCESS_TOTAL,
            &[
                r#"credential_broker_access_total{client="all",db="orders",result="ok"} 3"#,
                r#"credential_broker_access_total{client="orders-only",db="orders",result="ok"} 1"#,
                r#"credential_broker_access_total{client="orders-only",db="orders",result="not_modified"} 2"#,
                r#"credential_broker_access_total{client="all",db="other",result="unknown_database"} 1"#,
            ],
        );
    }

    #[tokio::test]
    async fn the_audit_trail_echoes_database_names_only_when_they_are_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = AuditSink::open(&crate::config::AuditConfig::File(path.clone()))
            .unwrap()
            .unwrap();
        let (api, _) = app_with_audit(Some(Arc::clone(&sink)));
        let all = format!("Bearer {TOKEN}");
        let all = [("authorization", all.as_str())];
        for (uri, headers, status) in [
            ("/credentials/orders", &all[..], StatusCode::OK),
            (
                "/credentials/not-configured",
                &all[..],
                StatusCode::NOT_FOUND,
            ),
            ("/credentials/a%22b", &[][..], StatusCode::UNAUTHORIZED),
        ] {
            assert_eq!(
                call(&api, Method::GET, uri, headers).await.0,
                status,
                "{uri}"
            );
        }
        sink.flush();
        let dbs: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["db"].to_string())
            .collect();
        assert_eq!(
            dbs,
            [r#""orders""#, r#""not-configured""#, r#""(invalid)""#]
        );
    }

    #[tokio::test]
    async fn forwarded_requests_are_rejected_even_with_a_token() {
        let (api, _) = app();
        let (status, _, body) = call(
            &api,
            Method::GET,
            "/credentials/orders",
            &[AUTH, ("x-forwarded-for", "10.0.0.1")],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "forwarded_request_rejected");
    }

    #[tokio::test]
    async fn errors_have_stable_codes_and_no_secret() {
        let (api, _) = app();
        let cases = [
            (
                Method::GET,
                "/credentials/nope",
                StatusCode::NOT_FOUND,
                "unknown_database",
            ),
            (
                Method::GET,
                "/credentials/a%20b",
                StatusCode::BAD_REQUEST,
                "invalid_database_name",
            ),
            (
                Method::GET,
                "/credentials/..",
                StatusCode::BAD_REQUEST,
                "invalid_database_name",
            ),
            (
                Method::GET,
                "/credentials/broken",
                StatusCode::BAD_GATEWAY,
                "malformed_secret",
            ),
            (
                Method::GET,
                "/credentials/slow",
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
            ),
            (
                Method::DELETE,
                "/credentials/orders",
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
            ),
            (
                Method::GET,
                "/credentials/orders/refresh",
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
            ),
            (
                Method::GET,
                "/elsewhere",
                StatusCode::NOT_FOUND,
                "not_found",
            ),
        ];
        for (method, uri, expected_status, code) in cases {
            let (status, headers, body) = call(&api, method.clone(), uri, &[AUTH]).await;
            assert_eq!(status, expected_status, "{method} {uri}");
            assert_eq!(body["error"]["code"], code, "{method} {uri}");
            assert!(body["error"]["message"].is_string());
            assert_eq!(headers[header::CONTENT_TYPE], "application/json");
            assert!(!body.to_string().contains(PASSWORD));
        }
    }

    #[tokio::test]
    async fn refresh_returns_the_same_body_shape() {
        let (api, _) = app();
        let (status, _, body) =
            call(&api, Method::POST, "/credentials/orders/refresh", &[AUTH]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["username"], "app");
        assert_eq!(body["db"], "orders");
    }

    #[tokio::test]
    async fn a_refresh_body_is_the_json_object_or_nothing() {
        let (api, _) = app();
        for (body, expected) in [
            ("", StatusCode::OK),
            (r#"{"version_id":"v-0"}"#, StatusCode::OK),
            ("\r", StatusCode::BAD_REQUEST),
            (" \n", StatusCode::BAD_REQUEST),
            ("{}", StatusCode::BAD_REQUEST),
        ] {
            let request = Request::post("/credentials/orders/refresh")
                .header(AUTH.0, AUTH.1)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap();
            let response = api.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), expected, "{body:?}");
        }
    }

    #[tokio::test]
    async fn readiness_follows_fetches_and_metrics_use_route_templates() {
        let (api, admin) = app();
        let (status, _, body) = call(&admin, Method::GET, "/readyz", &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body["not_ready"],
            serde_json::json!(["broken", "orders", "slow"])
        );
        call(&api, Method::GET, "/credentials/orders", &[AUTH]).await;
        let (_, _, body) = call(&admin, Method::GET, "/readyz", &[]).await;
        assert_eq!(body["not_ready"], serde_json::json!(["broken", "slow"]));

        let text = metrics_text(&admin).await;
        assert!(text.contains(r#"credential_broker_http_requests_total{method="GET",route="/credentials/{db}",status="200"} 1"#), "{text}");
        assert!(
            !text.contains("/credentials/orders"),
            "raw paths never become labels"
        );
    }

    #[tokio::test]
    async fn plain_reads_and_routed_reads_give_the_same_answers() {
        let (api, admin) = app();
        let orders = ("authorization", "Bearer unit-test-orders-token-0123");
        // Each pair: a request the front layer answers itself, and the same request spelt so
        // that it goes through the router (percent-encoded name or format).
        let pairs = [
            ("/credentials/orders", "/credentials/%6Frders", vec![AUTH]),
            (
                "/credentials/orders?format=uri",
                "/credentials/orders?format=%75ri",
                vec![AUTH],
            ),
            (
                "/credentials/orders?format=nope",
                "/credentials/orders?format=no%70e",
                vec![AUTH],
            ),
            ("/credentials/nope", "/credentials/%6Eope", vec![AUTH]),
            ("/credentials/broken", "/credentials/%62roken", vec![orders]),
            (
                "/credentials/orders",
                "/credentials/%6Frders",
                vec![AUTH, ("if-none-match", "\"v1\"")],
            ),
        ];
        for (plain, routed, headers) in pairs {
            assert!(
                credentials::plain_read(&Method::GET, &plain.parse().unwrap()).is_some(),
                "{plain}"
            );
            assert!(
                credentials::plain_read(&Method::GET, &routed.parse().unwrap()).is_none(),
                "{routed}"
            );
            let (status, mut plain_headers, plain_body) =
                call(&api, Method::GET, plain, &headers).await;
            let (routed_status, mut routed_headers, routed_body) =
                call(&api, Method::GET, routed, &headers).await;
            assert_eq!(status, routed_status, "{plain} vs {routed}");
            assert_eq!(plain_body, routed_body, "{plain} vs {routed}");
            // The router sets Content-Length itself; hyper sets it from the body otherwise.
            for headers in [&mut plain_headers, &mut routed_headers] {
                headers.remove(header::AGE);
                headers.remove(header::CONTENT_LENGTH);
            }
            assert_eq!(plain_headers, routed_headers, "{plain} vs {routed}");
        }
        let text = metrics_text(&admin).await;
        crate::metrics::assert_series(
            &text,
            crate::metrics::HTTP_REQUESTS_TOTAL,
            &[
                r#"credential_broker_http_requests_total{method="GET",route="/credentials/{db}",status="200"} 2"#,
                r#"credential_broker_http_requests_total{method="GET",route="/credentials/{db}",status="304"} 2"#,
                r#"credential_broker_http_requests_total{method="GET",route="/credentials/{db}",status="404"} 2"#,
            ],
        );
    }

    #[tokio::test]
    async fn plain_reads_are_reads_the_router_matches_to_the_credentials_route() {
        let router: Router = Router::new()
            .route(CREDENTIALS_ROUTE, get(|| async {}))
            .route(REFRESH_ROUTE, post(|| async {}))
            .route_layer(axum::middleware::from_fn(
                |request: Request, next: axum::middleware::Next| async move {
                    let matched = request.extensions().get::<MatchedPath>().cloned();
                    let mut response = next.run(request).await;
                    response.extensions_mut().insert(matched);
                    response
                },
            ));
        let mut plain = 0;
        for path in [
            "/credentials/orders",
            "/credentials/a%2Fb",
            "/credentials/orders/refresh",
            "/credentials/orders/",
            "/credentials/orders/other",
            "/credentials/",
            "/credentials//refresh",
            "/credentials",
            "//credentials/orders",
            "/credentials/orders/refresh/",
            "/metrics",
        ] {
            let response = router
                .clone()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let matched = response
                .extensions()
                .get::<Option<MatchedPath>>()
                .cloned()
                .flatten();
            let matched = matched.as_ref().map(MatchedPath::as_str);
            if credentials::plain_read(&Method::GET, &path.parse().unwrap()).is_some() {
                plain += 1;
                assert_eq!(matched, Some(CREDENTIALS_ROUTE), "{path}");
            }
            // The audit trail's database segment is found wherever the router matched a route.
            if let Some(template) = matched {
                assert!(route::raw_db(path, template).is_some(), "{path}");
            }
        }
        assert_eq!(plain, 1, "only /credentials/orders is a plain read");
    }

    #[tokio::test]
    async fn refused_requests_are_labelled_by_the_route_the_router_matched() {
        let (api, admin) = app();
        for (method, path) in [
            (Method::GET, "/credentials/orders"),
            (Method::POST, "/credentials/orders/refresh"),
            (Method::PUT, "/credentials/orders"),
            (Method::GET, "/nowhere"),
        ] {
            let (status, _, body) = call(&api, method, path, &[]).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
        let text = metrics_text(&admin).await;
        crate::metrics::assert_series(
            &text,
            crate::metrics::HTTP_REQUESTS_TOTAL,
            &[
                r#"credential_broker_http_requests_total{method="GET",route="/credentials/{db}",status="401"} 1"#,
                r#"credential_broker_http_requests_total{method="POST",route="/credentials/{db}/refresh",status="401"} 1"#,
                r#"credential_broker_http_requests_total{method="PUT",route="/credentials/{db}",status="401"} 1"#,
                r#"credential_broker_http_requests_total{method="GET",route="unmatched",status="401"} 1"#,
            ],
        );
    }
}
