//! The routes as the router tells them: the routers' layers, which run once a request is routed
//! and know the route template it matched (its metric label, for every route the router has,
//! new ones included); the credentials API's refusals, decided before routing and answered once
//! the route is known; and the fallbacks.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::audit::Action;
use super::error::ApiError;
use super::observe::{InFlight, finish};
use super::state::ApiState;
pub(crate) use crate::metrics::CREDENTIALS_ROUTE;
use crate::metrics::Metrics;

/// The route template of refreshes.
pub(crate) const REFRESH_ROUTE: &str = "/credentials/{db}/refresh";
/// The route template of event streams.
pub(crate) const EVENTS_ROUTE: &str = "/credentials/{db}/events";

/// Where the router leaves the template a routed request matched, for the front to label the
/// request by, even when the answer never comes (a request timeout).
#[derive(Debug, Clone, Default)]
pub(crate) struct MatchedRoute(Arc<OnceLock<MatchedPath>>);

impl MatchedRoute {
    /// The template, once the router matched one; `None` for a path no route matches.
    pub(crate) fn template(&self) -> Option<&str> {
        self.0.get().map(MatchedPath::as_str)
    }
}

/// A refusal decided before routing (overload, limits, a proxied request, no valid token),
/// carried through the router so that the request is labelled by the route it names.
#[derive(Debug, Clone)]
pub(crate) struct Refused(pub(crate) ApiError);

/// Which router a layer serves.
#[derive(Debug, Clone)]
pub(crate) enum RouterLayer {
    /// The credentials API, whose front counts and times its requests.
    Api(Arc<ApiState>),
    /// The admin listener, which has no front: its requests are counted and timed here.
    Admin(Metrics),
}

/// The routers' layer, one for both (so the binary holds one copy): on the admin listener,
/// counts and times the request by the matched template; on the credentials API, records the
/// template for the front, and answers a [`Refused`] request with its refusal (an
/// unauthenticated one on a credentials route goes to the audit trail).
pub(crate) async fn routed(
    State(layer): State<RouterLayer>,
    mut request: Request,
    next: Next,
) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let state = match layer {
        RouterLayer::Api(state) => state,
        RouterLayer::Admin(metrics) => {
            let started = Instant::now();
            let method = request.method().clone();
            let in_flight = InFlight::enter(&metrics.http_in_flight);
            let response = next.run(request).await;
            drop(in_flight);
            let route = matched.as_ref().map(MatchedPath::as_str);
            return finish(&metrics, route, &method, started, response);
        }
    };
    if let (Some(slot), Some(matched)) = (request.extensions().get::<MatchedRoute>(), &matched) {
        let _ = slot.0.set(matched.clone());
    }
    let Some(Refused(refusal)) = request.extensions_mut().remove::<Refused>() else {
        return next.run(request).await;
    };
    if matches!(refusal, ApiError::Unauthorized)
        && let Some(template) = matched.as_ref().map(MatchedPath::as_str)
        && let Some(action) = action(template)
        && let Some(db) = raw_db(request.uri().path(), template)
    {
        state.audit.record(None, db, action, Err(&refusal));
    }
    refusal.into_response()
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// What a credentials route does, for the audit trail.
fn action(template: &str) -> Option<Action> {
    match template {
        CREDENTIALS_ROUTE => Some(Action::Read),
        REFRESH_ROUTE => Some(Action::Refresh),
        EVENTS_ROUTE => Some(Action::Watch),
        _ => None,
    }
}

/// The database segment of `path` as it stands (still percent-encoded), where `template` has
/// `{db}`.
pub(crate) fn raw_db<'a>(path: &'a str, template: &str) -> Option<&'a str> {
    let (prefix, suffix) = template.split_once("{db}")?;
    path.strip_prefix(prefix)?.strip_suffix(suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_segment_is_cut_from_the_path_by_its_template() {
        assert_eq!(
            raw_db("/credentials/orders", CREDENTIALS_ROUTE),
            Some("orders")
        );
        assert_eq!(
            raw_db("/credentials/a%2Fb", CREDENTIALS_ROUTE),
            Some("a%2Fb")
        );
        assert_eq!(
            raw_db("/credentials/orders/refresh", REFRESH_ROUTE),
            Some("orders")
        );
        assert_eq!(raw_db("/credentials//refresh", REFRESH_ROUTE), Some(""));
        assert_eq!(raw_db("/metrics", CREDENTIALS_ROUTE), None);
        assert_eq!(raw_db("/healthz", "/healthz"), None);
    }
}
