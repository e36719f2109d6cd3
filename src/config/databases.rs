//! `[databases.NAME]`: each database the broker serves, where its secret is found (a secret id,
//! or an RDS instance or cluster) and the endpoint values that complete it.

use serde::Deserialize;

use super::check::{ConfigError, invalid};
use super::source::SourceConfig;
use crate::credentials::Endpoint;

/// Where a database's secret is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// A secret name or ARN.
    SecretId(String),
    /// The master user secret of an RDS instance or cluster, resolved through the RDS API.
    Rds(RdsTarget),
}

/// An RDS database the broker resolves to a secret and an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RdsTarget {
    Instance(String),
    Cluster(String),
}

/// One database the broker serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    pub secret: SecretRef,
    /// The configured endpoint values (never a reader host); they win over RDS's.
    pub endpoint: Endpoint,
}

#[cfg(test)]
impl DatabaseConfig {
    /// A database read from `secret_id`, with no endpoint values: the one builder of tests.
    pub(crate) fn for_tests(secret_id: &str) -> Self {
        Self {
            secret: SecretRef::SecretId(secret_id.into()),
            endpoint: Endpoint::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatabase {
    secret_id: Option<String>,
    rds_instance: Option<String>,
    rds_cluster: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    dbname: Option<String>,
    engine: Option<String>,
}

impl RawDatabase {
    /// Checks the database table at `key`; RDS references need a source that supports them.
    pub(super) fn validate(
        self,
        key: &str,
        source: &SourceConfig,
    ) -> Result<DatabaseConfig, ConfigError> {
        let secret = match (self.secret_id, self.rds_instance, self.rds_cluster) {
            (Some(id), None, None) => SecretRef::SecretId(id),
            (None, Some(id), None) => SecretRef::Rds(RdsTarget::Instance(id)),
            (None, None, Some(id)) => SecretRef::Rds(RdsTarget::Cluster(id)),
            _ => {
                return Err(invalid(
                    key,
                    "set exactly one of secret_id, rds_instance and rds_cluster",
                ));
            }
        };
        let (field, id) = match &secret {
            SecretRef::SecretId(id) => ("secret_id", id),
            SecretRef::Rds(RdsTarget::Instance(id)) => ("rds_instance", id),
            SecretRef::Rds(RdsTarget::Cluster(id)) => ("rds_cluster", id),
        };
        if id.trim().is_empty() {
            return Err(invalid(format!("{key}.{field}"), "must not be empty"));
        }
        if !source.supports_rds() && matches!(secret, SecretRef::Rds(_)) {
            return Err(invalid(
                format!("{key}.{field}"),
                "RDS databases need source.kind = \"secrets_manager\"",
            ));
        }
        if self.port == Some(0) {
            return Err(invalid(
                format!("{key}.port"),
                "must be between 1 and 65535",
            ));
        }
        Ok(DatabaseConfig {
            secret,
            endpoint: Endpoint {
                host: self.host,
                port: self.port,
                dbname: self.dbname,
                engine: self.engine,
                reader_host: None,
            },
        })
    }
}
