//! How every answered request is finished, on both listeners: the security headers, its count
//! and time by route template (a bounded method label), and one debug line.

use std::time::{Duration, Instant};

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use tracing::debug;

use crate::metrics::CREDENTIALS_ROUTE;
use crate::metrics::{HotRoute, Metrics};

/// Adds the security headers every response carries, counts and times the request by route
/// template, and logs one line for it at debug.
pub(super) fn finish(
    metrics: &Metrics,
    route: Option<&str>,
    method: &Method,
    started: Instant,
    response: Response,
) -> Response {
    let hot = (route == Some(CREDENTIALS_ROUTE)).then_some(&*metrics.hot_route);
    finish_on(metrics, route, hot, method, started, response)
}

/// [`finish`] for a request of a route whose [`HotRoute`] (`hot`) the caller holds.
pub(super) fn finish_on(
    metrics: &Metrics,
    route: Option<&str>,
    hot: Option<&HotRoute>,
    method: &Method,
    started: Instant,
    mut response: Response,
) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let route = route.unwrap_or("unmatched");
    let elapsed: Duration = started.elapsed();
    let status = response.status();
    let counted = if let Some(hot) = hot {
        let ok = status == StatusCode::OK && *method == Method::GET;
        hot.record(elapsed, ok);
        ok
    } else {
        metrics
            .http_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
        false
    };
    if !counted {
        metrics
            .http_requests
            .with_label_values(&[route, method_label(method), status.as_str()])
            .inc();
    }
    debug!(
        method = method_label(method),
        route,
        status = status.as_u16(),
        micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

/// The `method` label of a request: a method HTTP defines, else `other`, so that a caller
/// cannot add series (or log text) by inventing methods.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Counts a request as in flight until dropped, even when the client goes away mid-request.
pub(super) struct InFlight(prometheus::IntGauge);

impl InFlight {
    pub(super) fn enter(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
