//! Places credentials come from, each behind one trait ([`Source`]: a local JSON file for
//! development, AWS Secrets Manager; [`RdsApi`]: RDS instances and clusters), and the one
//! factory that builds them from the configuration.
//!
//! To add a source: a file here implementing [`Source`], a `SourceKind` variant in
//! `config/source.rs`, and its arm in [`build`] (the compiler points at it).

mod api;
mod aws;
mod error;
mod file;
mod iam;
mod rds;
mod secrets_manager;
#[cfg(test)]
pub(crate) mod stand_in;

pub(crate) use api::{
    Call, MAX_BATCH, RdsApi, RotationFacts, SIGN_AUTH_TOKEN, Source, TokenSigner, Topology, Version,
};
pub(crate) use error::SourceError;

use crate::config::SourceConfig;

/// The sources a broker reads from: secrets, RDS when a database is named by it, and the
/// signer of IAM auth tokens when a database logs in with one.
pub(crate) struct Sources {
    pub(crate) secrets: Box<dyn Source>,
    pub(crate) rds: Option<Box<dyn RdsApi>>,
    pub(crate) iam: Option<Box<dyn TokenSigner>>,
}

/// What the configured databases need besides a source of secrets.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Needs {
    /// A database is named by an RDS instance or cluster.
    pub(crate) rds: bool,
    /// A database logs in with an IAM auth token.
    pub(crate) iam: bool,
}

/// Builds the configured source, with the RDS client and the token signer only when needed.
pub(crate) async fn build(config: &SourceConfig, needs: Needs) -> Sources {
    match config {
        SourceConfig::File { path } => Sources {
            secrets: Box::new(file::FileSource::new(path.clone())),
            rds: None,
            iam: None,
        },
        SourceConfig::SecretsManager(settings) => {
            let sdk = aws::sdk_config(settings).await;
            Sources {
                secrets: Box::new(secrets_manager::SecretsManagerSource::new(&sdk)),
                rds: needs
                    .rds
                    .then(|| Box::new(rds::RdsClient::new(&sdk)) as Box<dyn RdsApi>),
                iam: needs
                    .iam
                    .then(|| Box::new(iam::IamSigner::new(&sdk)) as Box<dyn TokenSigner>),
            }
        }
    }
}
