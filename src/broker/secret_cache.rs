//! The AWS agent API's cache: secret versions by (secret, version) key, each with its fetch
//! time and refresh point, and one flight per key in use; bounded in entries and time.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use moka::sync::Cache;
use prometheus::IntCounter;
use tokio::sync::Mutex;

use super::error::SecretError;
use super::flight::Flight;
use crate::credentials::{StoredVersion, VersionSelector};
use crate::metrics::Metrics;

/// A secret and version as a caller named them: the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretKey {
    pub secret_id: String,
    pub selector: VersionSelector,
}

/// A secret as served, with how old it is.
#[derive(Debug, Clone)]
pub struct ServedSecret {
    pub secret: Arc<StoredVersion>,
    /// True when the value is past its TTL because the source is failing.
    pub stale: bool,
    pub age: Duration,
}

/// How the agent API's cache behaves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreSettings {
    pub(crate) ttl: Duration,
    /// How long past the TTL the last value is served while the source fails.
    pub(crate) max_stale: Duration,
    /// Entries kept at most.
    pub(crate) capacity: u64,
    /// A `refreshNow` within this interval of the last fetch is answered from the cache.
    pub(crate) refresh_min_interval: Duration,
}

/// One cached secret version.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) secret: Arc<StoredVersion>,
    pub(super) fetched: Instant,
    /// When a background refresh of this entry is due: it starts once, on the first use after.
    pub(super) refresh_at: Instant,
    pub(super) refreshing: AtomicBool,
}

pub(super) type SecretFlight = Flight<Entry, SecretError>;

/// The agent API's cache and its flights.
pub(crate) struct SecretStore {
    pub(super) entries: Cache<SecretKey, Arc<Entry>, foldhash::fast::RandomState>,
    /// One flight per key in use; idle ones are dropped.
    pub(super) flights: Cache<SecretKey, Arc<Mutex<SecretFlight>>, foldhash::fast::RandomState>,
    pub(super) settings: StoreSettings,
    pub(super) lookups: Lookups,
}

/// `credential_broker_agent_cache_lookups_total`, its series resolved once.
#[derive(Debug)]
pub(super) struct Lookups {
    pub(super) hit: IntCounter,
    pub(super) stale: IntCounter,
    pub(super) miss: IntCounter,
    pub(super) refresh: IntCounter,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStore")
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

impl SecretStore {
    pub(crate) fn new(settings: StoreSettings, metrics: &Metrics) -> Self {
        let lookup = |result| metrics.agent_lookups.with_label_values(&[result]);
        let hasher = foldhash::fast::RandomState::default;
        Self {
            entries: Cache::builder()
                .time_to_live(settings.ttl + settings.max_stale)
                .max_capacity(settings.capacity)
                .build_with_hasher(hasher()),
            flights: Cache::builder()
                .time_to_idle(Duration::from_mins(10).max(settings.ttl))
                .max_capacity(settings.capacity.saturating_mul(2))
                .build_with_hasher(hasher()),
            settings,
            lookups: Lookups {
                hit: lookup("hit"),
                stale: lookup("stale"),
                miss: lookup("miss"),
                refresh: lookup("refresh"),
            },
        }
    }

    /// The cached value of `key` at `now`, fresh within the TTL or stale within the
    /// allowance after it; `None` when the source has to be asked.
    pub(super) fn cached(&self, key: &SecretKey, now: Instant) -> Option<(Arc<Entry>, bool)> {
        let entry = self.entries.get(key)?;
        let age = now.saturating_duration_since(entry.fetched);
        if age < self.settings.ttl {
            return Some((entry, false));
        }
        (age < self.settings.ttl + self.settings.max_stale).then_some((entry, true))
    }
}

impl Entry {
    pub(super) fn served(&self, now: Instant, stale: bool) -> ServedSecret {
        ServedSecret {
            secret: Arc::clone(&self.secret),
            stale,
            age: now.saturating_duration_since(self.fetched),
        }
    }
}
