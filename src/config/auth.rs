//! `[auth]` and `[clients.NAME]`: who may call the credentials API (a bearer token, a Unix
//! socket peer uid) and which databases each client may read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::check::{ConfigError, HOUR, MS, duration_in, invalid};
use super::compat::{SecretPatterns, check_patterns};
use super::databases::DatabaseConfig;
use super::token::{MIN_TOKEN_LEN, check_token, read_token_file};
use crate::credentials::DbName;

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
    pub(super) fn token_variables(&self) -> impl Iterator<Item = &str> {
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
    /// The secrets it may read through the AWS agent's API with its own token (none when
    /// empty).
    pub aws_agent_secrets: SecretPatterns,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAuth {
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
pub(super) struct RawClient {
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    #[serde(default)]
    unix_uids: Vec<u32>,
    /// Required unless the client only reads the AWS agent's API.
    databases: Option<Vec<String>>,
    #[serde(default)]
    aws_agent_secrets: Vec<String>,
}

/// The name the single-token form of `[auth]` gives its client.
pub const DEFAULT_CLIENT: &str = "default";

/// Turns `[auth]` and `[clients.*]` into the clients the API recognises.
pub(super) fn validate_auth(
    auth: RawAuth,
    raw_clients: BTreeMap<String, RawClient>,
    databases: &BTreeMap<DbName, DatabaseConfig>,
    serves_agent: bool,
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
            aws_agent_secrets: SecretPatterns::default(),
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
        let agent_key = format!("{key}.aws_agent_secrets");
        if !raw.aws_agent_secrets.is_empty() && !serves_agent {
            return Err(invalid(agent_key, "needs [compat.aws_agent]"));
        }
        let aws_agent_secrets =
            check_patterns(&raw.aws_agent_secrets).map_err(|why| invalid(&agent_key, why))?;
        let scope = match raw.databases {
            Some(names) => scope(&names, databases, &format!("{key}.databases"))?,
            // A client of the AWS agent's API alone reads no database.
            None if !raw.aws_agent_secrets.is_empty() => Scope::Only(BTreeSet::new()),
            None => {
                return Err(invalid(
                    format!("{key}.databases"),
                    "list the databases this client may read, or \"*\"",
                ));
            }
        };
        clients.push(ClientConfig {
            name,
            token,
            unix_uids: raw.unix_uids,
            scope,
            aws_agent_secrets,
        });
    }
    // No database, no client: the broker serves only the AWS agent's API (its own token).
    if clients.is_empty() && !databases.is_empty() {
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
            let text = check_token(text, MIN_TOKEN_LEN)
                .map_err(|why| invalid(format!("{key}.token_env"), why))?;
            (TokenSource::Env(var), text)
        }
    };
    Ok(Some(TokenConfig {
        source,
        value: text,
    }))
}
