//! Handlers of the credentials API: `GET /credentials/{db}` (formats, conditional GET, and the
//! long poll with `wait`, held as [`super::hold`] says) and `POST /credentials/{db}/refresh` (optionally
//! naming the version the caller found failing).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Extension, FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::audit::{Action, Outcome};
use super::auth::Caller;
use super::error::ApiError;
use super::hold::{Hold, parse_wait};
use super::route;
use super::state::ApiState;
use crate::broker::{Served, Waited};
use crate::clients::Client;
use crate::credentials::{DbName, Format};

#[derive(Debug, Deserialize)]
pub(crate) struct ReadQuery {
    format: Option<String>,
    /// A long poll: how long to wait for a version `If-None-Match` does not name.
    wait: Option<String>,
}

/// The optional body of a refresh: the version the caller has and found failing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    version_id: String,
}

/// `GET /credentials/{db}` through the router. It takes the request whole and reads its parts
/// itself: each axum extractor adds an await and a rejection path to the handler's generated
/// code, and with one per part this was the largest handler in the binary (BENCHMARKS.md).
pub(crate) async fn get(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(client)): Extension<Caller>,
    Extension(hold): Extension<Hold>,
    request: Request,
) -> Result<Response, ApiError> {
    let (mut parts, _) = request.into_parts();
    // A plain read is read as the front reads it, by the one function that decides what one is.
    if let Some((db, format)) = plain_read(&parts.method, &parts.uri) {
        return read(&state, &client, db, Ok(format), &parts.headers).await;
    }
    let db = database(Path::from_request_parts(&mut parts, &state).await).inspect_err(|e| {
        state.audit.record(Some(&client), "", Action::Read, Err(e));
    })?;
    let query = Query::<ReadQuery>::try_from_uri(&parts.uri);
    // A long poll is held for minutes: it keeps `If-None-Match` alone, not the whole request.
    let headers = if_none_match(&parts.headers);
    drop(parts);
    let (format, wait) = match &query {
        Ok(Query(query)) => (Ok(query.format.as_deref()), query.wait.as_deref()),
        Err(_) => (Err(ApiError::BadRequest), None),
    };
    match wait {
        Some(wait) => long_poll(&state, &hold, &client, &db, format, wait, &headers).await,
        None => read(&state, &client, &db, format, &headers).await,
    }
}

/// A copy of the `If-None-Match` headers alone.
fn if_none_match(headers: &HeaderMap) -> HeaderMap {
    let mut copy = HeaderMap::new();
    for value in headers.get_all(header::IF_NONE_MATCH) {
        copy.append(header::IF_NONE_MATCH, value.clone());
    }
    copy
}

/// The database and format of a plain credentials read, `GET` of [`route::CREDENTIALS_ROUTE`]
/// with a valid name as it stands (nothing percent-encoded) and no query or just
/// `format=<letters>`: the requests the front layer answers through [`read_now`] or [`read`]
/// without the router. The router's [`get`] reads these the same way, by this function; any
/// other read it decodes first.
pub(crate) fn plain_read<'a>(method: &Method, uri: &'a Uri) -> Option<(&'a str, Option<&'a str>)> {
    if method != Method::GET {
        return None;
    }
    let db = route::raw_db(uri.path(), route::CREDENTIALS_ROUTE)?;
    DbName::check(db).ok()?;
    let format = match uri.query() {
        None => None,
        Some(query) => {
            let name = query.strip_prefix("format=")?;
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphabetic()) {
                return None;
            }
            Some(name)
        }
    };
    Some((db, format))
}

/// Answers a read of `db` (a valid name) by `client` in `format` (`None`: JSON), a 304 when
/// `If-None-Match` in `headers` names the served version, and records it in the audit trail.
pub(crate) async fn read(
    state: &ApiState,
    client: &Client,
    db: &str,
    format: Result<Option<&str>, ApiError>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let result = async {
        let format = checked(client, db, format)?;
        let served = state
            .broker
            .get(db)
            .await
            .map_err(|e| ApiError::from_broker(db, e))?;
        answer(served, format, headers)
    }
    .await;
    audited(state, client, db, Action::Read, result)
}

/// What [`read`] answers, when that needs no wait: a refusal, or credentials in the cache
/// (nearly every read). `None` when the source has to be asked; nothing is recorded then.
pub(crate) fn read_now(
    state: &ApiState,
    client: &Client,
    db: &str,
    format: Option<&str>,
    headers: &HeaderMap,
) -> Option<Result<Response, ApiError>> {
    let result = checked(client, db, Ok(format)).and_then(|format| match state.broker.cached(db) {
        Ok(Some(served)) => Ok(Some(answer(served, format, headers)?)),
        Ok(None) => Ok(None),
        Err(e) => Err(ApiError::from_broker(db, e)),
    });
    let result = result.transpose()?;
    Some(audited(state, client, db, Action::Read, result))
}

/// A long poll of `db` by `client`: 200 at once when the served version is not one
/// `If-None-Match` in `headers` names (or it names none), else held until a new version is
/// served (200 with it, in `format`) or `wait` passes (304).
async fn long_poll(
    state: &Arc<ApiState>,
    hold: &Hold,
    client: &Client,
    db: &str,
    format: Result<Option<&str>, ApiError>,
    wait: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let result = async {
        let format = checked(client, db, format)?;
        let wait = parse_wait(wait, state.limits.max_wait)?;
        let _waiter = hold.begin(state)?;
        let waited = state
            .broker
            .wait_for_change(db, |version| matches_etag(headers, version), wait)
            .await
            .map_err(|e| ApiError::from_broker(db, e))?;
        let (Waited::Changed(served) | Waited::Unchanged(served)) = waited;
        answer(served, format, headers)
    }
    .await;
    audited(state, client, db, Action::Read, result)
}

/// The format of a read of `db` by `client`, once the client may read it.
fn checked(
    client: &Client,
    db: &str,
    format: Result<Option<&str>, ApiError>,
) -> Result<Format, ApiError> {
    if !client.scope.allows(db) {
        return Err(ApiError::Forbidden);
    }
    match format? {
        None => Ok(Format::Json),
        Some(name) => name.parse().map_err(|()| ApiError::InvalidFormat),
    }
}

/// The answer to a read of `served` in `format`: a 304 when `If-None-Match` in `headers` names
/// its version. The flag says which.
fn answer(
    served: Served,
    format: Format,
    headers: &HeaderMap,
) -> Result<(Response, Served, bool), ApiError> {
    if matches_etag(headers, &served.credentials.version_id) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        add_headers(&mut response, &served);
        return Ok((response, served, true));
    }
    Ok((respond(&served, format)?, served, false))
}

pub(crate) async fn refresh(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(client)): Extension<Caller>,
    db: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let db = database(db).inspect_err(|e| {
        state
            .audit
            .record(Some(&client), "", Action::Refresh, Err(e));
    })?;
    let result = async {
        if !client.scope.allows(&db) {
            return Err(ApiError::Forbidden);
        }
        // Past the body limit (see `Front`) is 413; any other failure to read the body is 400.
        let body = body.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest
            }
        })?;
        // No body names no version; any body must be the JSON object (whitespace alone is not).
        let from_body = if body.is_empty() {
            None
        } else {
            let parsed: RefreshBody =
                serde_json::from_slice(&body).map_err(|_| ApiError::BadRequest)?;
            Some(parsed.version_id)
        };
        let from_header = headers
            .get(header::IF_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(unquote);
        let known = from_body.as_deref().or(from_header);
        let served = state
            .broker
            .refresh(&db, known)
            .await
            .map_err(|e| ApiError::from_broker(&db, e))?;
        Ok((respond(&served, Format::Json)?, served, false))
    }
    .await;
    audited(&state, &client, &db, Action::Refresh, result)
}

/// Records the audit event of a request for `db` and passes its answer on. The flag says the
/// answer is a 304 confirming the served version.
pub(super) fn audited(
    state: &ApiState,
    client: &Client,
    db: &str,
    action: Action,
    result: Result<(Response, Served, bool), ApiError>,
) -> Result<Response, ApiError> {
    match result {
        Ok((response, served, not_modified)) => {
            let version = &served.credentials.version_id;
            let outcome = if not_modified {
                Outcome::NotModified(version)
            } else {
                Outcome::Served(version)
            };
            state.audit.record(Some(client), db, action, Ok(outcome));
            Ok(response)
        }
        Err(err) => {
            state.audit.record(Some(client), db, action, Err(&err));
            Err(err)
        }
    }
}

/// The database name from the path, checked for shape before any lookup.
pub(super) fn database(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(db) = path.map_err(|_| ApiError::BadRequest)?;
    DbName::check(&db).map_err(|_| ApiError::InvalidDatabaseName)?;
    Ok(db)
}

/// An entity tag without its weak prefix and quotes.
fn unquote(tag: &str) -> &str {
    let tag = tag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    tag.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(tag)
}

/// Whether `If-None-Match` names `version` (or is `*`).
fn matches_etag(headers: &HeaderMap, version: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == "*" || unquote(tag) == version)
}

fn add_headers(response: &mut Response, served: &Served) {
    let headers = response.headers_mut();
    headers.insert(header::AGE, age_value(served.age.as_secs()));
    if let Ok(etag) = HeaderValue::from_maybe_shared(served.credentials.etag().clone()) {
        headers.insert(header::ETAG, etag);
    }
}

/// The numbers 0 to 999 written one after another, `0123456789101112…998999`: the text of
/// `Age` values, so that the usual ones take no allocation (`HeaderValue::from(u64)` makes one).
static AGE_TEXT: [u8; 2890] = age_text();

const fn age_text() -> [u8; 2890] {
    const DIGITS: &[u8; 10] = b"0123456789";
    let mut text = [0; 2890];
    let (mut n, mut at) = (0, 0);
    while n < 1000 {
        if n >= 100 {
            text[at] = DIGITS[n / 100];
            at += 1;
        }
        if n >= 10 {
            text[at] = DIGITS[n / 10 % 10];
            at += 1;
        }
        text[at] = DIGITS[n % 10];
        at += 1;
        n += 1;
    }
    text
}

/// The `Age` header value of `seconds`.
fn age_value(seconds: u64) -> HeaderValue {
    let (start, len) = match usize::try_from(seconds) {
        Ok(n @ 0..10) => (n, 1),
        Ok(n @ 10..100) => (10 + (n - 10) * 2, 2),
        Ok(n @ 100..1000) => (190 + (n - 100) * 3, 3),
        _ => return HeaderValue::from(seconds),
    };
    let text = std::str::from_utf8(&AGE_TEXT[start..start + len]).expect("ASCII digits");
    HeaderValue::from_static(text)
}

fn respond(served: &Served, format: Format) -> Result<Response, ApiError> {
    let rendered = served
        .credentials
        .render(format, served.stale)
        .map_err(ApiError::FormatUnavailable)?;
    let mut response = Response::new(Body::from(rendered.body));
    // Room for every header this response gets (and the front layer adds), so none regrows it.
    *response.headers_mut() = HeaderMap::with_capacity(8);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(rendered.content_type),
    );
    add_headers(&mut response, served);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_values_are_the_seconds_in_decimal() {
        for seconds in (0..1100).chain([9_999, u64::MAX]) {
            assert_eq!(age_value(seconds).to_str().unwrap(), seconds.to_string());
        }
    }

    #[test]
    fn entity_tags_match_with_or_without_quotes_weakness_and_lists() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"v0\", W/\"v1\""),
        );
        assert!(matches_etag(&headers, "v1"));
        assert!(!matches_etag(&headers, "v2"));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(matches_etag(&headers, "anything"));
        assert!(!matches_etag(&HeaderMap::new(), "v1"));
    }
}
