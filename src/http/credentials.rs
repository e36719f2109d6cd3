//! Handlers of the credentials API: `GET /credentials/{db}` and `POST /credentials/{db}/refresh`.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::broker::Broker;
use crate::credentials::{Credentials, DbName};

pub(crate) async fn get(
    State(broker): State<Arc<Broker>>,
    db: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let db = database(db)?;
    let credentials = broker
        .get(&db)
        .await
        .map_err(|e| ApiError::from_broker(&db, e))?;
    Ok(respond(&credentials))
}

pub(crate) async fn refresh(
    State(broker): State<Arc<Broker>>,
    db: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let db = database(db)?;
    let credentials = broker
        .refresh(&db)
        .await
        .map_err(|e| ApiError::from_broker(&db, e))?;
    Ok(respond(&credentials))
}

/// The database name from the path, checked for shape before any lookup.
fn database(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(db) = path.map_err(|_| ApiError::BadRequest)?;
    DbName::parse(&db).map_err(|_| ApiError::InvalidDatabaseName)?;
    Ok(db)
}

fn respond(credentials: &Credentials) -> Response {
    let mut response = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        credentials.to_json(),
    )
        .into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", credentials.version_id)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}
