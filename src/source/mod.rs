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
mod rds;
mod secrets_manager;
#[cfg(test)]
pub(crate) mod stand_in;

pub(crate) use api::{Call, MAX_BATCH, RdsApi, RotationFacts, Source, Topology, Version};
pub(crate) use error::SourceError;

use crate::config::SourceConfig;

/// The sources a broker reads from: secrets, and RDS when a database is named by it.
pub(crate) struct Sources {
    pub(crate) secrets: Box<dyn Source>,
    pub(crate) rds: Option<Box<dyn RdsApi>>,
}

/// Builds the configured source; the RDS client only when `needs_rds`.
pub(crate) async fn build(config: &SourceConfig, needs_rds: bool) -> Sources {
    match config {
        SourceConfig::File { path } => Sources {
            secrets: Box::new(file::FileSource::new(path.clone())),
            rds: None,
        },
        SourceConfig::SecretsManager(settings) => {
            let sdk = aws::sdk_config(settings).await;
            Sources {
                secrets: Box::new(secrets_manager::SecretsManagerSource::new(&sdk)),
                rds: needs_rds.then(|| Box::new(rds::RdsClient::new(&sdk)) as Box<dyn RdsApi>),
            }
        }
    }
}
