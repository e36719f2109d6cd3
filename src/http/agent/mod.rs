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
use crate::clients::{Client, Clients};
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
    /// The broker's clients, whose own tokens open the API to their `aws_agent_secrets`.
    clients: Option<Arc<Clients>>,
}

/// Who called: the holder of the agent's token, or a configured client by its own token.
enum AgentCaller {
    Agent,
    Client(Arc<Client>),
}

/// The agent's API as a router of one handler (its routing is the agent's, by prefix).
pub fn agent_router(
    broker: Arc<Broker>,
    config: &AgentCompatConfig,
    metrics: Metrics,
    request_timeout: std::time::Duration,
    audit: Option<Arc<AuditSink>>,
    clients: Option<Arc<Clients>>,
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
        clients,
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
    let Some(caller) = state.caller(headers) else {
        return (route, text(StatusCode::FORBIDDEN, "Bad Token"));
    };
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
    (Some(route), state.serve(&caller, read).await)
}

impl AgentState {
    /// Who the first value of the first configured header present names: the agent's token,
    /// or a configured client's.
    fn caller(&self, headers: &HeaderMap) -> Option<AgentCaller> {
        let presented = self
            .ssrf_headers
            .iter()
            .find_map(|name| headers.get(name.as_str()))?;
        if bool::from(
            presented
                .as_bytes()
                .ct_eq(self.token.expose_secret().as_bytes()),
        ) {
            return Some(AgentCaller::Agent);
        }
        let client = self.clients.as_ref()?.by_token(presented.to_str().ok()?)?;
        Some(AgentCaller::Client(client))
    }

    /// The secret `read` names, if the configuration allows it, within the request timeout;
    /// recorded in the audit trail.
    async fn serve(&self, caller: &AgentCaller, read: SecretRead) -> Response {
        let (secrets, client) = match caller {
            AgentCaller::Agent => (&self.secrets, AUDIT_CLIENT),
            AgentCaller::Client(client) => (&client.aws_agent_secrets, client.name.as_str()),
        };
        let (response, result, version_id) = if secrets.allows(&read.key.secret_id) {
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
            debug!(client, "a secret outside the caller's list was asked for");
            let response = refusal(
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
                "credential-broker: this secret is not in this caller's list (compat.aws_agent.secrets, or clients.NAME.aws_agent_secrets)",
            );
            (response, Cow::Borrowed("forbidden"), None)
        };
        if let Some(audit) = &self.audit {
            audit.write(&Event {
                client,
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

/// The client name of the agent API's audit events for the agent's own token, which names no
/// configured client.
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
