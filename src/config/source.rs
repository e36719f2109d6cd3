//! `[source]` and `[aws]`: where secrets come from, and the AWS SDK settings every AWS source
//! shares (region, endpoint, timeouts, attempts).
//!
//! To add a source: a [`SourceKind`] variant, its [`SourceConfig`] variant and settings; the
//! compiler then points at the validation below and the factory in `source/mod.rs`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::check::{ConfigError, MINUTE, MS, duration_in, invalid, number_in};
use super::server::Limits;

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
    /// Regions whose replica of a secret is read, in order, while the primary region fails
    /// transiently and no fresh value is cached.
    pub fallback_regions: Vec<String>,
    /// A shared credentials file read instead of `~/.aws/credentials`.
    pub credentials_file: Option<PathBuf>,
    pub endpoint_url: Option<String>,
    pub connect_timeout: Duration,
    pub attempt_timeout: Duration,
    pub operation_timeout: Duration,
    pub max_attempts: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
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
pub(super) struct RawAws {
    region: Option<String>,
    fallback_regions: Vec<String>,
    credentials_file: Option<PathBuf>,
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
            fallback_regions: Vec::new(),
            credentials_file: None,
            endpoint_url: None,
            connect_timeout: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(3),
            operation_timeout: Duration::from_secs(8),
            max_attempts: 3,
        }
    }
}

impl RawSource {
    /// The typed source; `limits` are checked against the AWS timeouts.
    pub(super) fn validate(
        self,
        aws: RawAws,
        limits: &Limits,
    ) -> Result<SourceConfig, ConfigError> {
        match self.kind {
            SourceKind::File => {
                let path = self.path.ok_or_else(|| {
                    invalid("source.path", "required when source.kind = \"file\"")
                })?;
                Ok(SourceConfig::File { path })
            }
            SourceKind::SecretsManager => {
                if self.path.is_some() {
                    return Err(invalid(
                        "source.path",
                        "only allowed when source.kind = \"file\"",
                    ));
                }
                let aws = aws.validate()?;
                if limits.request_timeout <= aws.operation_timeout {
                    return Err(invalid(
                        "server.request_timeout",
                        format!(
                            "must be longer than aws.operation_timeout ({}), or upstream timeouts could never be reported as such",
                            humantime::format_duration(aws.operation_timeout)
                        ),
                    ));
                }
                Ok(SourceConfig::SecretsManager(aws))
            }
        }
    }
}

/// The most fallback regions a list may name.
const MAX_FALLBACK_REGIONS: usize = 4;

/// Checks a list of fallback regions: each a region name (lowercase letters, digits and `-`,
/// at most 32), none twice, none the primary region, at most [`MAX_FALLBACK_REGIONS`].
pub(super) fn check_regions(
    key: &str,
    regions: &[String],
    primary: Option<&str>,
) -> Result<(), ConfigError> {
    if regions.len() > MAX_FALLBACK_REGIONS {
        return Err(invalid(
            key,
            format!("at most {MAX_FALLBACK_REGIONS} regions"),
        ));
    }
    for (i, region) in regions.iter().enumerate() {
        let named = (1..=32).contains(&region.len())
            && region.contains('-')
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !named {
            return Err(invalid(key, format!("{region:?} is not a region name")));
        }
        if regions[..i].contains(region) {
            return Err(invalid(key, format!("{region} is named twice")));
        }
        if primary == Some(region.as_str()) {
            return Err(invalid(
                key,
                format!("{region} is the primary region (aws.region)"),
            ));
        }
    }
    Ok(())
}

impl SourceConfig {
    /// Whether databases may be named by an RDS identifier: RDS keeps their secrets in Secrets
    /// Manager, so only a source that reads Secrets Manager can follow them.
    pub fn supports_rds(&self) -> bool {
        match self {
            Self::File { .. } => false,
            Self::SecretsManager(_) => true,
        }
    }

    /// The fallback regions of `[aws]`, which a database takes unless it names its own.
    pub fn fallback_regions(&self) -> &[String] {
        match self {
            Self::File { .. } => &[],
            Self::SecretsManager(aws) => &aws.fallback_regions,
        }
    }

    /// The primary region, when the configuration names it.
    pub fn region(&self) -> Option<&str> {
        match self {
            Self::File { .. } => None,
            Self::SecretsManager(aws) => aws.region.as_deref(),
        }
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
        if let Some(path) = &self.credentials_file
            && !path.is_file()
        {
            return Err(invalid("aws.credentials_file", "no such file"));
        }
        check_regions(
            "aws.fallback_regions",
            &self.fallback_regions,
            self.region.as_deref(),
        )?;
        Ok(AwsConfig {
            fallback_regions: self.fallback_regions,
            region: self.region,
            credentials_file: self.credentials_file,
            endpoint_url: self.endpoint_url,
            connect_timeout: self.connect_timeout,
            attempt_timeout: self.attempt_timeout,
            operation_timeout: self.operation_timeout,
            max_attempts: self.max_attempts,
        })
    }
}
