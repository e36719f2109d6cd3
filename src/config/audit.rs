//! `[audit]`: where the audit trail (one event per credentials access) goes.

use std::path::PathBuf;

use serde::Deserialize;

use super::check::{ConfigError, invalid};

/// Where audit events (one per credentials access) go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditConfig {
    Off,
    /// JSON lines on stderr, next to the logs, with `"target":"audit"`.
    Stderr,
    /// JSON lines appended to a file of their own.
    File(PathBuf),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
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

impl RawAudit {
    pub(super) fn validate(self) -> Result<AuditConfig, ConfigError> {
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
