//! Places credentials come from, each behind the one [`Source`] trait: a local JSON file for
//! development, and AWS Secrets Manager through the AWS SDK.

use std::future::Future;
use std::pin::Pin;

use crate::credentials::SecretVersion;

pub(crate) mod file;
pub(crate) mod secrets_manager;

pub(crate) use file::FileSource;
pub(crate) use secrets_manager::SecretsManagerSource;

/// A boxed future, so that sources can sit behind `dyn Source`.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that returns the current version of a secret by id.
pub(crate) trait Source: Send + Sync + 'static {
    /// The operation name used in upstream metrics (`GetSecretValue`, `ReadFile`).
    fn operation(&self) -> &'static str;

    /// Fetches the current version of `secret_id`.
    fn fetch<'a>(&'a self, secret_id: &'a str)
    -> BoxFuture<'a, Result<SecretVersion, SourceError>>;
}

/// Why a source could not return a secret. The detail strings never hold secret content.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// The source has no secret with this id.
    #[error("secret not found: {0}")]
    NotFound(String),
    /// The source did not answer within the configured timeouts.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The source could not be reached or answered with an error.
    #[error("{0}")]
    Unavailable(String),
}

impl SourceError {
    /// The `outcome` label for upstream metrics.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::Timeout(_) => "timeout",
            Self::Unavailable(_) => "error",
        }
    }
}
