//! `[cache]`: how long credentials are fresh, how long stale ones may be served, warm-up, and
//! how long an RDS topology is reused.

use std::time::Duration;

use serde::Deserialize;

use super::check::{ConfigError, SECOND, WEEK, duration_in, number_in};

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCache {
    #[serde(with = "humantime_serde")]
    ttl: Duration,
    capacity: u64,
    warm: bool,
    #[serde(with = "humantime_serde")]
    max_stale: Duration,
    #[serde(with = "humantime_serde")]
    topology_ttl: Duration,
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            // Long, because rotation checks (`[rotation]`) see a new version without reading
            // the value: the TTL only bounds how long a value is trusted while they fail.
            ttl: Duration::from_hours(6),
            capacity: 1000,
            warm: true,
            max_stale: Duration::from_hours(1),
            topology_ttl: Duration::from_mins(15),
        }
    }
}

impl RawCache {
    pub(super) fn validate(self) -> Result<CacheConfig, ConfigError> {
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
