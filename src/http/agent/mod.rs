//! The AWS Secrets Manager Agent's API on its own listener, so that its callers switch by
//! changing the binary: `GET /secretsmanager/get?secretId=…`, `GET {path_prefix}{secretId}` and
//! `GET /ping`, checked in the agent's order (ping; proxied; token; method; route) and answered
//! with its statuses and bodies, through the broker's cache for secrets by id.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use subtle::ConstantTimeEq;
use tracing::debug;

use super::auth::is_proxied;
use super::observe::finish;
use crate::audit::{AuditSink, Event};
use crate::broker::{Broker, SecretError, ServedSecret};
use crate::config::{AgentCompatConfig, SecretPatterns};
use crate::metrics::Metrics;

mod request;

use request::{SecretRead, Style};

/// The route templates requests of this API are counted under.
const PING_ROUTE: &str = "/ping";
const QUERY_ROUTE: &str = "/secretsmanager/get";

/// What the agent API's handler needs.
struct AgentState {
    broker: Arc<Broker>,
    metrics: Metrics,
    path_prefix: String,
    /// The path style's route template, `{path_prefix}{secretId}`.
    path_route: String,
    ssrf_headers: Vec<String>,
    token: SecretString,
    secrets: SecretPatterns,
    request_timeout: std::time::Duration,
    audit: Option<Arc<AuditSink>>,
}

/// The agent's API as a router of one handler (its routing is the agent's, by prefix).
pub fn agent_router(
    broker: Arc<Broker>,
    config: &AgentCompatConfig,
    metrics: Metrics,
    request_timeout: std::time::Duration,
    audit: Option<Arc<AuditSink>>,
) -> Router {
    let state = Arc::new(AgentState {
        broker,
        metrics,
        path_route: format!("{}{{secretId}}", config.path_prefix),
        path_prefix: config.path_prefix.clone(),
        ssrf_headers: config.ssrf_headers.clone(),
        token: config.token.clone(),
        secrets: config.secrets.clone(),
        request_timeout,
        audit,
    });
    Router::new().fallback(handle).with_state(state)
}

/// Answers one request and counts it by the route it took.
async fn handle(State(state): State<Arc<AgentState>>, request: Request) -> Response {
    let started = Instant::now();
    let (request, _) = request.into_parts();
    let (route, response) = answer(&state, &request).await;
    let method = request.method;
    finish(&state.metrics, route, &method, started, response)
}

/// The answer and its route template, in the agent's order of checks.
async fn answer<'a>(state: &'a AgentState, request: &Parts) -> (Option<&'a str>, Response) {
    let path = request.uri.path();
    let style = if path == PING_ROUTE {
        // No token: a health check.
        let response = if request.method == Method::GET {
            text(StatusCode::OK, "healthy")
        } else {
            not_allowed()
        };
        return (Some(PING_ROUTE), response);
    } else if path == QUERY_ROUTE {
        Some((Style::Query, QUERY_ROUTE, ""))
    } else {
        path.strip_prefix(&state.path_prefix)
            .map(|id| (Style::Path, state.path_route.as_str(), id))
    };
    let route = style.map(|(_, route, _)| route);
    let headers = &request.headers;
    if is_proxied(headers) {
        return (route, text(StatusCode::BAD_REQUEST, "Forwarded"));
    }
    if !state.token_matches(headers) {
        return (route, text(StatusCode::FORBIDDEN, "Bad Token"));
    }
    if request.method != Method::GET {
        return (route, not_allowed());
    }
    let Some((style, route, path_id)) = style else {
        return (None, text(StatusCode::NOT_FOUND, "Not found"));
    };
    let read = match request::read(style, path_id, request.uri.query()) {
        Ok(read) => read,
        Err(bad) => return (Some(route), text(StatusCode::BAD_REQUEST, bad.text())),
    };
    (Some(route), state.serve(read).await)
}

impl AgentState {
    /// Whether the first value of the first configured header present is the token.
    fn token_matches(&self, headers: &HeaderMap) -> bool {
        let expected = self.token.expose_secret().as_bytes();
        self.ssrf_headers
            .iter()
            .find_map(|name| headers.get(name.as_str()))
            .is_some_and(|presented| bool::from(presented.as_bytes().ct_eq(expected)))
    }

    /// The secret `read` names, if the configuration allows it, within the request timeout;
    /// recorded in the audit trail.
    async fn serve(&self, read: SecretRead) -> Response {
        let (response, result, version_id) = if self.secrets.allows(&read.key.secret_id) {
            let fetch = self.broker.get_secret(&read.key, read.refresh_now);
            match tokio::time::timeout(self.request_timeout, fetch).await {
                Ok(Ok(served)) => (found(&served), Cow::Borrowed("ok"), Some(served)),
                Ok(Err(err)) => (failed(&err), result_of(&err), None),
                Err(_) => (
                    refusal(StatusCode::GATEWAY_TIMEOUT, "TimeoutError", "Timeout"),
                    Cow::Borrowed("request_timeout"),
                    None,
                ),
            }
        } else {
            debug!("a secret outside compat.aws_agent.secrets was asked for");
            let response = refusal(
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
                "credential-broker: this secret is not in compat.aws_agent.secrets",
            );
            (response, Cow::Borrowed("forbidden"), None)
        };
        if let Some(audit) = &self.audit {
            audit.write(&Event {
                client: AUDIT_CLIENT,
                db: "",
                action: if read.refresh_now { "refresh" } else { "read" },
                result: &result,
                version_id: version_id
                    .as_ref()
                    .map_or("", |served| &served.secret.secret.version_id),
                secret_id: Some(&read.key.secret_id),
            });
        }
        response
    }
}

/// The client name of the agent API's audit events: its one token names no configured client.
const AUDIT_CLIENT: &str = "aws_agent";

/// The audit result of a failure: the store's code for a refusal, else the broker's words.
fn result_of(err: &SecretError) -> Cow<'static, str> {
    match err {
        SecretError::Refused(refusal) => Cow::Owned(refusal.code().to_owned()),
        SecretError::Timeout(_) => Cow::Borrowed("upstream_timeout"),
        SecretError::Unavailable(_) | SecretError::Malformed(_) => Cow::Borrowed("upstream_error"),
    }
}

/// A 200 with the secret's `GetSecretValue` JSON; a stale value says so in a header.
fn found(served: &ServedSecret) -> Response {
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Body::from(served.secret.agent_json().clone()),
    )
        .into_response();
    if served.stale {
        response.headers_mut().insert(
            "x-credential-broker-stale",
            HeaderValue::from_static("true"),
        );
    }
    response
}

/// A failure as the agent answers it: the store's "no" with its code and message (400, as
/// AWS answers them), a timeout 504, anything else 502.
fn failed(err: &SecretError) -> Response {
    match err {
        SecretError::Refused(refusal) => {
            self::refusal(StatusCode::BAD_REQUEST, refusal.code(), refusal.message())
        }
        SecretError::Timeout(_) => refusal(StatusCode::GATEWAY_TIMEOUT, "TimeoutError", "Timeout"),
        SecretError::Unavailable(_) => {
            refusal(StatusCode::BAD_GATEWAY, "ConnectionError", "Read Error")
        }
        SecretError::Malformed(_) => {
            refusal(StatusCode::BAD_GATEWAY, "ConnectionError", "Response Error")
        }
    }
}

/// An error in the agent's JSON shape, `{"__type": …, "message": …}`, always valid JSON.
fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "__type": code, "message": message })),
    )
        .into_response()
}

/// 405 `Not allowed`, with the one method served (`Allow`, as RFC 9110 asks).
fn not_allowed() -> Response {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "Not allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET"));
    response
}

/// A plain-text answer, as the agent gives for its own refusals.
fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body.into(),
    )
        .into_response()
}
