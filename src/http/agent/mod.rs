//! The AWS Secrets Manager Agent's API on its own listener, so that its callers switch by
//! changing the binary: `GET /secretsmanager/get?secretId=…`, `GET {path_prefix}{secretId}` and
//! `GET /ping`, checked in the agent's order (ping; proxied; token; method; route) and answered
//! with its statuses and bodies, through the broker's cache for secrets by id. A read the cache
//! answers fresh is answered at once, without a future; the others wait for the source.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use futures_util::future::Either;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tracing::debug;

use super::auth::is_proxied;
use super::observe::finish_on;
use crate::audit::{AuditSink, Event};
use crate::broker::{Broker, ServedSecret};
use crate::clients::{Client, Clients};
use crate::config::{AgentCompatConfig, SecretPatterns};
use crate::metrics::{HotRoute, Metrics};

mod answer;
mod request;

use answer::{failed, forbidden, found, not_allowed, result_of, text, timed_out};
use request::{SecretRead, Style};

/// The route templates requests of this API are counted under.
const PING_ROUTE: &str = "/ping";
const QUERY_ROUTE: &str = "/secretsmanager/get";

/// The client name of the agent API's audit events for the agent's own token, which names no
/// configured client.
const AUDIT_CLIENT: &str = "aws_agent";

/// The agent's API as a hyper service (a connection calls it by reference).
#[derive(Debug, Clone)]
pub struct AgentApi(Arc<AgentState>);

/// What the agent API's requests share.
struct AgentState {
    broker: Arc<Broker>,
    metrics: Metrics,
    path_prefix: String,
    /// The path style's route template, `{path_prefix}{secretId}`.
    path_route: String,
    /// The two secret routes' series, for reads counted without a label lookup.
    query_hot: Arc<HotRoute>,
    path_hot: Arc<HotRoute>,
    ssrf_headers: Vec<String>,
    token: SecretString,
    secrets: SecretPatterns,
    request_timeout: Duration,
    audit: Option<Arc<AuditSink>>,
    /// The broker's clients, whose own tokens open the API to their `aws_agent_secrets`.
    clients: Option<Arc<Clients>>,
}

impl std::fmt::Debug for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentState")
            .field("path_prefix", &self.path_prefix)
            .finish_non_exhaustive()
    }
}

/// Who called: the holder of the agent's token, or a configured client by its own token.
enum AgentCaller {
    Agent,
    Client(Arc<Client>),
}

impl AgentCaller {
    /// The secrets this caller may read, and its name in the audit trail.
    fn scope<'a>(&'a self, state: &'a AgentState) -> (&'a SecretPatterns, &'a str) {
        match self {
            Self::Agent => (&state.secrets, AUDIT_CLIENT),
            Self::Client(client) => (&client.aws_agent_secrets, client.name.as_str()),
        }
    }
}

/// Where a request's answer comes from.
enum Decision {
    /// Answered without the source (a refusal, `/ping`, a fresh cache hit).
    Now(Response),
    /// A read that waits for the source.
    Wait(AgentCaller, SecretRead),
}

/// The agent's API for `broker`, configured by `config`.
pub fn agent_api(
    broker: Arc<Broker>,
    config: &AgentCompatConfig,
    metrics: Metrics,
    request_timeout: Duration,
    (audit, clients): (Option<Arc<AuditSink>>, Option<Arc<Clients>>),
) -> AgentApi {
    let path_route = format!("{}{{secretId}}", config.path_prefix);
    AgentApi(Arc::new(AgentState {
        broker,
        query_hot: metrics.hot_route_for(QUERY_ROUTE),
        path_hot: metrics.hot_route_for(&path_route),
        metrics,
        path_route,
        path_prefix: config.path_prefix.clone(),
        ssrf_headers: config.ssrf_headers.clone(),
        token: config.token.clone(),
        secrets: config.secrets.clone(),
        request_timeout,
        audit,
        clients,
    }))
}

type Waiting = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for AgentApi {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, Waiting>;

    fn call(&self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let started = Instant::now();
        // The body is never read: every route is a GET.
        let (request, _) = request.into_parts();
        let state = &self.0;
        match state.decide(&request) {
            Decision::Now(response) => {
                Either::Left(ready(Ok(state.finish(&request, started, response))))
            }
            Decision::Wait(caller, read) => {
                let state = Arc::clone(state);
                Either::Right(Box::pin(async move {
                    let response = state.wait_for(&caller, &read).await;
                    Ok(state.finish(&request, started, response))
                }))
            }
        }
    }
}

impl AgentState {
    /// The route template of `path` and its hot series, if it has one.
    fn route_of(&self, path: &str) -> (Option<&str>, Option<&HotRoute>) {
        if path == PING_ROUTE {
            (Some(PING_ROUTE), None)
        } else if path == QUERY_ROUTE {
            (Some(QUERY_ROUTE), Some(&self.query_hot))
        } else if path.starts_with(&self.path_prefix) {
            (Some(&self.path_route), Some(&self.path_hot))
        } else {
            (None, None)
        }
    }

    /// Counts and times the answer by its route (see [`finish_on`]).
    fn finish(&self, request: &Parts, started: Instant, response: Response) -> Response {
        let (route, hot) = self.route_of(request.uri.path());
        finish_on(
            &self.metrics,
            route,
            hot,
            &request.method,
            started,
            response,
        )
    }

    /// The answer, in the agent's order of checks, when it needs no wait.
    fn decide(&self, request: &Parts) -> Decision {
        let path = request.uri.path();
        if path == PING_ROUTE {
            // No token: a health check.
            return Decision::Now(if request.method == Method::GET {
                text(StatusCode::OK, "healthy")
            } else {
                not_allowed()
            });
        }
        if is_proxied(&request.headers) {
            return Decision::Now(text(StatusCode::BAD_REQUEST, "Forwarded"));
        }
        let Some(caller) = self.caller(&request.headers) else {
            return Decision::Now(text(StatusCode::FORBIDDEN, "Bad Token"));
        };
        if request.method != Method::GET {
            return Decision::Now(not_allowed());
        }
        let (style, path_id) = if path == QUERY_ROUTE {
            (Style::Query, "")
        } else if let Some(id) = path.strip_prefix(&self.path_prefix) {
            (Style::Path, id)
        } else {
            return Decision::Now(text(StatusCode::NOT_FOUND, "Not found"));
        };
        let read = match request::read(style, path_id, request.uri.query()) {
            Ok(read) => read,
            Err(bad) => return Decision::Now(text(StatusCode::BAD_REQUEST, bad.text())),
        };
        let (secrets, client) = caller.scope(self);
        if !secrets.allows(&read.key.secret_id) {
            debug!(client, "a secret outside the caller's list was asked for");
            self.record(client, &read, "forbidden", None);
            return Decision::Now(forbidden());
        }
        if !read.refresh_now
            && let Some(served) = self.broker.cached_secret(&read.key)
        {
            self.record(client, &read, "ok", Some(&served));
            return Decision::Now(found(&served));
        }
        Decision::Wait(caller, read)
    }

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
        Some(AgentCaller::Client(Arc::clone(client)))
    }

    /// The secret `read` names, from the source (or the stale cache) within the request
    /// timeout; recorded in the audit trail.
    async fn wait_for(&self, caller: &AgentCaller, read: &SecretRead) -> Response {
        let (_, client) = caller.scope(self);
        let fetch = self.broker.get_secret(&read.key, read.refresh_now);
        match tokio::time::timeout(self.request_timeout, fetch).await {
            Ok(Ok(served)) => {
                self.record(client, read, "ok", Some(&served));
                found(&served)
            }
            Ok(Err(err)) => {
                self.record(client, read, &result_of(&err), None);
                failed(&err)
            }
            Err(_) => {
                self.record(client, read, "request_timeout", None);
                timed_out()
            }
        }
    }

    /// One audit event for a read by `client`.
    fn record(&self, client: &str, read: &SecretRead, result: &str, served: Option<&ServedSecret>) {
        if let Some(audit) = &self.audit {
            audit.write(&Event {
                client,
                db: "",
                action: if read.refresh_now { "refresh" } else { "read" },
                result,
                version_id: served.map_or("", |served| &served.secret.secret.version_id),
                secret_id: Some(&read.key.secret_id),
            });
        }
    }
}
