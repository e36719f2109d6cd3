//! `[upstream]`: how calls to a failing source are paced (the backoff).

use std::time::Duration;

use serde::Deserialize;

use super::check::{ConfigError, HOUR, MS, duration_in, invalid};

/// How the broker paces calls to a failing source, per database.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamConfig {
    /// Delay before the first retry after a failure; doubles with each further failure.
    pub backoff_initial: Duration,
    /// Longest delay between attempts.
    pub backoff_max: Duration,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_mins(1),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawUpstream {
    #[serde(with = "humantime_serde")]
    backoff_initial: Duration,
    #[serde(with = "humantime_serde")]
    backoff_max: Duration,
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
    pub(super) fn validate(self) -> Result<UpstreamConfig, ConfigError> {
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
