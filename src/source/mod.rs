//! Places credentials come from, each behind one trait ([`Source`]: a local JSON file for
//! development, AWS Secrets Manager; [`RdsApi`]: RDS instances and clusters; [`TokenSigner`]:
//! IAM auth tokens), one set per identity (the broker's own, and each assumed role), and the
//! one factory that builds them from the configuration.
//!
//! To add a source: a file here implementing [`Source`], a `SourceKind` variant in
//! `config/source.rs`, and its arm in [`build`] (the compiler points at it).

mod api;
mod assumed;
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

use std::collections::BTreeSet;

use crate::config::{AssumedRole, DatabaseConfig, Login, SourceConfig};

/// The clients of one identity: secrets, RDS when a database is named by it, and the signer
/// of IAM auth tokens when a database logs in with one.
pub(crate) struct Clients {
    pub(crate) secrets: Box<dyn Source>,
    pub(crate) rds: Option<Box<dyn RdsApi>>,
    pub(crate) iam: Option<Box<dyn TokenSigner>>,
    /// The region these clients call (`None` for the file source, or when no region is set).
    pub(crate) region: Option<String>,
    /// Secrets Manager in each fallback region a database names, by region.
    pub(crate) replicas: Vec<(String, Box<dyn Source>)>,
}

impl Clients {
    /// The source of secrets in fallback `region`, if a database names it.
    pub(crate) fn replica(&self, region: &str) -> Option<&dyn Source> {
        self.replicas
            .iter()
            .find(|(r, _)| r == region)
            .map(|(_, source)| source.as_ref())
    }
}

/// The sources a broker reads from: its own identity's clients, and those of each role a
/// database names (`databases.NAME.role_arn`).
pub(crate) struct Sources {
    pub(crate) own: Clients,
    pub(crate) roles: Vec<(AssumedRole, Clients)>,
}

impl Sources {
    /// The clients for a database made with `role` (`None`: the broker's own identity).
    pub(crate) fn of(&self, role: Option<&AssumedRole>) -> &Clients {
        role.and_then(|role| self.roles.iter().find(|(r, _)| r == role))
            .map_or(&self.own, |(_, clients)| clients)
    }
}

/// What the configured databases need besides a source of secrets.
#[derive(Debug, Clone, Default)]
struct Needs {
    /// A database is named by an RDS instance or cluster.
    rds: bool,
    /// A database logs in with an IAM auth token.
    iam: bool,
    /// The fallback regions databases name.
    regions: BTreeSet<String>,
}

/// Builds the configured source for `databases`: the RDS client and the token signer only when
/// one needs them, and a set of clients for each role they name.
pub(crate) async fn build<'a>(
    config: &SourceConfig,
    databases: impl Iterator<Item = &'a DatabaseConfig>,
) -> Sources {
    let mut needs = Needs::default();
    let mut roles = BTreeSet::new();
    for db in databases {
        needs.rds |= db.rds().is_some();
        needs.iam |= matches!(db.login, Login::Iam(_));
        roles.extend(db.role.clone());
        needs.regions.extend(db.fallback_regions.iter().cloned());
    }
    match config {
        SourceConfig::File { path } => Sources {
            own: Clients {
                secrets: Box::new(file::FileSource::new(path.clone())),
                rds: None,
                iam: None,
                region: None,
                replicas: Vec::new(),
            },
            roles: Vec::new(),
        },
        SourceConfig::SecretsManager(settings) => {
            let sdk = aws::sdk_config(settings).await;
            let mut assumed = Vec::with_capacity(roles.len());
            for role in roles {
                let role_sdk = assumed::assume(&sdk, &role).await;
                assumed.push((role, aws_clients(&role_sdk, &needs)));
            }
            Sources {
                own: aws_clients(&sdk, &needs),
                roles: assumed,
            }
        }
    }
}

/// The AWS clients of one SDK configuration (one identity), with Secrets Manager in each
/// fallback region.
fn aws_clients(sdk: &aws_config::SdkConfig, needs: &Needs) -> Clients {
    let replicas = needs
        .regions
        .iter()
        .map(|region| {
            let in_region = sdk
                .to_builder()
                .region(aws_config::Region::new(region.clone()))
                .build();
            let source = secrets_manager::SecretsManagerSource::new(&in_region);
            (region.clone(), Box::new(source) as Box<dyn Source>)
        })
        .collect();
    Clients {
        secrets: Box::new(secrets_manager::SecretsManagerSource::new(sdk)),
        rds: needs
            .rds
            .then(|| Box::new(rds::RdsClient::new(sdk)) as Box<dyn RdsApi>),
        iam: needs
            .iam
            .then(|| Box::new(iam::IamSigner::new(sdk)) as Box<dyn TokenSigner>),
        region: sdk.region().map(ToString::to_string),
        replicas,
    }
}
