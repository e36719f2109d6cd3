//! `[rotation]`: how often rotation facts are read, and how soon an explicit refresh may call
//! the source again.

use std::time::Duration;

use serde::Deserialize;

use super::check::{ConfigError, HOUR, SECOND, WEEK, duration_in};

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRotation {
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

impl RawRotation {
    pub(super) fn validate(self) -> Result<RotationConfig, ConfigError> {
        duration_in(
            "rotation.describe_interval",
            self.describe_interval,
            SECOND,
            WEEK,
        )?;
        duration_in(
            "rotation.refresh_min_interval",
            self.refresh_min_interval,
            Duration::ZERO,
            HOUR,
        )?;
        Ok(RotationConfig {
            describe_interval: self.describe_interval,
            refresh_min_interval: self.refresh_min_interval,
        })
    }
}
