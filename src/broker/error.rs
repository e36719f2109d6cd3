//! The broker's own kinds of failure: what went wrong, in words the HTTP layer maps to statuses
//! without knowing any source's error type. Details never hold secret content.

use crate::credentials::{DbName, MalformedSecret};
use crate::source::SourceError;

/// Why the broker could not return credentials.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    #[error("unknown database")]
    UnknownDatabase,
    /// The source has no such secret, or the RDS database has no managed master user secret.
    #[error("secret source: {0}")]
    SecretNotFound(String),
    /// The source did not answer within its timeouts.
    #[error("secret source: {0}")]
    Timeout(String),
    /// The source could not be reached, failed, or answered with something that is no answer.
    #[error("secret source: {0}")]
    Unavailable(String),
    #[error("secret for database {db} is malformed: {reason}")]
    Malformed { db: DbName, reason: MalformedSecret },
    /// The last good credentials are older than `ttl + max_stale` and the source still fails.
    #[error("credentials expired: {0}")]
    Expired(String),
    /// The RDS instance or cluster no longer exists.
    #[error("database deleted: {0}")]
    Deleted(String),
}

impl From<SourceError> for BrokerError {
    fn from(err: SourceError) -> Self {
        let detail = err.to_string();
        match err {
            SourceError::NotFound(_) | SourceError::NotManaged(_) => Self::SecretNotFound(detail),
            SourceError::Gone(id) => Self::Deleted(id),
            SourceError::Timeout(_) => Self::Timeout(detail),
            SourceError::Unavailable(_) | SourceError::Malformed(_) => Self::Unavailable(detail),
        }
    }
}
