//! `[databases.NAME]`: each database the broker serves, how its clients log in (a stored
//! password, found by secret id or through an RDS instance or cluster; or an IAM auth token the
//! broker signs) and the endpoint values that complete it.

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

impl RdsTarget {
    /// The instance or cluster identifier.
    pub fn id(&self) -> &str {
        let (Self::Instance(id) | Self::Cluster(id)) = self;
        id
    }
}

/// How clients of a database log in, and so where the broker gets their credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// A password stored in a secret.
    Secret(SecretRef),
    /// An RDS IAM authentication token, signed by the broker for `username`.
    Iam(IamLogin),
}

/// An IAM database login: the database user, and the RDS database whose endpoint the token is
/// for (`None`: the configured host and port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamLogin {
    pub username: String,
    pub rds: Option<RdsTarget>,
}

/// The longest IAM database user name taken (PostgreSQL's limit; MySQL's is 32).
const MAX_IAM_USERNAME: usize = 63;

/// One database the broker serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    pub login: Login,
    /// The configured endpoint values (never a reader host); they win over RDS's.
    pub endpoint: Endpoint,
}

impl DatabaseConfig {
    /// The RDS database this one is resolved through, if any.
    pub fn rds(&self) -> Option<&RdsTarget> {
        match &self.login {
            Login::Secret(SecretRef::Rds(target)) => Some(target),
            Login::Iam(iam) => iam.rds.as_ref(),
            Login::Secret(SecretRef::SecretId(_)) => None,
        }
    }

    /// The secret id configured for this database, if it is named by one.
    pub fn secret_id(&self) -> Option<&str> {
        match &self.login {
            Login::Secret(SecretRef::SecretId(id)) => Some(id),
            _ => None,
        }
    }
}

#[cfg(test)]
impl DatabaseConfig {
    /// A database read from `secret_id`, with no endpoint values: the one builder of tests.
    pub(crate) fn for_tests(secret_id: &str) -> Self {
        Self {
            login: Login::Secret(SecretRef::SecretId(secret_id.into())),
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
    auth: Option<AuthKind>,
    username: Option<String>,
}

/// `databases.NAME.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AuthKind {
    Password,
    Iam,
}

impl RawDatabase {
    /// Checks the database table at `key`; RDS references and IAM logins need a source that
    /// supports them.
    pub(super) fn validate(
        self,
        key: &str,
        source: &SourceConfig,
    ) -> Result<DatabaseConfig, ConfigError> {
        let named = match (self.secret_id, self.rds_instance, self.rds_cluster) {
            (Some(id), None, None) => Some(("secret_id", SecretRef::SecretId(id))),
            (None, Some(id), None) => {
                Some(("rds_instance", SecretRef::Rds(RdsTarget::Instance(id))))
            }
            (None, None, Some(id)) => Some(("rds_cluster", SecretRef::Rds(RdsTarget::Cluster(id)))),
            (None, None, None) if self.auth == Some(AuthKind::Iam) => None,
            _ => {
                return Err(invalid(
                    key,
                    "set exactly one of secret_id, rds_instance and rds_cluster",
                ));
            }
        };
        if let Some((field, reference)) = &named {
            let (SecretRef::SecretId(id)
            | SecretRef::Rds(RdsTarget::Instance(id) | RdsTarget::Cluster(id))) = reference;
            if id.trim().is_empty() {
                return Err(invalid(format!("{key}.{field}"), "must not be empty"));
            }
            if !source.supports_rds() && matches!(reference, SecretRef::Rds(_)) {
                return Err(invalid(
                    format!("{key}.{field}"),
                    "RDS databases need source.kind = \"secrets_manager\"",
                ));
            }
        }
        let login = match (self.auth.unwrap_or(AuthKind::Password), named) {
            (AuthKind::Password, _) if self.username.is_some() => {
                return Err(invalid(
                    format!("{key}.username"),
                    "only allowed with auth = \"iam\" (a password login takes its user from the secret)",
                ));
            }
            (AuthKind::Password, Some((_, reference))) => Login::Secret(reference),
            (AuthKind::Password, None) => unreachable!("a password login names its secret"),
            (AuthKind::Iam, Some((field, SecretRef::SecretId(_)))) => {
                return Err(invalid(
                    format!("{key}.{field}"),
                    "not used with auth = \"iam\": name the database by rds_instance, rds_cluster, or host and port",
                ));
            }
            (AuthKind::Iam, named) => {
                let rds = named.and_then(|(_, reference)| match reference {
                    SecretRef::Rds(target) => Some(target),
                    SecretRef::SecretId(_) => None,
                });
                iam_login(
                    key,
                    self.username,
                    source,
                    self.host.is_some() && self.port.is_some(),
                    rds,
                )?
            }
        };
        if self.port == Some(0) {
            return Err(invalid(
                format!("{key}.port"),
                "must be between 1 and 65535",
            ));
        }
        Ok(DatabaseConfig {
            login,
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

/// Checks an IAM login: a user name the token can name as it is, and an endpoint, from RDS or
/// the configured `host` and `port` (`has_endpoint`).
fn iam_login(
    key: &str,
    username: Option<String>,
    source: &SourceConfig,
    has_endpoint: bool,
    rds: Option<RdsTarget>,
) -> Result<Login, ConfigError> {
    if !source.supports_rds() {
        return Err(invalid(
            format!("{key}.auth"),
            "IAM logins need source.kind = \"secrets_manager\" (the broker signs tokens with its AWS credentials)",
        ));
    }
    let username = username
        .ok_or_else(|| invalid(format!("{key}.username"), "required with auth = \"iam\""))?;
    let fits = !username.is_empty()
        && username.len() <= MAX_IAM_USERNAME
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !fits {
        return Err(invalid(
            format!("{key}.username"),
            format!(
                "must be 1 to {MAX_IAM_USERNAME} letters, digits, '_', '-' or '.' (the database user the token names)"
            ),
        ));
    }
    if rds.is_none() && !has_endpoint {
        return Err(invalid(
            key,
            "an IAM login needs rds_instance, rds_cluster, or both host and port",
        ));
    }
    Ok(Login::Iam(IamLogin { username, rds }))
}
