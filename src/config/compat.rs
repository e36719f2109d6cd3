//! `[compat.aws_agent]`: the AWS Secrets Manager Agent's API on a listener of its own (off
//! unless configured): its port, path prefix, token headers and variables, cache and the
//! secrets it may read.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use wildmatch::WildMatch;

use super::check::{ConfigError, HOUR, invalid, number_in};
use super::token::{check_token, read_token_file_of};
use crate::credentials::MAX_SECRET_ID_LEN;

/// The agent's API as the broker serves it.
#[derive(Debug, Clone)]
pub struct AgentCompatConfig {
    /// Loopback address of the agent's listener (the agent's port is 2773).
    pub listen: SocketAddr,
    /// The prefix of the path style, `GET {path_prefix}{secretId}`.
    pub path_prefix: String,
    /// The headers the token may arrive in, lowercase, tried in order.
    pub ssrf_headers: Vec<String>,
    /// The variable the token was read from (for the log; never the token).
    pub token_variable: String,
    pub token: SecretString,
    /// How long a value is served without asking the source again.
    pub ttl: Duration,
    /// Serve the last value, marked stale, while the source fails (the agent's
    /// `ignore_transient_errors`), within `cache.max_stale`.
    pub serve_stale: bool,
    /// Entries (secret, version) kept at most.
    pub cache_size: u64,
    /// Open connections at most.
    pub max_connections: usize,
    /// The secrets it may read.
    pub secrets: SecretPatterns,
}

/// Secret names and ARNs, each a pattern where `*` stands for any run of characters.
#[derive(Debug, Clone, Default)]
pub struct SecretPatterns(Vec<WildMatch>);

impl SecretPatterns {
    /// Whether `secret_id` matches one of the patterns.
    pub fn allows(&self, secret_id: &str) -> bool {
        self.0.iter().any(|pattern| pattern.matches(secret_id))
    }

    /// Every secret (`"*"`), as the agent reads whatever its IAM role may.
    pub fn all() -> Self {
        Self(vec![WildMatch::new("*")])
    }
}

/// The agent's defaults.
pub(super) const DEFAULT_PORT: u16 = 2773;
pub(super) const DEFAULT_PATH_PREFIX: &str = "/v1/";
pub(super) const DEFAULT_SSRF_HEADERS: [&str; 2] =
    ["X-Aws-Parameters-Secrets-Token", "X-Vault-Token"];
pub(super) const DEFAULT_SSRF_ENV_VARIABLES: [&str; 3] = [
    "AWS_TOKEN",
    "AWS_SESSION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
];
pub(super) const DEFAULT_TTL: Duration = Duration::from_mins(5);
pub(super) const DEFAULT_CACHE_SIZE: u64 = 1000;
pub(super) const DEFAULT_MAX_CONNECTIONS: usize = 800;
/// Upper bounds of the lists and the cache.
const MAX_LIST: usize = 16;
const MAX_PATTERNS: usize = 1000;
const MAX_CACHE_SIZE: u64 = 100_000;
const MAX_PATH_PREFIX_LEN: usize = 64;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCompat {
    pub(super) aws_agent: Option<RawAgentCompat>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAgentCompat {
    pub(super) listen: SocketAddr,
    pub(super) path_prefix: String,
    pub(super) ssrf_headers: Vec<String>,
    pub(super) ssrf_env_variables: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub(super) ttl: Duration,
    pub(super) serve_stale: bool,
    pub(super) cache_size: u64,
    pub(super) max_connections: usize,
    pub(super) secrets: Vec<String>,
}

impl Default for RawAgentCompat {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            path_prefix: DEFAULT_PATH_PREFIX.to_owned(),
            ssrf_headers: DEFAULT_SSRF_HEADERS.map(str::to_owned).to_vec(),
            ssrf_env_variables: DEFAULT_SSRF_ENV_VARIABLES.map(str::to_owned).to_vec(),
            ttl: DEFAULT_TTL,
            serve_stale: true,
            cache_size: DEFAULT_CACHE_SIZE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            secrets: Vec::new(),
        }
    }
}

impl RawAgentCompat {
    pub(super) fn validate(self) -> Result<AgentCompatConfig, ConfigError> {
        const KEY: &str = "compat.aws_agent";
        if !self.listen.ip().is_loopback() {
            return Err(invalid(
                format!("{KEY}.listen"),
                "must be a loopback address (127.0.0.1:2773, [::1]:2773): the agent's API has no TLS",
            ));
        }
        check_path_prefix(&self.path_prefix)
            .map_err(|why| invalid(format!("{KEY}.path_prefix"), why))?;
        let ssrf_headers = check_headers(&self.ssrf_headers)
            .map_err(|why| invalid(format!("{KEY}.ssrf_headers"), why))?;
        let (token_variable, token) = read_token(&self.ssrf_env_variables)
            .map_err(|why| invalid(format!("{KEY}.ssrf_env_variables"), why))?;
        if self.ttl > HOUR {
            return Err(invalid(format!("{KEY}.ttl"), "must be at most 1h"));
        }
        number_in(
            &format!("{KEY}.cache_size"),
            self.cache_size,
            1,
            MAX_CACHE_SIZE,
        )?;
        number_in(
            &format!("{KEY}.max_connections"),
            self.max_connections,
            1,
            100_000,
        )?;
        let secrets =
            check_patterns(&self.secrets).map_err(|why| invalid(format!("{KEY}.secrets"), why))?;
        Ok(AgentCompatConfig {
            listen: self.listen,
            path_prefix: self.path_prefix,
            ssrf_headers,
            token_variable,
            token,
            ttl: self.ttl,
            serve_stale: self.serve_stale,
            cache_size: self.cache_size,
            max_connections: self.max_connections,
            secrets,
        })
    }
}

/// A path prefix starts with `/`, holds visible ASCII other than `?`, `#` and `%`, and is not
/// one of the agent's fixed routes.
pub(super) fn check_path_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/')
        || prefix.len() > MAX_PATH_PREFIX_LEN
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"?#%".contains(&b))
    {
        return Err(format!(
            "must start with '/' and be at most {MAX_PATH_PREFIX_LEN} visible ASCII characters other than '?', '#' and '%'"
        ));
    }
    if prefix == "/" || "/secretsmanager/get".starts_with(prefix) || "/ping".starts_with(prefix) {
        return Err("must not be a prefix of /ping or /secretsmanager/get".to_owned());
    }
    Ok(())
}

/// Header names: 1 to 16 of them, each an HTTP token; kept lowercase.
pub(super) fn check_headers(headers: &[String]) -> Result<Vec<String>, String> {
    if headers.is_empty() || headers.len() > MAX_LIST {
        return Err(format!("must name 1 to {MAX_LIST} headers"));
    }
    headers
        .iter()
        .map(|name| {
            let token = (1..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(format!("{name:?} is not a header name"));
            }
            if name.eq_ignore_ascii_case("x-forwarded-for") || name.eq_ignore_ascii_case("host") {
                return Err(format!("{name:?} cannot carry the token"));
            }
            Ok(name.to_ascii_lowercase())
        })
        .collect()
}

/// The token: the value of the first variable of `variables` that is set, where a value
/// `file:///path` is that file's trimmed content (the agent's rule). No token, no start.
pub(super) fn read_token(variables: &[String]) -> Result<(String, SecretString), String> {
    if variables.is_empty() || variables.len() > MAX_LIST {
        return Err(format!("must name 1 to {MAX_LIST} environment variables"));
    }
    let Some((name, value)) = variables
        .iter()
        .find_map(|name| std::env::var(name).ok().map(|value| (name, value)))
    else {
        return Err(format!(
            "none of the variables {variables:?} is set (and UTF-8): the API needs a token"
        ));
    };
    let value = zeroize::Zeroizing::new(value);
    let token = match value.strip_prefix("file://") {
        Some(path) => {
            read_token_file_of(Path::new(path), 1).map_err(|why| format!("{name}: {why}"))?
        }
        None => check_token(value.to_string(), 1).map_err(|why| format!("{name}: {why}"))?,
    };
    Ok((name.clone(), token))
}

/// Secret name and ARN patterns: at most 1,000, each 1 to 2,048 visible ASCII characters.
pub(super) fn check_patterns(patterns: &[String]) -> Result<SecretPatterns, String> {
    if patterns.len() > MAX_PATTERNS {
        return Err(format!("at most {MAX_PATTERNS} patterns"));
    }
    patterns
        .iter()
        .map(|pattern| {
            if (1..=MAX_SECRET_ID_LEN).contains(&pattern.len())
                && pattern.bytes().all(|b| b.is_ascii_graphic())
            {
                Ok(WildMatch::new(pattern))
            } else {
                Err(format!(
                    "{pattern:?} is not a secret name or ARN pattern (1 to {MAX_SECRET_ID_LEN} visible ASCII characters)"
                ))
            }
        })
        .collect::<Result<_, _>>()
        .map(SecretPatterns)
}
