//! `[log]`: the log format (text or JSON lines) and level filter.

use serde::Deserialize;

use super::check::{ConfigError, invalid};

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
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

impl RawLog {
    pub(super) fn validate(self) -> Result<LogConfig, ConfigError> {
        if self.level.trim().is_empty()
            || self
                .level
                .parse::<tracing_subscriber::filter::Targets>()
                .is_err()
        {
            return Err(invalid(
                "log.level",
                "a level (error, warn, info, debug, trace) or target=level list",
            ));
        }
        Ok(LogConfig {
            format: self.format,
            level: self.level,
        })
    }
}
