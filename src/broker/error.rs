//! The broker's own kinds of failure: what went wrong, in words the HTTP layer maps to statuses
//! without knowing any source's error type. Details never hold secret content.

use crate::credentials::{DbName, MalformedSecret, ServiceRefusal};
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
            SourceError::Unavailable(_) | SourceError::Malformed(_) | SourceError::Refused(_) => {
                Self::Unavailable(detail)
            }
        }
    }
}

/// Why a secret of the AWS agent's API could not be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretError {
    /// The store answered "no" for good: no such secret or version, access denied, a bad
    /// parameter.
    #[error("{0}")]
    Refused(ServiceRefusal),
    /// The store did not answer within its timeouts.
    #[error("secret source: {0}")]
    Timeout(String),
    /// The store could not be reached or failed.
    #[error("secret source: {0}")]
    Unavailable(String),
    /// The store answered with something that is no answer.
    #[error("secret source: {0}")]
    Malformed(String),
}

impl SecretError {
    /// Whether the store failed to answer (the last value may then be served, stale).
    pub(crate) fn is_outage(&self) -> bool {
        !matches!(self, Self::Refused(_))
    }
}

impl From<SourceError> for SecretError {
    fn from(err: SourceError) -> Self {
        let detail = err.to_string();
        match err {
            SourceError::Refused(refusal) => Self::Refused(refusal),
            SourceError::NotFound(_) | SourceError::Gone(_) | SourceError::NotManaged(_) => {
                Self::Refused(ServiceRefusal::new(
                    Some("ResourceNotFoundException"),
                    Some("Secrets Manager can't find the specified secret."),
                ))
            }
            SourceError::Timeout(_) => Self::Timeout(detail),
            SourceError::Unavailable(_) => Self::Unavailable(detail),
            SourceError::Malformed(_) => Self::Malformed(detail),
        }
    }
}
