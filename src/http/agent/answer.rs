//! The agent API's answers: the secret's JSON, the store's refusals and upstream failures in the
//! agent's `{"__type","message"}` shape, and its plain-text refusals.

use std::borrow::Cow;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::broker::{SecretError, ServedSecret};

/// The audit result of a failure: the store's code for a refusal, else the broker's words.
pub(super) fn result_of(err: &SecretError) -> Cow<'static, str> {
    match err {
        SecretError::Refused(refusal) => Cow::Owned(refusal.code().to_owned()),
        SecretError::Timeout(_) => Cow::Borrowed("upstream_timeout"),
        SecretError::Unavailable(_) | SecretError::Malformed(_) => Cow::Borrowed("upstream_error"),
    }
}

/// A 200 with the secret's `GetSecretValue` JSON; a stale value says so in a header.
pub(super) fn found(served: &ServedSecret) -> Response {
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
pub(super) fn failed(err: &SecretError) -> Response {
    match err {
        SecretError::Refused(refusal) => {
            self::refusal(StatusCode::BAD_REQUEST, refusal.code(), refusal.message())
        }
        SecretError::Timeout(_) => timed_out(),
        SecretError::Unavailable(_) => {
            refusal(StatusCode::BAD_GATEWAY, "ConnectionError", "Read Error")
        }
        SecretError::Malformed(_) => {
            refusal(StatusCode::BAD_GATEWAY, "ConnectionError", "Response Error")
        }
    }
}

/// 403 for a secret outside the caller's list.
pub(super) fn forbidden() -> Response {
    refusal(
        StatusCode::FORBIDDEN,
        "AccessDeniedException",
        "credential-broker: this secret is not in this caller's list (compat.aws_agent.secrets, or clients.NAME.aws_agent_secrets)",
    )
}

/// 504 when the answer took longer than `server.request_timeout`.
pub(super) fn timed_out() -> Response {
    refusal(StatusCode::GATEWAY_TIMEOUT, "TimeoutError", "Timeout")
}

/// An error in the agent's JSON shape, `{"__type": …, "message": …}`, always valid JSON.
pub(super) fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "__type": code, "message": message })),
    )
        .into_response()
}

/// 405 `Not allowed`, with the one method served (`Allow`, as RFC 9110 asks).
pub(super) fn not_allowed() -> Response {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "Not allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET"));
    response
}

/// A plain-text answer, as the agent gives for its own refusals.
pub(super) fn text(status: StatusCode, body: impl Into<String>) -> Response {
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
