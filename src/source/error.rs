//! Why a source could not answer, and the checks every value from an upstream passes before it
//! is kept (bounded length, no control characters, version ids of one shape).

use crate::credentials::ServiceRefusal;

/// Why a source could not answer. The detail strings never hold secret content.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// The source has no secret with this id.
    #[error("secret not found: {0}")]
    NotFound(String),
    /// The RDS instance or cluster does not exist (any more).
    #[error("database not found in RDS: {0}")]
    Gone(String),
    /// The RDS database has no master user secret managed by Secrets Manager.
    #[error("{0}")]
    NotManaged(String),
    /// The source did not answer within the configured timeouts.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The source could not be reached or answered with an error.
    #[error("{0}")]
    Unavailable(String),
    /// The source answered with something that is no answer (a body the SDK cannot parse, a
    /// version id that is not one); nothing of it is kept.
    #[error("{0}")]
    Malformed(String),
    /// The source answered, refusing the read for good (no such secret or version, access
    /// denied, a bad parameter): its code and message, for callers that pass them on.
    #[error("{0}")]
    Refused(ServiceRefusal),
}

impl SourceError {
    /// The `outcome` label for upstream metrics.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            Self::NotFound(_) | Self::Gone(_) | Self::NotManaged(_) => "not_found",
            Self::Timeout(_) => "timeout",
            Self::Unavailable(_) => "error",
            Self::Malformed(_) => "malformed",
            Self::Refused(_) => "refused",
        }
    }

    /// Whether the source failed to answer (as opposed to answering "no").
    pub(crate) fn is_outage(&self) -> bool {
        matches!(
            self,
            Self::Timeout(_) | Self::Unavailable(_) | Self::Malformed(_)
        )
    }
}

/// The reason logged for an upstream answer that is not one.
pub(crate) const MALFORMED_RESPONSE: &str = "malformed response";

/// Longest ARN kept from an answer (AWS allows 2048 characters).
pub(crate) const MAX_ARN: usize = 2048;

/// Checks a value an upstream answered before it is kept: at most `max` bytes, and no control
/// characters. `what` names it in the error, never the value itself.
pub(crate) fn bounded(what: &str, value: String, max: usize) -> Result<String, SourceError> {
    if value.len() > max || value.chars().any(char::is_control) {
        return Err(SourceError::Malformed(format!(
            "{MALFORMED_RESPONSE}: {what} is longer than {max} bytes or holds control characters"
        )));
    }
    Ok(value)
}

/// Whether `id` can be a version id: 1 to 64 ASCII letters, digits, `-`, `_` or `.` (Secrets
/// Manager's are UUIDs; the file source's `file-<ns>`). Version ids are echoed in `ETag`
/// headers, audit events and logs, so nothing else is accepted from a source.
pub(crate) fn is_version_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}
