//! Handlers of the credentials API: `GET /credentials/{db}` and `POST /credentials/{db}/refresh`.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::broker::{Broker, Served};
use crate::credentials::DbName;

pub(crate) async fn get(
    State(broker): State<Arc<Broker>>,
    db: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let db = database(db)?;
    let served = broker
        .get(&db)
        .await
        .map_err(|e| ApiError::from_broker(&db, e))?;
    Ok(respond(&served))
}

pub(crate) async fn refresh(
    State(broker): State<Arc<Broker>>,
    db: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let db = database(db)?;
    let served = broker
        .refresh(&db)
        .await
        .map_err(|e| ApiError::from_broker(&db, e))?;
    Ok(respond(&served))
}

/// The database name from the path, checked for shape before any lookup.
fn database(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(db) = path.map_err(|_| ApiError::BadRequest)?;
    DbName::parse(&db).map_err(|_| ApiError::InvalidDatabaseName)?;
    Ok(db)
}

fn respond(served: &Served) -> Response {
    let credentials = &served.credentials;
    let mut response = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::AGE, HeaderValue::from(served.age.as_secs())),
        ],
        credentials.to_json(served.stale),
    )
        .into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", credentials.version_id)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}
