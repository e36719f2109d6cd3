//! `[databases.NAME]`: each database the broker serves, how its clients log in (a stored
//! password, found by secret id or through an RDS instance or cluster; or an IAM auth token the
//! broker signs) and the endpoint values that complete it.

use serde::Deserialize;

use super::check::{ConfigError, invalid};
use super::source::{SourceConfig, check_regions};
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

/// An IAM role in another account (or this one) whose credentials every AWS call for a database
/// uses, from STS `AssumeRole`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssumedRole {
    pub arn: String,
    /// The external id the role's trust policy asks for, if any.
    pub external_id: Option<String>,
}

/// The longest role ARN STS takes.
const MAX_ROLE_ARN: usize = 2048;

/// The longest IAM database user name taken (PostgreSQL's limit; MySQL's is 32).
const MAX_IAM_USERNAME: usize = 63;

/// One database the broker serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    pub login: Login,
    /// The role every AWS call for this database is made with; `None`: the broker's own
    /// credentials.
    pub role: Option<AssumedRole>,
    /// The regions whose replica of the secret is read, in order, while the primary region
    /// fails transiently and no fresh value is cached (its own list, or `aws.fallback_regions`).
    pub fallback_regions: Vec<String>,
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
            role: None,
            fallback_regions: Vec::new(),
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
    role_arn: Option<String>,
    external_id: Option<String>,
    fallback_regions: Option<Vec<String>>,
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
        let role = assumed_role(key, self.role_arn, self.external_id, source)?;
        let fallback_regions = match self.fallback_regions {
            Some(_) if !source.supports_rds() => {
                return Err(invalid(
                    format!("{key}.fallback_regions"),
                    "fallback regions need source.kind = \"secrets_manager\"",
                ));
            }
            Some(regions) => {
                check_regions(
                    &format!("{key}.fallback_regions"),
                    &regions,
                    source.region(),
                )?;
                regions
            }
            None => source.fallback_regions().to_vec(),
        };
        Ok(DatabaseConfig {
            login,
            role,
            fallback_regions,
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

/// Checks `role_arn` (an IAM role ARN, `arn:PARTITION:iam::ACCOUNT:role/NAME`) and
/// `external_id` (2 to 1,224 of the characters STS takes, and only with a role).
fn assumed_role(
    key: &str,
    arn: Option<String>,
    external_id: Option<String>,
    source: &SourceConfig,
) -> Result<Option<AssumedRole>, ConfigError> {
    let Some(arn) = arn else {
        if external_id.is_some() {
            return Err(invalid(
                format!("{key}.external_id"),
                "only allowed with role_arn",
            ));
        }
        return Ok(None);
    };
    if !source.supports_rds() {
        return Err(invalid(
            format!("{key}.role_arn"),
            "roles need source.kind = \"secrets_manager\"",
        ));
    }
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let is_role_arn = arn.len() <= MAX_ROLE_ARN
        && parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5].len() > "role/".len()
        && parts[5].starts_with("role/")
        && arn.bytes().all(|b| b.is_ascii_graphic());
    if !is_role_arn {
        return Err(invalid(
            format!("{key}.role_arn"),
            "must be an IAM role ARN, arn:aws:iam::ACCOUNT:role/NAME",
        ));
    }
    if let Some(id) = &external_id {
        let fits = (2..=1224).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@:/-_".contains(&b));
        if !fits {
            return Err(invalid(
                format!("{key}.external_id"),
                "must be 2 to 1224 letters, digits or +=,.@:/-_",
            ));
        }
    }
    Ok(Some(AssumedRole { arn, external_id }))
}
