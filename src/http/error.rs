//! The one error type of the HTTP boundary: each variant's status and stable `code` live in the
//! single `IntoResponse` impl below. Bodies are `{"error":{"code","message"}}`; 5xx bodies stay
//! generic and the detail goes to the log.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::broker::BrokerError;
use crate::credentials::{DbName, Format, RenderError};

#[derive(Debug, Clone)]
pub enum ApiError {
    Unauthorized,
    Forbidden,
    ForwardedRequest,
    InvalidDatabaseName,
    BadRequest,
    UnknownDatabase,
    NotFound,
    MethodNotAllowed,
    HeadersTooLarge,
    PayloadTooLarge,
    SecretNotFound(DbName),
    Upstream(DbName),
    UpstreamTimeout(DbName),
    MalformedSecret(DbName),
    CredentialsExpired(DbName),
    Overloaded,
    RequestTimeout,
    DatabaseDeleted(DbName),
    InvalidFormat,
    /// The `wait` of a long poll is no duration, or over this maximum.
    InvalidWait(Duration),
    FormatUnavailable(RenderError),
}

impl ApiError {
    /// Maps a broker failure for database `db` to its HTTP form.
    pub(crate) fn from_broker(db: &str, err: BrokerError) -> Self {
        let name = || DbName::parse(db).expect("only valid names reach the broker");
        match err {
            BrokerError::UnknownDatabase => Self::UnknownDatabase,
            BrokerError::SecretNotFound(_) => Self::SecretNotFound(name()),
            BrokerError::Deleted(_) => Self::DatabaseDeleted(name()),
            BrokerError::Timeout(_) => Self::UpstreamTimeout(name()),
            BrokerError::Unavailable(_) => Self::Upstream(name()),
            BrokerError::Malformed { db, .. } => Self::MalformedSecret(db),
            BrokerError::Expired(_) => Self::CredentialsExpired(name()),
        }
    }

    /// The stable error code of the body (also the audit result of a failed request).
    pub(crate) fn code(&self) -> &'static str {
        self.parts().1
    }

    #[allow(clippy::too_many_lines)] // one arm per error: the single table of statuses and codes
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid `Authorization: Bearer <token>` header is required".into(),
            ),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "this client may not read this database".into(),
            ),
            Self::ForwardedRequest => (
                StatusCode::BAD_REQUEST,
                "forwarded_request_rejected",
                "requests carrying X-Forwarded-For are rejected: the broker serves local callers only".into(),
            ),
            Self::InvalidDatabaseName => (
                StatusCode::BAD_REQUEST,
                "invalid_database_name",
                "database names are 1 to 64 ASCII letters, digits, '-', '_' or '.'".into(),
            ),
            Self::BadRequest => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the request could not be understood".into(),
            ),
            Self::UnknownDatabase => (
                StatusCode::NOT_FOUND,
                "unknown_database",
                "no database with this name is configured".into(),
            ),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found", "no such endpoint".into()),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not accept this method".into(),
            ),
            Self::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "the request headers are larger than server.max_header_bytes".into(),
            ),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than server.max_body_bytes".into(),
            ),
            Self::CredentialsExpired(db) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "credentials_expired",
                format!("the secret source has failed for longer than the stale allowance for database {db}"),
            ),
            Self::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many requests in progress; retry shortly".into(),
            ),
            Self::RequestTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "request_timeout",
                "the request took longer than server.request_timeout".into(),
            ),
            Self::DatabaseDeleted(db) => (
                StatusCode::GONE,
                "database_deleted",
                format!("the RDS database behind {db} has been deleted"),
            ),
            Self::InvalidFormat => (
                StatusCode::BAD_REQUEST,
                "invalid_format",
                format!("format must be one of {}", format_names()),
            ),
            Self::InvalidWait(max) => (
                StatusCode::BAD_REQUEST,
                "invalid_wait",
                format!(
                    "wait must be a duration such as 30s or 5m, or seconds, at most {}",
                    humantime::format_duration(*max)
                ),
            ),
            Self::FormatUnavailable(reason) => (
                StatusCode::BAD_REQUEST,
                "format_unavailable",
                format!("the credentials cannot be rendered in this format: {reason}"),
            ),
            Self::SecretNotFound(db) => (
                StatusCode::BAD_GATEWAY,
                "secret_not_found",
                format!("the secret configured for database {db} does not exist upstream"),
            ),
            Self::Upstream(db) => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                format!("the secret source failed for database {db}"),
            ),
            Self::UpstreamTimeout(db) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!("the secret source did not answer in time for database {db}"),
            ),
            Self::MalformedSecret(db) => (
                StatusCode::BAD_GATEWAY,
                "malformed_secret",
                format!("the secret for database {db} is not usable as database credentials"),
            ),
        }
    }
}

/// The formats' names, as the API documents them: `json, uri, ...`.
fn format_names() -> String {
    Format::all()
        .map(Format::name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        let mut response = (
            status,
            Json(json!({ "error": { "code": code, "message": message } })),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_error_code_is_documented_in_openapi_and_vice_versa() {
        let db = || DbName::parse("orders").unwrap();
        let all = [
            ApiError::Unauthorized,
            ApiError::Forbidden,
            ApiError::ForwardedRequest,
            ApiError::InvalidDatabaseName,
            ApiError::BadRequest,
            ApiError::UnknownDatabase,
            ApiError::NotFound,
            ApiError::MethodNotAllowed,
            ApiError::SecretNotFound(db()),
            ApiError::Upstream(db()),
            ApiError::UpstreamTimeout(db()),
            ApiError::MalformedSecret(db()),
            ApiError::HeadersTooLarge,
            ApiError::PayloadTooLarge,
            ApiError::CredentialsExpired(db()),
            ApiError::Overloaded,
            ApiError::RequestTimeout,
            ApiError::DatabaseDeleted(db()),
            ApiError::InvalidFormat,
            ApiError::InvalidWait(std::time::Duration::from_mins(5)),
            ApiError::FormatUnavailable(RenderError::MissingHost),
        ];
        let in_code: BTreeSet<&str> = all.iter().map(|e| e.parts().1).collect();
        let spec: serde_json::Value =
            serde_norway::from_str(include_str!("../../openapi.yaml")).unwrap();
        let in_spec: BTreeSet<&str> = spec
            .pointer("/components/schemas/ErrorCode/enum")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(in_code, in_spec);
    }
}
