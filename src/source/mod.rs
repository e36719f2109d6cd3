//! Places credentials come from, each behind one trait: [`Source`] returns secret versions (a
//! local JSON file for development, AWS Secrets Manager), and [`RdsApi`] resolves an RDS instance
//! or cluster to its master user secret and endpoint.

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use crate::credentials::SecretVersion;

pub(crate) mod file;
pub(crate) mod rds;
pub(crate) mod secrets_manager;

pub(crate) use file::FileSource;
pub(crate) use rds::RdsClient;
pub(crate) use secrets_manager::SecretsManagerSource;

/// A boxed future, so that sources can sit behind `dyn` traits.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which version of a secret to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `AWSCURRENT`: the version in use.
    Current,
    /// `AWSPENDING`: the version a rotation is putting in place.
    Pending,
}

impl Stage {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Current => "AWSCURRENT",
            Self::Pending => "AWSPENDING",
        }
    }
}

/// Rotation facts about a secret (`DescribeSecret`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretMetadata {
    pub rotation_enabled: bool,
    pub last_rotated: Option<SystemTime>,
    pub next_rotation: Option<SystemTime>,
    /// A version labelled `AWSPENDING` and not `AWSCURRENT`: a rotation is under way.
    pub pending_version: Option<String>,
}

/// Something that returns versions of secrets by id.
pub(crate) trait Source: Send + Sync + 'static {
    /// The operation name used in upstream metrics for [`Source::fetch`].
    fn fetch_operation(&self) -> &'static str;

    /// Fetches the version of `secret_id` at `stage`.
    fn fetch<'a>(
        &'a self,
        secret_id: &'a str,
        stage: Stage,
    ) -> BoxFuture<'a, Result<SecretVersion, SourceError>>;

    /// Rotation facts about `secret_id`; `None` (the default) for sources without rotation.
    fn describe<'a>(
        &'a self,
        _secret_id: &'a str,
    ) -> Option<BoxFuture<'a, Result<SecretMetadata, SourceError>>> {
        None
    }
}

/// An RDS database the broker resolves to a secret and an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RdsTarget {
    Instance(String),
    Cluster(String),
}

/// What RDS says about an instance or cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub secret_arn: String,
    /// `MasterUserSecret.SecretStatus`: creating, active, rotating or impaired.
    pub secret_status: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// A cluster's reader endpoint.
    pub reader_host: Option<String>,
    pub engine: Option<String>,
    pub dbname: Option<String>,
}

/// Resolves RDS instances and clusters.
pub(crate) trait RdsApi: Send + Sync + 'static {
    fn resolve<'a>(&'a self, target: &'a RdsTarget)
    -> BoxFuture<'a, Result<Topology, SourceError>>;
}

impl RdsTarget {
    /// The operation name used in upstream metrics.
    pub(crate) fn operation(&self) -> &'static str {
        match self {
            Self::Instance(_) => "DescribeDBInstances",
            Self::Cluster(_) => "DescribeDBClusters",
        }
    }
}

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
}

/// Sorts an AWS SDK failure that is not a definite service answer, by its type: timeouts (of an
/// attempt, the operation or the connection), answers the SDK could not parse (malformed: a
/// success status whose body is not the operation's output, or a response that is no HTTP
/// answer), and everything else as unavailable. The detail never holds anything of a response
/// but a service error code, checked for shape: the SDK's own `Debug` and `Display` forms can
/// carry the raw response, body included, so they are never used.
pub(crate) fn sdk_failure<E>(
    err: &aws_sdk_secretsmanager::error::SdkError<
        E,
        aws_sdk_secretsmanager::config::http::HttpResponse,
    >,
) -> SourceError
where
    E: aws_sdk_secretsmanager::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_secretsmanager::error::SdkError;
    match err {
        SdkError::TimeoutError(_) => SourceError::Timeout("no answer within the timeout".into()),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            SourceError::Timeout("connecting timed out".into())
        }
        SdkError::DispatchFailure(failure) => {
            let kind = if failure.is_io() {
                "a connection error"
            } else if failure.is_user() {
                "a request error"
            } else {
                "a dispatch error"
            };
            SourceError::Unavailable(format!("the request failed with {kind}"))
        }
        SdkError::ResponseError(_) => SourceError::Malformed(MALFORMED_RESPONSE.into()),
        // The SDK reports a success body it cannot parse as an unmodelled service error.
        SdkError::ServiceError(service) if service.raw().status().is_success() => {
            SourceError::Malformed(MALFORMED_RESPONSE.into())
        }
        SdkError::ServiceError(service) => SourceError::Unavailable(format!(
            "the service answered {}",
            error_code(service.err().code())
        )),
        _ => SourceError::Unavailable("the request could not be made".into()),
    }
}

/// The reason logged for an upstream answer that is not one.
pub(crate) const MALFORMED_RESPONSE: &str = "malformed response";

/// A service error code as it may be logged: the code when it has the shape of one (at most 64
/// letters, digits and `.:#_-`), else a placeholder. The code comes from the response.
pub(crate) fn error_code(code: Option<&str>) -> &str {
    match code {
        Some(code)
            if !code.is_empty()
                && code.len() <= 64
                && code
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".:#_-".contains(&b)) =>
        {
            code
        }
        Some(_) => "an error code that is not one",
        None => "an error without a code",
    }
}

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

impl SourceError {
    /// The `outcome` label for upstream metrics.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            Self::NotFound(_) | Self::Gone(_) | Self::NotManaged(_) => "not_found",
            Self::Timeout(_) => "timeout",
            Self::Unavailable(_) => "error",
            Self::Malformed(_) => "malformed",
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
