//! The guard of the credentials API: input limits, the refusal of proxied requests, and who the
//! caller is (bearer token, or Unix socket peer uid). Which databases the caller may read is
//! checked by the handlers, after the database name is parsed.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderMap, header};

use super::error::ApiError;
use super::state::ApiState;
use crate::clients::{Client, Clients};
use crate::config::Limits;

/// The client a request was attributed to, as a request extension for the router's handlers.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) Arc<Client>);

/// The uid of a Unix socket peer, from `SO_PEERCRED`, as a connection-wide request extension.
#[derive(Debug, Clone, Copy)]
pub struct PeerUid(pub u32);

/// Headers a proxy adds (RFC 7239 `Forwarded`, the `X-Forwarded-*` family, `X-Real-IP`,
/// `Via`): a request carrying one came through a proxy, and is refused.
const PROXY_HEADERS: [&str; 3] = ["forwarded", "x-real-ip", "via"];

/// Whether a request carries a header a proxy adds.
pub(super) fn is_proxied(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| {
        PROXY_HEADERS.contains(&name.as_str()) || name.as_str().starts_with("x-forwarded-")
    })
}

/// Rejects oversized, proxied or ambiguous requests, then identifies the caller or answers 401.
pub(crate) fn admit<'s>(
    state: &'s ApiState,
    request: &Request,
) -> Result<&'s Arc<Client>, ApiError> {
    let headers = request.headers();
    check_limits(&state.limits, headers)?;
    if is_proxied(headers) {
        return Err(ApiError::ForwardedRequest);
    }
    // Two credentials are no credential: never "the first one wins".
    if headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(ApiError::BadRequest);
    }
    let Some(clients) = &state.clients else {
        return Ok(&state.anonymous);
    };
    // Unauthenticated requests are audited once routed, by the route they name.
    identify(clients, request).ok_or(ApiError::Unauthorized)
}

/// The client behind a bearer token, or else behind the Unix socket peer's uid. A token that is
/// presented must be valid: it is never ignored in favour of the uid.
fn identify<'c>(clients: &'c Clients, request: &Request) -> Option<&'c Arc<Client>> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        let PeerUid(uid) = request.extensions().get::<PeerUid>()?;
        return clients.by_uid(*uid);
    };
    let token = value
        .to_str()
        .ok()?
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))?
        .1
        .trim();
    clients.by_token(token)
}

/// Rejects requests whose headers or declared body exceed the configured limits.
fn check_limits(limits: &Limits, headers: &HeaderMap) -> Result<(), ApiError> {
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > limits.max_header_bytes {
        return Err(ApiError::HeadersTooLarge);
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if declared > limits.max_body_bytes {
        return Err(ApiError::PayloadTooLarge);
    }
    Ok(())
}
