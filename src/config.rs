//! Configuration: a TOML file overlaid with `CREDENTIAL_BROKER_*` environment variables, read into
//! raw serde structs (unknown keys rejected) and then turned into the validated, typed [`Config`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod env;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::SecretString;
use serde::Deserialize;

use crate::credentials::DbName;
use crate::source::RdsTarget;

/// Prefix of the environment variables that override file values; `__` separates nesting levels.
pub const ENV_PREFIX: &str = "CREDENTIAL_BROKER_";

/// A configuration that cannot be used, with the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending key (`server.listen`), or the file for whole-file problems.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// Checks that the duration at `key` lies in `min..=max` (the documented range).
fn duration_in(
    key: &str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(
            key,
            format!(
                "must be between {} and {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(())
}

/// Checks that the number at `key` lies in `min..=max` (the documented range).
fn number_in<T: PartialOrd + fmt::Display + Copy>(
    key: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(key, format!("must be between {min} and {max}")));
    }
    Ok(())
}

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_mins(1);
const HOUR: Duration = Duration::from_hours(1);
const WEEK: Duration = Duration::from_hours(7 * 24);

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
    /// `CREDENTIAL_BROKER_` variables of the environment that are no configuration key (not
    /// configuration: Kubernetes service links, a token named by `token_env`, …), by name.
    pub ignored_env: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address of the credentials API on TCP; `None` when it listens on a Unix socket only.
    pub listen: Option<SocketAddr>,
    /// The credentials API on a Unix domain socket, alongside or instead of TCP.
    pub unix_socket: Option<UnixSocketConfig>,
    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub admin_listen: SocketAddr,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    pub limits: Limits,
}

/// A Unix domain socket for the credentials API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocketConfig {
    pub path: PathBuf,
    /// Permission bits of the socket file (connecting needs write permission).
    pub mode: u32,
    /// Group id given to the socket file, so that one group's members may connect.
    pub group: Option<u32>,
}

/// Overload and input limits of the credentials API.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most; further connections wait in the listen backlog.
    pub max_connections: usize,
    /// Requests in progress at most; more are answered 503 `overloaded` at once.
    pub max_concurrent_requests: usize,
    /// Longest time one request may take before it is answered 504 `request_timeout`.
    pub request_timeout: Duration,
    /// Largest total size of a request's header names and values.
    pub max_header_bytes: usize,
    /// Largest declared request body.
    pub max_body_bytes: u64,
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
}

/// How callers of the credentials API prove who they are.
#[derive(Debug, Clone)]
pub enum AuthConfig {
    /// Each request is attributed to one configured client, by bearer token or by the peer uid
    /// of a Unix socket connection, and may read only that client's databases.
    Clients {
        clients: Vec<ClientConfig>,
        /// How often token files are re-read, so that a rotated token takes effect.
        reload_interval: Duration,
    },
    /// No token is checked (`auth.disabled = true`); meant for tests and local use only.
    Disabled,
}

impl AuthConfig {
    /// The environment variables tokens are read from (`token_env`).
    fn token_variables(&self) -> impl Iterator<Item = &str> {
        let clients = match self {
            Self::Clients { clients, .. } => clients.as_slice(),
            Self::Disabled => &[],
        };
        clients.iter().filter_map(|client| match &client.token {
            Some(TokenConfig {
                source: TokenSource::Env(var),
                ..
            }) => Some(var.as_str()),
            _ => None,
        })
    }
}

/// One caller of the credentials API: how it is recognised and what it may read.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// A short name for logs, audit events and metric labels.
    pub name: String,
    pub token: Option<TokenConfig>,
    /// Unix socket peers with one of these uids are this client without a token.
    pub unix_uids: Vec<u32>,
    pub scope: Scope,
}

/// A client's bearer token: its value at load time and where a new value is read from.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub source: TokenSource,
    pub value: SecretString,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Re-read every `auth.reload_interval`.
    File(PathBuf),
    /// Read once at start-up.
    Env(String),
}

/// The databases a client may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Only(BTreeSet<DbName>),
}

impl Scope {
    pub fn allows(&self, db: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(dbs) => dbs.contains(db),
        }
    }
}

/// Where audit events (one per credentials access) go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditConfig {
    Off,
    /// JSON lines on stderr, next to the logs, with `"target":"audit"`.
    Stderr,
    /// JSON lines appended to a file of their own.
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub ttl: Duration,
    pub capacity: u64,
    /// Fetch every configured database once at start-up.
    pub warm: bool,
    /// How long past `ttl` the last good credentials may be served while the source fails.
    pub max_stale: Duration,
    /// How long an RDS database's resolved endpoint and secret ARN are reused.
    pub topology_ttl: Duration,
}

#[cfg(test)]
impl CacheConfig {
    /// A cold cache for unit tests: `ttl` and `max_stale` as given, room for 10 databases.
    pub(crate) fn for_tests(ttl: Duration, max_stale: Duration) -> Self {
        Self {
            ttl,
            capacity: 10,
            warm: false,
            max_stale,
            topology_ttl: Duration::from_mins(1),
        }
    }
}

/// Rotation awareness.
#[derive(Debug, Clone, Copy)]
pub struct RotationConfig {
    /// How often `DescribeSecret` is called per database for rotation dates and pending versions.
    pub describe_interval: Duration,
    /// An explicit refresh within this time of the last fetch is answered from that fetch.
    pub refresh_min_interval: Duration,
}

impl Default for RotationConfig {
    fn default() -> Self {
        Self {
            describe_interval: Duration::from_mins(10),
            refresh_min_interval: Duration::from_secs(1),
        }
    }
}

/// How the broker paces calls to a failing source, per database.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamConfig {
    /// Delay before the first retry after a failure; doubles with each further failure.
    pub backoff_initial: Duration,
    /// Longest delay between attempts.
    pub backoff_max: Duration,
}

/// Where secrets come from.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// A local JSON file mapping secret ids to secret values; no AWS involved.
    File { path: PathBuf },
    /// AWS Secrets Manager through the AWS SDK.
    SecretsManager(AwsConfig),
}

#[derive(Debug, Clone)]
pub struct AwsConfig {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub connect_timeout: Duration,
    pub attempt_timeout: Duration,
    pub operation_timeout: Duration,
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info` or `credential_broker=debug`.
    pub level: String,
}

/// Where a database's secret is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// A secret name or ARN.
    SecretId(String),
    /// The master user secret of an RDS instance or cluster, resolved through the RDS API.
    Rds(RdsTarget),
}

/// One database the broker serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    pub secret: SecretRef,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub dbname: Option<String>,
    pub engine: Option<String>,
}

impl Config {
    /// Reads `path`, overlays the environment, and validates the result.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if !path.is_file() {
            return Err(invalid(
                path.display().to_string(),
                "configuration file not found",
            ));
        }
        let env = Env::prefixed(ENV_PREFIX)
            .filter(|key| env::is_config_key(key.as_str()))
            .split("__");
        let mut config = Self::from_figment(&Figment::from(Toml::file_exact(path)).merge(env))?;
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
        let raw: RawConfig = figment.extract().map_err(|e| {
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
        })?;
        raw.validate()
    }
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    /// A socket address, or `off` for a Unix socket only.
    listen: String,
    unix_socket: Option<RawUnixSocket>,
    admin_listen: SocketAddr,
    allow_non_loopback: bool,
    #[serde(with = "humantime_serde")]
    shutdown_grace: Duration,
    max_connections: usize,
    max_concurrent_requests: usize,
    #[serde(with = "humantime_serde")]
    request_timeout: Duration,
    max_header_bytes: usize,
    max_body_bytes: u64,
    #[serde(with = "humantime_serde")]
    header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_concurrent_requests: 256,
            request_timeout: Duration::from_secs(10),
            max_header_bytes: 8 * 1024,
            max_body_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(5),
        }
    }
}

impl Default for RawServer {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            listen: "127.0.0.1:2775".to_owned(),
            unix_socket: None,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 2776)),
            allow_non_loopback: false,
            shutdown_grace: Duration::from_secs(10),
            max_connections: limits.max_connections,
            max_concurrent_requests: limits.max_concurrent_requests,
            request_timeout: limits.request_timeout,
            max_header_bytes: limits.max_header_bytes,
            max_body_bytes: limits.max_body_bytes,
            header_read_timeout: limits.header_read_timeout,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnixSocket {
    path: PathBuf,
    /// Octal permission bits, as a string: `"0660"`.
    #[serde(default = "default_socket_mode")]
    mode: String,
    group: Option<u32>,
}

fn default_socket_mode() -> String {
    "0660".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAuth {
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    disabled: bool,
    #[serde(with = "humantime_serde")]
    reload_interval: Duration,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            token_file: None,
            token_env: None,
            disabled: false,
            reload_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    #[serde(default)]
    unix_uids: Vec<u32>,
    databases: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    #[serde(default)]
    output: AuditOutput,
    path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AuditOutput {
    Off,
    #[default]
    Stderr,
    File,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCache {
    #[serde(with = "humantime_serde")]
    ttl: Duration,
    capacity: u64,
    warm: bool,
    #[serde(with = "humantime_serde")]
    max_stale: Duration,
    #[serde(with = "humantime_serde")]
    topology_ttl: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRotation {
    #[serde(with = "humantime_serde")]
    describe_interval: Duration,
    #[serde(with = "humantime_serde")]
    refresh_min_interval: Duration,
}

impl Default for RawRotation {
    fn default() -> Self {
        let defaults = RotationConfig::default();
        Self {
            describe_interval: defaults.describe_interval,
            refresh_min_interval: defaults.refresh_min_interval,
        }
    }
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            ttl: Duration::from_mins(5),
            capacity: 1000,
            warm: true,
            max_stale: Duration::from_hours(1),
            topology_ttl: Duration::from_mins(15),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUpstream {
    #[serde(with = "humantime_serde")]
    backoff_initial: Duration,
    #[serde(with = "humantime_serde")]
    backoff_max: Duration,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_mins(1),
        }
    }
}

impl Default for RawUpstream {
    fn default() -> Self {
        let defaults = UpstreamConfig::default();
        Self {
            backoff_initial: defaults.backoff_initial,
            backoff_max: defaults.backoff_max,
        }
    }
}

impl RawUpstream {
    fn validate(self) -> Result<UpstreamConfig, ConfigError> {
        duration_in("upstream.backoff_initial", self.backoff_initial, MS, HOUR)?;
        duration_in("upstream.backoff_max", self.backoff_max, MS, HOUR)?;
        if self.backoff_max < self.backoff_initial {
            return Err(invalid(
                "upstream.backoff_max",
                "must not be less than upstream.backoff_initial",
            ));
        }
        Ok(UpstreamConfig {
            backoff_initial: self.backoff_initial,
            backoff_max: self.backoff_max,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    kind: SourceKind,
    path: Option<PathBuf>,
}

impl Default for RawSource {
    fn default() -> Self {
        Self {
            kind: SourceKind::SecretsManager,
            path: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum SourceKind {
    File,
    SecretsManager,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAws {
    region: Option<String>,
    endpoint_url: Option<String>,
    #[serde(with = "humantime_serde")]
    connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    attempt_timeout: Duration,
    #[serde(with = "humantime_serde")]
    operation_timeout: Duration,
    max_attempts: u32,
}

impl Default for RawAws {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            connect_timeout: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(3),
            operation_timeout: Duration::from_secs(8),
            max_attempts: 3,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: LogFormat,
    level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    secret_id: Option<String>,
    rds_instance: Option<String>,
    rds_cluster: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    dbname: Option<String>,
    engine: Option<String>,
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let server = self.server.validate()?;
        let cache = self.cache.validate()?;
        let upstream = self.upstream.validate()?;
        duration_in(
            "rotation.describe_interval",
            self.rotation.describe_interval,
            SECOND,
            WEEK,
        )?;
        duration_in(
            "rotation.refresh_min_interval",
            self.rotation.refresh_min_interval,
            Duration::ZERO,
            HOUR,
        )?;
        let rotation = RotationConfig {
            describe_interval: self.rotation.describe_interval,
            refresh_min_interval: self.rotation.refresh_min_interval,
        };
        let source = match self.source.kind {
            SourceKind::File => {
                let path = self.source.path.ok_or_else(|| {
                    invalid("source.path", "required when source.kind = \"file\"")
                })?;
                SourceConfig::File { path }
            }
            SourceKind::SecretsManager => {
                if self.source.path.is_some() {
                    return Err(invalid(
                        "source.path",
                        "only allowed when source.kind = \"file\"",
                    ));
                }
                let aws = self.aws.validate()?;
                if server.limits.request_timeout <= aws.operation_timeout {
                    return Err(invalid(
                        "server.request_timeout",
                        format!(
                            "must be longer than aws.operation_timeout ({}), or upstream timeouts could never be reported as such",
                            humantime::format_duration(aws.operation_timeout)
                        ),
                    ));
                }
                SourceConfig::SecretsManager(aws)
            }
        };
        if self.log.level.trim().is_empty()
            || self
                .log
                .level
                .parse::<tracing_subscriber::filter::Targets>()
                .is_err()
        {
            return Err(invalid(
                "log.level",
                "a level (error, warn, info, debug, trace) or target=level list",
            ));
        }
        if self.databases.is_empty() {
            return Err(invalid(
                "databases",
                "at least one database must be configured",
            ));
        }
        let mut databases = BTreeMap::new();
        for (name, db) in self.databases {
            let key = format!("databases.{name}");
            let db_name = DbName::parse(&name).map_err(|why| invalid(&key, why))?;
            let file_source = matches!(source, SourceConfig::File { .. });
            databases.insert(db_name, db.validate(&key, file_source)?);
        }
        let auth = validate_auth(self.auth, self.clients, &databases)?;
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
            log: LogConfig {
                format: self.log.format,
                level: self.log.level,
            },
            databases,
            ignored_env: Vec::new(),
        })
    }
}

impl RawDatabase {
    /// Checks the database table at `key`; RDS references need the Secrets Manager source.
    fn validate(self, key: &str, file_source: bool) -> Result<DatabaseConfig, ConfigError> {
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
        if file_source && matches!(secret, SecretRef::Rds(_)) {
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
            host: self.host,
            port: self.port,
            dbname: self.dbname,
            engine: self.engine,
        })
    }
}

impl RawServer {
    fn validate(self) -> Result<ServerConfig, ConfigError> {
        let listen = match self.listen.trim() {
            "off" => None,
            text => Some(text.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "server.listen",
                    format!("{text:?} is not an address such as 127.0.0.1:2775, nor \"off\""),
                )
            })?),
        };
        if let Some(listen) = listen
            && !listen.ip().is_loopback()
            && !self.allow_non_loopback
        {
            return Err(invalid(
                "server.listen",
                format!(
                    "{listen} is not a loopback address; the credentials API stays on loopback unless server.allow_non_loopback = true"
                ),
            ));
        }
        let unix_socket = self.unix_socket.map(RawUnixSocket::validate).transpose()?;
        if listen.is_none() && unix_socket.is_none() {
            return Err(invalid(
                "server.listen",
                "\"off\" needs server.unix_socket, or the credentials API would not listen at all",
            ));
        }
        number_in("server.max_connections", self.max_connections, 1, 65_536)?;
        number_in(
            "server.max_concurrent_requests",
            self.max_concurrent_requests,
            1,
            65_536,
        )?;
        number_in("server.max_header_bytes", self.max_header_bytes, 1, 1 << 20)?;
        number_in("server.max_body_bytes", self.max_body_bytes, 0, 1 << 20)?;
        duration_in(
            "server.request_timeout",
            self.request_timeout,
            100 * MS,
            10 * MINUTE,
        )?;
        duration_in(
            "server.header_read_timeout",
            self.header_read_timeout,
            100 * MS,
            MINUTE,
        )?;
        duration_in(
            "server.shutdown_grace",
            self.shutdown_grace,
            Duration::ZERO,
            10 * MINUTE,
        )?;
        Ok(ServerConfig {
            listen,
            unix_socket,
            admin_listen: self.admin_listen,
            shutdown_grace: self.shutdown_grace,
            limits: Limits {
                max_connections: self.max_connections,
                max_concurrent_requests: self.max_concurrent_requests,
                request_timeout: self.request_timeout,
                max_header_bytes: self.max_header_bytes,
                max_body_bytes: self.max_body_bytes,
                header_read_timeout: self.header_read_timeout,
            },
        })
    }
}

impl RawUnixSocket {
    fn validate(self) -> Result<UnixSocketConfig, ConfigError> {
        let mode = u32::from_str_radix(self.mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|mode| *mode <= 0o777)
            .ok_or_else(|| {
                invalid(
                    "server.unix_socket.mode",
                    "octal permission bits such as \"0660\"",
                )
            })?;
        if mode & 0o002 != 0 {
            return Err(invalid(
                "server.unix_socket.mode",
                "must not let every local user connect (no world write bit)",
            ));
        }
        if self.path.as_os_str().is_empty() || !self.path.is_absolute() {
            return Err(invalid(
                "server.unix_socket.path",
                "must be an absolute path",
            ));
        }
        Ok(UnixSocketConfig {
            path: self.path,
            mode,
            group: self.group,
        })
    }
}

/// The name the single-token form of `[auth]` gives its client.
pub const DEFAULT_CLIENT: &str = "default";

/// Turns `[auth]` and `[clients.*]` into the clients the API recognises.
fn validate_auth(
    auth: RawAuth,
    raw_clients: BTreeMap<String, RawClient>,
    databases: &BTreeMap<DbName, DatabaseConfig>,
) -> Result<AuthConfig, ConfigError> {
    let legacy = token_config(auth.token_file, auth.token_env, "auth")?;
    if auth.disabled {
        if legacy.is_some() || !raw_clients.is_empty() {
            return Err(invalid(
                "auth.disabled",
                "cannot be combined with a token or [clients]",
            ));
        }
        return Ok(AuthConfig::Disabled);
    }
    duration_in("auth.reload_interval", auth.reload_interval, 100 * MS, HOUR)?;
    let mut clients = Vec::new();
    if let Some(token) = legacy {
        clients.push(ClientConfig {
            name: DEFAULT_CLIENT.to_owned(),
            token: Some(token),
            unix_uids: Vec::new(),
            scope: Scope::All,
        });
    }
    for (name, raw) in raw_clients {
        let key = format!("clients.{name}");
        DbName::check(&name).map_err(|why| invalid(&key, why.replace("database", "client")))?;
        if name == DEFAULT_CLIENT && !clients.is_empty() {
            return Err(invalid(
                &key,
                "\"default\" is the name of the [auth] token's client; choose another",
            ));
        }
        let token = token_config(raw.token_file, raw.token_env, &key)?;
        if token.is_none() && raw.unix_uids.is_empty() {
            return Err(invalid(
                &key,
                "set token_file, token_env or unix_uids: how is this client recognised?",
            ));
        }
        let scope = scope(&raw.databases, databases, &format!("{key}.databases"))?;
        clients.push(ClientConfig {
            name,
            token,
            unix_uids: raw.unix_uids,
            scope,
        });
    }
    if clients.is_empty() {
        return Err(invalid(
            "auth",
            "set token_file or token_env, or declare [clients.NAME] (or disabled = true to run without a token)",
        ));
    }
    for (i, client) in clients.iter().enumerate() {
        for other in &clients[..i] {
            if let (Some(a), Some(b)) = (&client.token, &other.token)
                && secrecy::ExposeSecret::expose_secret(&a.value)
                    == secrecy::ExposeSecret::expose_secret(&b.value)
            {
                return Err(invalid(
                    format!("clients.{}", client.name),
                    format!("has the same token as client {}", other.name),
                ));
            }
            if let Some(uid) = client
                .unix_uids
                .iter()
                .find(|u| other.unix_uids.contains(u))
            {
                return Err(invalid(
                    format!("clients.{}.unix_uids", client.name),
                    format!("uid {uid} is also client {}'s", other.name),
                ));
            }
        }
    }
    Ok(AuthConfig::Clients {
        clients,
        reload_interval: auth.reload_interval,
    })
}

/// The databases a client lists: `*` for all, else configured database names.
fn scope(
    names: &[String],
    databases: &BTreeMap<DbName, DatabaseConfig>,
    key: &str,
) -> Result<Scope, ConfigError> {
    if names.is_empty() {
        return Err(invalid(
            key,
            "list the databases this client may read, or \"*\"",
        ));
    }
    if names.iter().any(|n| n == "*") {
        return Ok(Scope::All);
    }
    let mut only = BTreeSet::new();
    for name in names {
        let (db, _) = databases
            .get_key_value(name.as_str())
            .ok_or_else(|| invalid(key, format!("{name:?} is not a configured database")))?;
        only.insert(db.clone());
    }
    Ok(Scope::Only(only))
}

/// Reads a token from `token_file` or `token_env` (at most one of them) under `key`.
fn token_config(
    file: Option<PathBuf>,
    env: Option<String>,
    key: &str,
) -> Result<Option<TokenConfig>, ConfigError> {
    let (source, text) = match (file, env) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(invalid(key, "set token_file or token_env, not both"));
        }
        (Some(path), None) => {
            let text =
                read_token_file(&path).map_err(|why| invalid(format!("{key}.token_file"), why))?;
            (TokenSource::File(path), text)
        }
        (None, Some(var)) => {
            let text = std::env::var(&var).map_err(|_| {
                invalid(
                    format!("{key}.token_env"),
                    format!("environment variable {var} is not set or not UTF-8"),
                )
            })?;
            let text = check_token(text).map_err(|why| invalid(format!("{key}.token_env"), why))?;
            (TokenSource::Env(var), text)
        }
    };
    Ok(Some(TokenConfig {
        source,
        value: text,
    }))
}

/// Reads and checks a token file (a regular file of at most 64 KiB): the trimmed content, at
/// least 16 characters.
pub fn read_token_file(path: &Path) -> Result<SecretString, String> {
    let bytes = zeroize::Zeroizing::new(
        crate::files::read_regular(path, crate::files::MAX_TOKEN_FILE_BYTES)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    );
    let text =
        std::str::from_utf8(&bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    check_token(text.to_owned())
}

fn check_token(text: String) -> Result<SecretString, String> {
    let token = zeroize::Zeroizing::new(text);
    let trimmed = token.trim();
    if trimmed.len() < 16 {
        return Err("the token must be at least 16 characters".to_owned());
    }
    // A header value carries visible ASCII only: any other token could never be presented.
    if !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "the token must be visible ASCII characters only (no whitespace, control or non-ASCII characters)"
                .to_owned(),
        );
    }
    Ok(SecretString::from(trimmed))
}

impl RawAudit {
    fn validate(self) -> Result<AuditConfig, ConfigError> {
        match (self.output, self.path) {
            (AuditOutput::Off, None) => Ok(AuditConfig::Off),
            (AuditOutput::Stderr, None) => Ok(AuditConfig::Stderr),
            (AuditOutput::File, Some(path)) => Ok(AuditConfig::File(path)),
            (AuditOutput::File, None) => Err(invalid(
                "audit.path",
                "required when audit.output = \"file\"",
            )),
            (_, Some(_)) => Err(invalid(
                "audit.path",
                "only allowed when audit.output = \"file\"",
            )),
        }
    }
}

impl RawCache {
    fn validate(self) -> Result<CacheConfig, ConfigError> {
        duration_in("cache.ttl", self.ttl, SECOND, WEEK)?;
        duration_in("cache.max_stale", self.max_stale, Duration::ZERO, WEEK)?;
        duration_in("cache.topology_ttl", self.topology_ttl, SECOND, WEEK)?;
        number_in("cache.capacity", self.capacity, 1, 1_000_000)?;
        Ok(CacheConfig {
            ttl: self.ttl,
            capacity: self.capacity,
            warm: self.warm,
            max_stale: self.max_stale,
            topology_ttl: self.topology_ttl,
        })
    }
}

impl RawAws {
    fn validate(self) -> Result<AwsConfig, ConfigError> {
        for (key, value) in [
            ("aws.connect_timeout", self.connect_timeout),
            ("aws.attempt_timeout", self.attempt_timeout),
            ("aws.operation_timeout", self.operation_timeout),
        ] {
            duration_in(key, value, 10 * MS, 5 * MINUTE)?;
        }
        number_in("aws.max_attempts", self.max_attempts, 1, 10)?;
        Ok(AwsConfig {
            region: self.region,
            endpoint_url: self.endpoint_url,
            connect_timeout: self.connect_timeout,
            attempt_timeout: self.attempt_timeout,
            operation_timeout: self.operation_timeout,
            max_attempts: self.max_attempts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [auth]
        disabled = true
        [databases.orders]
        secret_id = "rds!db-1"
    "#;

    fn error_of(text: &str) -> ConfigError {
        Config::from_toml(text).expect_err("config should be rejected")
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let config = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(
            config.server.listen,
            Some("127.0.0.1:2775".parse().unwrap())
        );
        assert_eq!(config.server.unix_socket, None);
        assert_eq!(config.audit, AuditConfig::Stderr);
        assert_eq!(config.server.admin_listen.to_string(), "127.0.0.1:2776");
        assert_eq!(config.cache.ttl, Duration::from_mins(5));
        assert_eq!(config.cache.capacity, 1000);
        assert!(config.cache.warm);
        assert!(matches!(config.auth, AuthConfig::Disabled));
        let SourceConfig::SecretsManager(aws) = &config.source else {
            panic!("default source should be secrets_manager");
        };
        assert_eq!(aws.operation_timeout, Duration::from_secs(8));
        assert_eq!(aws.max_attempts, 3);
        assert_eq!(config.databases.len(), 1);
    }

    #[test]
    fn durations_are_human_strings() {
        let config = Config::from_toml(&format!(
            "{MINIMAL}\n[cache]\nttl = \"90s\"\n[aws]\noperation_timeout = \"1m 30s\"\n[server]\nrequest_timeout = \"2m\"\n"
        ))
        .unwrap();
        assert_eq!(config.cache.ttl, Duration::from_secs(90));
        let SourceConfig::SecretsManager(aws) = config.source else {
            unreachable!()
        };
        assert_eq!(aws.operation_timeout, Duration::from_secs(90));
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let err = error_of(&format!("{MINIMAL}\n[cache]\nttl_seconds = 5\n"));
        assert_eq!(err.key, "cache.ttl_seconds", "{err}");
        assert!(err.message.contains("unknown field"), "{err}");
    }

    #[test]
    fn bad_duration_names_its_key() {
        let err = error_of(&format!("{MINIMAL}\n[cache]\nttl = \"five minutes\"\n"));
        assert_eq!(err.key, "cache.ttl", "{err}");
    }

    #[test]
    fn bad_listen_address_names_its_key() {
        let err = error_of(&format!("{MINIMAL}\n[server]\nlisten = \"localhost\"\n"));
        assert_eq!(err.key, "server.listen", "{err}");
    }

    #[test]
    fn non_loopback_listen_needs_explicit_opt_in() {
        let err = error_of(&format!("{MINIMAL}\n[server]\nlisten = \"0.0.0.0:2775\"\n"));
        assert_eq!(err.key, "server.listen");
        let ok = Config::from_toml(&format!(
            "{MINIMAL}\n[server]\nlisten = \"0.0.0.0:2775\"\nallow_non_loopback = true\n"
        ));
        assert!(ok.is_ok());
    }

    #[test]
    fn auth_must_be_configured_or_disabled_explicitly() {
        let err = error_of("[databases.a]\nsecret_id = \"s\"\n");
        assert_eq!(err.key, "auth");
        let err = error_of(
            "[auth]\ntoken_env = \"PATH\"\ndisabled = true\n[databases.a]\nsecret_id = \"s\"\n",
        );
        assert_eq!(err.key, "auth.disabled");
    }

    #[test]
    fn token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        let config = Config::from_toml(&format!(
            "[auth]\ntoken_file = {:?}\n[databases.a]\nsecret_id = \"s\"\n",
            path.display().to_string()
        ))
        .unwrap();
        let AuthConfig::Clients { clients, .. } = config.auth else {
            panic!("expected a token")
        };
        assert_eq!(clients.len(), 1);
        assert_eq!(clients[0].name, DEFAULT_CLIENT);
        assert_eq!(clients[0].scope, Scope::All);
        let token = clients[0].token.as_ref().unwrap();
        assert_eq!(token.source, TokenSource::File(path));
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&token.value),
            "0123456789abcdef0123"
        );
    }

    /// A config with databases `a` and `b` and the given `[clients]` tables.
    fn clients_config(dir: &Path, clients: &str) -> Result<Config, ConfigError> {
        for (name, token) in [
            ("a", "token-of-client-a-0123"),
            ("b", "token-of-client-b-0123"),
        ] {
            std::fs::write(dir.join(name), token).unwrap();
        }
        Config::from_toml(&format!(
            "[server]\nunix_socket = {{ path = \"/run/b.sock\" }}\n{clients}\n[databases.a]\nsecret_id = \"s\"\n[databases.b]\nsecret_id = \"t\"\n",
        ))
    }

    #[test]
    fn clients_are_scoped_to_configured_databases() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let config = clients_config(
            dir.path(),
            &format!(
                "[clients.app-a]\ntoken_file = \"{d}/a\"\ndatabases = [\"a\"]\n[clients.ops]\ntoken_file = \"{d}/b\"\ndatabases = [\"*\", \"a\"]\n[clients.batch]\nunix_uids = [1001]\ndatabases = [\"b\"]\n"
            ),
        )
        .unwrap();
        let AuthConfig::Clients {
            clients,
            reload_interval,
        } = config.auth
        else {
            panic!("expected clients")
        };
        assert_eq!(reload_interval, Duration::from_secs(5));
        let names: Vec<_> = clients.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["app-a", "batch", "ops"]);
        assert!(clients[0].scope.allows("a") && !clients[0].scope.allows("b"));
        assert!(clients[1].token.is_none() && clients[1].unix_uids == [1001]);
        assert_eq!(clients[2].scope, Scope::All);
    }

    #[test]
    fn client_mistakes_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let cases = [
            (format!("[clients.x]\ntoken_file = \"{d}/a\"\ndatabases = [\"nope\"]\n"), "clients.x.databases"),
            (format!("[clients.x]\ntoken_file = \"{d}/a\"\ndatabases = []\n"), "clients.x.databases"),
            ("[clients.x]\ndatabases = [\"a\"]\n".to_owned(), "clients.x"),
            (format!("[clients.x]\ntoken_file = \"{d}/a\"\ndatabases = [\"a\"]\n[clients.y]\ntoken_file = \"{d}/a\"\ndatabases = [\"b\"]\n"), "clients.y"),
            (format!("[clients.\"a b\"]\ntoken_file = \"{d}/a\"\ndatabases = [\"a\"]\n"), "clients.a b"),
            (format!("[clients.x]\ntoken_file = \"{d}/missing\"\ndatabases = [\"a\"]\n"), "clients.x.token_file"),
            ("[clients.x]\nunix_uids = [7]\ndatabases = [\"a\"]\n[clients.y]\nunix_uids = [7]\ndatabases = [\"a\"]\n".to_owned(), "clients.y.unix_uids"),
        ];
        for (clients, key) in cases {
            let err = clients_config(dir.path(), &clients).expect_err(&clients);
            assert_eq!(err.key, key, "{clients}: {err}");
        }
    }

    #[test]
    fn unix_socket_settings_are_checked() {
        let config = Config::from_toml(&format!(
            "{MINIMAL}\n[server]\nlisten = \"off\"\nunix_socket = {{ path = \"/run/cb/api.sock\", mode = \"0660\", group = 1000 }}\n"
        ))
        .unwrap();
        assert_eq!(config.server.listen, None);
        assert_eq!(
            config.server.unix_socket,
            Some(UnixSocketConfig {
                path: "/run/cb/api.sock".into(),
                mode: 0o660,
                group: Some(1000),
            })
        );
        for (server, key) in [
            ("listen = \"off\"", "server.listen"),
            (
                "unix_socket = { path = \"/s\", mode = \"0666\" }",
                "server.unix_socket.mode",
            ),
            (
                "unix_socket = { path = \"/s\", mode = \"rw\" }",
                "server.unix_socket.mode",
            ),
            (
                "unix_socket = { path = \"rel.sock\" }",
                "server.unix_socket.path",
            ),
        ] {
            let err = error_of(&format!("{MINIMAL}\n[server]\n{server}\n"));
            assert_eq!(err.key, key, "{server}: {err}");
        }
        let err = error_of(
            "[clients.x]\nunix_uids = [7]\ndatabases = [\"a\"]\n[databases.a]\nsecret_id = \"s\"\n",
        );
        assert_eq!(err.key, "clients.x.unix_uids", "{err}");
    }

    #[test]
    fn audit_goes_to_stderr_a_file_or_nowhere() {
        let file = Config::from_toml(&format!(
            "{MINIMAL}\n[audit]\noutput = \"file\"\npath = \"/var/log/audit.jsonl\"\n"
        ))
        .unwrap();
        assert_eq!(file.audit, AuditConfig::File("/var/log/audit.jsonl".into()));
        let off = Config::from_toml(&format!("{MINIMAL}\n[audit]\noutput = \"off\"\n")).unwrap();
        assert_eq!(off.audit, AuditConfig::Off);
        let err = error_of(&format!("{MINIMAL}\n[audit]\noutput = \"file\"\n"));
        assert_eq!(err.key, "audit.path");
    }

    #[test]
    fn short_or_missing_token_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "short").unwrap();
        let text = format!(
            "[auth]\ntoken_file = {:?}\n[databases.a]\nsecret_id = \"s\"\n",
            path.display().to_string()
        );
        assert_eq!(error_of(&text).key, "auth.token_file");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(error_of(&text).key, "auth.token_file");
    }

    #[test]
    fn request_timeout_must_exceed_the_upstream_operation_timeout() {
        let err = error_of(&format!(
            "{MINIMAL}\n[server]\nrequest_timeout = \"5s\"\n[aws]\noperation_timeout = \"5s\"\n"
        ));
        assert_eq!(err.key, "server.request_timeout");
    }

    #[test]
    fn backoff_max_must_not_be_below_the_initial_delay() {
        let err = error_of(&format!(
            "{MINIMAL}\n[upstream]\nbackoff_initial = \"2s\"\nbackoff_max = \"1s\"\n"
        ));
        assert_eq!(err.key, "upstream.backoff_max");
    }

    #[test]
    fn databases_name_exactly_one_secret_reference() {
        let config = Config::from_toml(
            "[auth]\ndisabled = true\n[databases.a]\nrds_instance = \"database-1\"\n[databases.b]\nrds_cluster = \"c\"\n",
        )
        .unwrap();
        let a = &config.databases[&DbName::parse("a").unwrap()];
        assert_eq!(
            a.secret,
            SecretRef::Rds(RdsTarget::Instance("database-1".into()))
        );
        let b = &config.databases[&DbName::parse("b").unwrap()];
        assert_eq!(b.secret, SecretRef::Rds(RdsTarget::Cluster("c".into())));
        let err = error_of(
            "[auth]\ndisabled = true\n[databases.a]\nsecret_id = \"s\"\nrds_instance = \"i\"\n",
        );
        assert_eq!(err.key, "databases.a");
        let err = error_of("[auth]\ndisabled = true\n[databases.a]\nport = 5432\n");
        assert_eq!(err.key, "databases.a");
    }

    #[test]
    fn rds_databases_need_secrets_manager() {
        let err = error_of(
            "[auth]\ndisabled = true\n[source]\nkind = \"file\"\npath = \"x.json\"\n[databases.a]\nrds_instance = \"i\"\n",
        );
        assert_eq!(err.key, "databases.a.rds_instance");
    }

    #[test]
    fn file_source_requires_a_path() {
        let err = error_of(&format!("{MINIMAL}\n[source]\nkind = \"file\"\n"));
        assert_eq!(err.key, "source.path");
    }

    #[test]
    fn invalid_database_name_is_rejected() {
        let err = error_of("[auth]\ndisabled = true\n[databases.\"a/b\"]\nsecret_id = \"s\"\n");
        assert_eq!(err.key, "databases.a/b");
    }

    #[test]
    fn zero_ttl_and_empty_databases_are_rejected() {
        assert_eq!(
            error_of(&format!("{MINIMAL}\n[cache]\nttl = \"0s\"\n")).key,
            "cache.ttl"
        );
        assert_eq!(error_of("[auth]\ndisabled = true\n").key, "databases");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error type
    fn environment_overrides_file_values() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("broker.toml", MINIMAL)?;
            jail.set_env("CREDENTIAL_BROKER_CACHE__TTL", "42s");
            jail.set_env("CREDENTIAL_BROKER_DATABASES__ORDERS__PORT", "6543");
            jail.set_env("CREDENTIAL_BROKER_CONFIG", "broker.toml");
            let config = Config::load(Path::new("broker.toml")).expect("loads");
            assert_eq!(config.cache.ttl, Duration::from_secs(42));
            let orders = DbName::parse("orders").unwrap();
            assert_eq!(config.databases[&orders].port, Some(6543));
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_reported_with_its_path() {
        let err = Config::load(Path::new("/nonexistent/broker.toml")).unwrap_err();
        assert_eq!(err.key, "/nonexistent/broker.toml");
    }
}
