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
}

/// Sorts an AWS SDK failure that is not a definite service answer: timeouts (of an attempt, the
/// operation or the connection) by their type, everything else as unavailable.
pub(crate) fn sdk_failure<E, R>(err: &aws_sdk_secretsmanager::error::SdkError<E, R>) -> SourceError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_secretsmanager::error::{DisplayErrorContext, SdkError};
    let detail = DisplayErrorContext(err).to_string();
    match err {
        SdkError::TimeoutError(_) => SourceError::Timeout(detail),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => SourceError::Timeout(detail),
        _ => SourceError::Unavailable(detail),
    }
}

impl SourceError {
    /// The `outcome` label for upstream metrics.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            Self::NotFound(_) | Self::Gone(_) | Self::NotManaged(_) => "not_found",
            Self::Timeout(_) => "timeout",
            Self::Unavailable(_) => "error",
        }
    }

    /// Whether the source failed to answer (as opposed to answering "no").
    pub(crate) fn is_outage(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::Unavailable(_))
    }
}
