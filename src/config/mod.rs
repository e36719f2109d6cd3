//! The configuration: a TOML file, overlaid by `CREDENTIAL_BROKER_*` variables, turned into a
//! validated [`Config`]. One file per section holds its raw serde struct, its typed struct and
//! its validation; invalid configuration is one line naming the key (exit 64).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

mod agent_file;
mod audit;
mod auth;
mod cache;
mod check;
mod compat;
mod databases;
mod env;
mod log;
mod rotation;
mod server;
mod sinks;
mod source;
mod token;
mod upstream;

use crate::credentials::DbName;
pub use audit::AuditConfig;
use audit::RawAudit;
pub use auth::{AuthConfig, ClientConfig, DEFAULT_CLIENT, Scope, TokenConfig, TokenSource};
use auth::{RawAuth, RawClient, validate_auth};
pub use cache::CacheConfig;
use cache::RawCache;
pub use check::ConfigError;
use check::invalid;
use compat::RawCompat;
pub use compat::{AgentCompatConfig, SecretPatterns};
use databases::RawDatabase;
pub use databases::{AssumedRole, DatabaseConfig, IamLogin, Login, RdsTarget, SecretRef};
pub use env::ENV_PREFIX;
use log::RawLog;
pub use log::{LogConfig, LogFormat};
use rotation::RawRotation;
pub use rotation::RotationConfig;
use server::RawServer;
pub use server::{Limits, ServerConfig, UnixSocketConfig};
use sinks::RawSink;
pub use sinks::{ReloadSignal, SignalReload, SinkConfig};
pub use source::{AwsConfig, SourceConfig};
use source::{RawAws, RawSource};
pub use token::read_token_file;
use upstream::RawUpstream;
pub use upstream::UpstreamConfig;

/// The validated configuration the broker runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub cache: CacheConfig,
    pub upstream: UpstreamConfig,
    pub rotation: RotationConfig,
    pub source: SourceConfig,
    pub log: LogConfig,
    pub audit: AuditConfig,
    pub databases: BTreeMap<DbName, DatabaseConfig>,
    /// The credential files kept current.
    pub sinks: Vec<SinkConfig>,
    /// The AWS Secrets Manager Agent's API, when it is served.
    pub aws_agent: Option<AgentCompatConfig>,
    /// `CREDENTIAL_BROKER_` variables of the environment that are no configuration key (not
    /// configuration: Kubernetes service links, a token named by `token_env`, …), by name.
    pub ignored_env: Vec<String>,
}

impl Config {
    /// Reads `path`, overlays the environment, and validates the result.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config = Self::from_figment(&toml_file(path)?.merge(env_overlay()))?;
        sinks::check_files(&config.sinks)?;
        let token_vars: BTreeSet<&str> = config.auth.token_variables().collect();
        config.ignored_env =
            env::ignored(std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()))
                .into_iter()
                .filter(|name| !token_vars.contains(name.as_str()))
                .collect();
        Ok(config)
    }

    /// Parses a TOML document without looking at the environment (used by tests and examples).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_figment(&Figment::from(Toml::string(text)))
    }

    fn from_figment(figment: &Figment) -> Result<Self, ConfigError> {
        let raw: RawConfig = figment.extract().map_err(|e| extraction_error(&e))?;
        raw.validate()
    }
}

/// The TOML file at `path`, which must exist.
fn toml_file(path: &Path) -> Result<Figment, ConfigError> {
    if !path.is_file() {
        return Err(invalid(
            path.display().to_string(),
            "configuration file not found",
        ));
    }
    Ok(Figment::from(Toml::file_exact(path)))
}

/// The `CREDENTIAL_BROKER_<SECTION>__<KEY>` variables of the environment, as configuration.
fn env_overlay() -> Env {
    Env::prefixed(ENV_PREFIX)
        .filter(|key| env::is_config_key(key.as_str()))
        .split("__")
}

/// A value that does not fit its key, as one line naming the key.
fn extraction_error(e: &figment::Error) -> ConfigError {
    let key = if e.path.is_empty() {
        e.metadata.as_ref().map_or_else(
            || "configuration".to_owned(),
            |m| {
                m.source
                    .as_ref()
                    .map_or_else(|| m.name.to_string(), ToString::to_string)
            },
        )
    } else {
        e.path.join(".")
    };
    // One line: multi-line parser messages are folded.
    let message = e.kind.to_string();
    invalid(
        key,
        message.split_whitespace().collect::<Vec<_>>().join(" "),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    rotation: RawRotation,
    #[serde(default)]
    source: RawSource,
    #[serde(default)]
    aws: RawAws,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    clients: BTreeMap<String, RawClient>,
    #[serde(default)]
    databases: BTreeMap<String, RawDatabase>,
    #[serde(default)]
    sinks: Vec<RawSink>,
    #[serde(default)]
    compat: RawCompat,
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let server = self
            .server
            .validate(!self.sinks.is_empty() || self.compat.aws_agent.is_some())?;
        let cache = self.cache.validate()?;
        let upstream = self.upstream.validate()?;
        let rotation = self.rotation.validate()?;
        let source = self.source.validate(self.aws, &server.limits)?;
        let log = self.log.validate()?;
        let aws_agent = self
            .compat
            .aws_agent
            .map(compat::RawAgentCompat::validate)
            .transpose()?;
        if self.databases.is_empty() && aws_agent.is_none() {
            return Err(invalid(
                "databases",
                "at least one database must be configured (or compat.aws_agent)",
            ));
        }
        let mut databases = BTreeMap::new();
        for (name, db) in self.databases {
            let key = format!("databases.{name}");
            let db_name = DbName::parse(&name).map_err(|why| invalid(&key, why))?;
            databases.insert(db_name, db.validate(&key, &source)?);
        }
        let names: Vec<&DbName> = databases.keys().collect();
        let sinks = self
            .sinks
            .into_iter()
            .enumerate()
            .map(|(i, sink)| sink.validate(i, &names))
            .collect::<Result<Vec<_>, _>>()?;
        sinks::refuse_shared_paths(&sinks)?;
        let auth = validate_auth(self.auth, self.clients, &databases, aws_agent.is_some())?;
        if let AuthConfig::Clients { clients, .. } = &auth
            && server.unix_socket.is_none()
            && let Some(client) = clients.iter().find(|c| !c.unix_uids.is_empty())
        {
            return Err(invalid(
                format!("clients.{}.unix_uids", client.name),
                "peer uids are only known on a Unix socket; set server.unix_socket",
            ));
        }
        let audit = self.audit.validate()?;
        Ok(Config {
            server,
            auth,
            audit,
            cache,
            upstream,
            rotation,
            source,
            log,
            databases,
            sinks,
            aws_agent,
            ignored_env: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests;
