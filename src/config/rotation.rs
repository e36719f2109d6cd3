//! `[rotation]`: how often rotation facts are read (while a rotation may be under way, and
//! otherwise), and how soon an explicit refresh may call the source again.

use std::time::Duration;

use serde::Deserialize;

use super::check::{ConfigError, HOUR, SECOND, WEEK, duration_in, invalid};

/// Rotation awareness.
#[derive(Debug, Clone, Copy)]
pub struct RotationConfig {
    /// How often `DescribeSecret` is called per database outside rotation windows.
    pub describe_interval: Duration,
    /// How often it is called while a rotation may be under way.
    pub watch_interval: Duration,
    /// An explicit refresh within this time of the last fetch is answered from that fetch.
    pub refresh_min_interval: Duration,
}

impl Default for RotationConfig {
    fn default() -> Self {
        Self {
            describe_interval: Duration::from_hours(1),
            watch_interval: Duration::from_secs(10),
            refresh_min_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(clippy::struct_field_names)] // the keys users write
pub(super) struct RawRotation {
    #[serde(with = "humantime_serde")]
    describe_interval: Duration,
    /// Unset: the default, or `describe_interval` when that is shorter.
    #[serde(with = "humantime_serde")]
    watch_interval: Option<Duration>,
    #[serde(with = "humantime_serde")]
    refresh_min_interval: Duration,
}

impl Default for RawRotation {
    fn default() -> Self {
        let defaults = RotationConfig::default();
        Self {
            describe_interval: defaults.describe_interval,
            watch_interval: None,
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
        let watch_interval = match self.watch_interval {
            None => RotationConfig::default()
                .watch_interval
                .min(self.describe_interval),
            Some(watch) => {
                duration_in("rotation.watch_interval", watch, SECOND, HOUR)?;
                if watch > self.describe_interval {
                    return Err(invalid(
                        "rotation.watch_interval",
                        "must not be longer than rotation.describe_interval",
                    ));
                }
                watch
            }
        };
        duration_in(
            "rotation.refresh_min_interval",
            self.refresh_min_interval,
            Duration::ZERO,
            HOUR,
        )?;
        Ok(RotationConfig {
            describe_interval: self.describe_interval,
            watch_interval,
            refresh_min_interval: self.refresh_min_interval,
        })
    }
}
