//! Request guards of the credentials API, as middleware: reject proxied requests, then require
//! the bearer token, compared in constant time.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// Rejects any request that carries `X-Forwarded-For`: it came through a proxy, not from the
/// local application.
pub(crate) async fn reject_forwarded(request: Request, next: Next) -> Result<Response, ApiError> {
    if request.headers().contains_key("x-forwarded-for") {
        return Err(ApiError::ForwardedRequest);
    }
    Ok(next.run(request).await)
}

/// Requires `Authorization: Bearer <token>` matching the configured token.
pub(crate) async fn require_token(
    State(token): State<Arc<SecretString>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match presented {
        Some(p) if bool::from(p.as_bytes().ct_eq(token.expose_secret().as_bytes())) => {
            Ok(next.run(request).await)
        }
        _ => Err(ApiError::Unauthorized),
    }
}
