//! The AWS Secrets Manager Agent's own TOML configuration file (`--agent-config`), read with
//! the agent's keys, defaults and ranges and turned into a broker configuration that serves
//! the agent's API alone, for every secret the IAM role may read, as the agent does.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::check::{ConfigError, invalid};
use super::compat::{
    DEFAULT_CACHE_SIZE, DEFAULT_MAX_CONNECTIONS, DEFAULT_PATH_PREFIX, DEFAULT_PORT,
    DEFAULT_SSRF_ENV_VARIABLES, DEFAULT_SSRF_HEADERS,
};
use super::{Config, SecretPatterns, env_overlay, extraction_error, toml_file};

/// A number the agent accepts written as an integer or as a string (`"65535"`, `'1000'`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Text(String),
}

/// The agent's keys; any other is refused, as the agent refuses it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    log_level: Option<String>,
    log_to_file: Option<bool>,
    http_port: Option<Number>,
    region: Option<String>,
    ttl_seconds: Option<Number>,
    cache_size: Option<Number>,
    ssrf_headers: Option<Vec<String>>,
    ssrf_env_variables: Option<Vec<String>>,
    path_prefix: Option<String>,
    max_conn: Option<Number>,
    validate_credentials: Option<bool>,
    ignore_transient_errors: Option<bool>,
    credentials_file_path: Option<PathBuf>,
}

/// The agent's ranges.
const TTL_SECONDS: (i64, i64) = (0, 3600);
const CACHE_SIZE: (i64, i64) = (1, 1000);
const MAX_CONN: (i64, i64) = (1, 1000);

impl Config {
    /// Reads the agent's configuration file at `path`, overlays the broker's
    /// `CREDENTIAL_BROKER_*` variables (the admin listener, say), and validates the result.
    pub fn load_agent_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_agent_figment(&toml_file(path)?, Some(env_overlay()))
    }

    /// [`load_agent_file`](Self::load_agent_file) from a TOML text, without the environment.
    pub fn from_agent_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_agent_figment(&Figment::from(Toml::string(text)), None)
    }

    fn from_agent_figment(file: &Figment, env: Option<Env>) -> Result<Self, ConfigError> {
        let file: AgentFile = file.extract().map_err(|e| extraction_error(&e))?;
        let mut broker = Figment::from(Serialized::defaults(file.into_broker_config()?));
        if let Some(env) = env {
            broker = broker.merge(env);
        }
        let mut config = Self::from_figment(&broker)?;
        if let Some(agent) = &mut config.aws_agent {
            // The agent reads whatever its IAM role may: so does the broker in its place.
            agent.secrets = SecretPatterns::all();
        }
        Ok(config)
    }
}

impl AgentFile {
    /// The broker configuration (as the TOML tree it would be) that does what this file asks.
    fn into_broker_config(self) -> Result<Value, ConfigError> {
        let port = number("http_port", self.http_port, i64::from(DEFAULT_PORT))?;
        if port != 0 && !(1024..=65535).contains(&port) {
            return Err(invalid("http_port", "must be 0 or 1024 to 65535"));
        }
        let ttl = ranged("ttl_seconds", self.ttl_seconds, 300, TTL_SECONDS)?;
        #[allow(clippy::cast_possible_wrap)] // small constants
        let cache_size = ranged(
            "cache_size",
            self.cache_size,
            DEFAULT_CACHE_SIZE as i64,
            CACHE_SIZE,
        )?;
        #[allow(clippy::cast_possible_wrap)]
        let max_conn = ranged(
            "max_conn",
            self.max_conn,
            DEFAULT_MAX_CONNECTIONS as i64,
            MAX_CONN,
        )?;
        let level = match self
            .log_level
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("info") => "info",
            Some("debug") => "debug",
            Some("warn") => "warn",
            Some("error") => "error",
            Some("none") => "off",
            Some(_) => {
                return Err(invalid(
                    "log_level",
                    "must be one of debug, info, warn, error, none",
                ));
            }
        };
        let list = |given: Option<Vec<String>>, default: &[&str], key: &str| match given {
            Some(list) if list.is_empty() => Err(invalid(key, "must not be empty")),
            Some(list) => Ok(list),
            None => Ok(default.iter().map(|s| (*s).to_owned()).collect()),
        };
        let mut aws = Map::new();
        if let Some(region) = self.region {
            aws.insert("region".into(), Value::String(region));
        }
        if let Some(path) = self.credentials_file_path {
            aws.insert("credentials_file".into(), json!(path));
        }
        // `log_to_file` (the broker logs to stderr) and `validate_credentials` (readiness and
        // the first read show what credentials can do) are accepted and have no effect.
        let _ = (self.log_to_file, self.validate_credentials);
        Ok(json!({
            "log": { "level": level },
            // The agent's API alone: the broker's own credentials API is off.
            "server": { "listen": "off" },
            "aws": aws,
            "compat": { "aws_agent": {
                "listen": format!("127.0.0.1:{port}"),
                "path_prefix": self.path_prefix.unwrap_or_else(|| DEFAULT_PATH_PREFIX.to_owned()),
                "ssrf_headers": list(self.ssrf_headers, &DEFAULT_SSRF_HEADERS, "ssrf_headers")?,
                "ssrf_env_variables": list(self.ssrf_env_variables, &DEFAULT_SSRF_ENV_VARIABLES, "ssrf_env_variables")?,
                "ttl": format!("{ttl}s"),
                "serve_stale": self.ignore_transient_errors.unwrap_or(true),
                "cache_size": cache_size,
                "max_connections": max_conn,
            }},
        }))
    }
}

/// A number given as an integer or a string of digits, else `default`.
fn number(key: &str, value: Option<Number>, default: i64) -> Result<i64, ConfigError> {
    match value {
        None => Ok(default),
        Some(Number::Int(n)) => Ok(n),
        Some(Number::Text(text)) => text
            .trim()
            .parse()
            .map_err(|_| invalid(key, "must be a whole number")),
    }
}

/// [`number`] within `min..=max`.
fn ranged(
    key: &str,
    value: Option<Number>,
    default: i64,
    (min, max): (i64, i64),
) -> Result<i64, ConfigError> {
    let n = number(key, value, default)?;
    if !(min..=max).contains(&n) {
        return Err(invalid(key, format!("must be between {min} and {max}")));
    }
    Ok(n)
}
