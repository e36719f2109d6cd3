//! Overload handling of the credentials API: the mapping of the tower overload and timeout
//! errors to JSON responses.

use axum::BoxError;

use super::error::ApiError;

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
