//! Input limits and overload handling of the credentials API, as middleware: header and body
//! size caps, and the mapping of the tower overload and timeout errors to JSON responses.

use axum::BoxError;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use crate::config::Limits;

/// Rejects requests whose headers or declared body exceed the configured limits.
pub(crate) async fn enforce(
    State(limits): State<Limits>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > limits.max_header_bytes {
        return Err(ApiError::HeadersTooLarge);
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if declared > limits.max_body_bytes {
        return Err(ApiError::PayloadTooLarge);
    }
    Ok(next.run(request).await)
}

/// Turns the errors of the `load_shed` and `timeout` layers into their JSON answers.
pub(crate) async fn overload_error(err: BoxError) -> ApiError {
    if err.is::<tower::load_shed::error::Overloaded>() {
        ApiError::Overloaded
    } else if err.is::<tower::timeout::error::Elapsed>() {
        ApiError::RequestTimeout
    } else {
        tracing::error!(error = %err, "unexpected middleware error");
        ApiError::Overloaded
    }
}
