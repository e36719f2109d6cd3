//! The broker: a database name in, current credentials out, through the cache and, on a miss,
//! one flight per database to the source; stale credentials served within the allowance while
//! the source fails; readiness.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::error::BrokerError;
use super::flight::random_between;
use super::schedule::WATCH_AFTER_REFRESH;
use super::secret_cache::{SecretStore, StoreSettings};
use super::state::DbState;
use super::upstream::Upstream;
use crate::cache::CredentialCache;
use crate::config::{CacheConfig, DatabaseConfig, Login, RotationConfig, UpstreamConfig};
use crate::credentials::{Credentials, DbName, SecretVersion};
use crate::metrics::Metrics;
use crate::source::Sources;

/// How many background fetches (warm-up and refresh-ahead) run at once across all databases.
pub(super) const BACKGROUND_CONCURRENCY: usize = 8;
/// Background refresh starts at a random point between these fractions of the TTL.
const REFRESH_AHEAD: (f64, f64) = (0.80, 0.90);
/// The share of an IAM token's validity it is served fresh (10 minutes of 15): it is signed
/// again well before it expires.
const TOKEN_FRESH: f64 = 2.0 / 3.0;
/// The share of an IAM token's validity it may be served stale, at most: the rest is left for
/// the client to log in with it.
const TOKEN_SERVABLE: f64 = 0.95;

/// Credentials as served, with how old they are.
#[derive(Debug, Clone)]
pub struct Served {
    pub credentials: Arc<Credentials>,
    /// True when the credentials are past their TTL because the source is failing.
    pub stale: bool,
    /// Time since the credentials were fetched.
    pub age: Duration,
}

impl Served {
    fn fresh(credentials: Arc<Credentials>) -> Self {
        Self {
            age: credentials.fetched.elapsed(),
            credentials,
            stale: false,
        }
    }
}

/// A database's readiness as `/readyz` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness<'a> {
    /// Databases not fetched successfully yet.
    pub not_ready: Vec<&'a DbName>,
    /// Databases served, but whose RDS secret status is `impaired`, or whose latest secret value
    /// was rejected as malformed (the last good credentials are served).
    pub degraded: Vec<&'a DbName>,
}

/// Serves credentials for the configured databases.
pub struct Broker {
    /// Boxed: the table keeps up to twice as many slots as databases, and a slot is then a
    /// pointer rather than a whole `DbState` (some 200 KiB less with 1,000 databases).
    pub(super) dbs: foldhash::HashMap<DbName, Box<DbState>>,
    pub(super) cache: CredentialCache,
    pub(super) upstream: Upstream,
    ttl: Duration,
    max_stale: Duration,
    pub(super) backoff: UpstreamConfig,
    /// The AWS agent API's cache, when that API is served.
    pub(super) secrets: Option<SecretStore>,
    pub(super) rotation: RotationConfig,
    pub(super) warm: bool,
    pub(super) background: Semaphore,
    /// Set when the broker stops: every wait and watch ends.
    pub(super) closing: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("dbs", &self.dbs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// What a broker is built with besides its databases and cache settings.
pub(crate) struct BrokerSettings {
    pub(crate) sources: Sources,
    pub(crate) metrics: Metrics,
    pub(crate) upstream: UpstreamConfig,
    pub(crate) rotation: RotationConfig,
    /// The AWS agent API's cache, when that API is served.
    pub(crate) agent: Option<StoreSettings>,
}

impl Broker {
    pub(crate) fn new(
        databases: impl IntoIterator<Item = (DbName, DatabaseConfig)>,
        cache: &CacheConfig,
        settings: BrokerSettings,
    ) -> Self {
        let dbs = databases
            .into_iter()
            .map(|(name, config)| {
                let state = DbState::new(name.clone(), config, cache.warm, &settings.metrics);
                (name, Box::new(state))
            })
            .collect::<foldhash::HashMap<_, _>>();
        let mut counters: Vec<_> = dbs
            .iter()
            .map(|(name, state)| (name.clone(), Arc::clone(state.metrics.counters())))
            .collect();
        counters.sort_by(|a, b| a.0.cmp(&b.0));
        settings.metrics.register_db_counters(counters);
        let secrets = settings
            .agent
            .map(|agent| SecretStore::new(agent, &settings.metrics));
        Self {
            dbs,
            // Entries live past their TTL for `max_stale`, to be served while the source fails.
            cache: CredentialCache::new(cache.ttl + cache.max_stale, cache.capacity),
            upstream: Upstream {
                sources: settings.sources,
                metrics: settings.metrics,
                topology_ttl: cache.topology_ttl,
            },
            ttl: cache.ttl,
            max_stale: cache.max_stale,
            backoff: settings.upstream,
            secrets,
            rotation: settings.rotation,
            warm: cache.warm,
            background: Semaphore::new(BACKGROUND_CONCURRENCY),
            closing: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Current credentials for `db`: from the cache when present (stale if past the TTL, which
    /// happens only while the source fails), else from the source.
    pub async fn get(&self, db: &str) -> Result<Served, BrokerError> {
        let state = self.lookup(db)?;
        let arrived = Instant::now();
        if let Some(served) = self.cached_at(state, arrived) {
            return Ok(served);
        }
        state.metrics.count(|c| &c.misses);
        let credentials = self
            .fetch_shared(state, arrived, true, false)
            .await
            .map_err(|e| match e {
                BrokerError::Timeout(detail) | BrokerError::Unavailable(detail)
                    if state.is_ready() =>
                {
                    state.metrics.count(|c| &c.expired);
                    BrokerError::Expired(detail)
                }
                other => other,
            })?;
        Ok(Served::fresh(credentials))
    }

    /// What [`get`](Self::get) answers for `db` when the cache can answer without waiting:
    /// `Ok(None)` when the source has to be asked.
    pub fn cached(&self, db: &str) -> Result<Option<Served>, BrokerError> {
        let state = self.lookup(db)?;
        Ok(self.cached_at(state, Instant::now()))
    }

    /// The cached credentials of `state`'s database as served at `now`: fresh within the TTL
    /// (unless the source's latest value was rejected as malformed), stale within the stale
    /// allowance after it, else `None`. Counts the lookup when it is answered.
    fn cached_at(&self, state: &DbState, now: Instant) -> Option<Served> {
        let credentials = self.cache.get(&state.name)?;
        let age = now.saturating_duration_since(credentials.fetched);
        let (ttl, servable) = self.lifetime(&credentials);
        if age < ttl && !state.is_rejected() {
            state.metrics.count(|c| &c.hits);
            return Some(Served {
                credentials,
                stale: false,
                age,
            });
        }
        if age < servable {
            state.metrics.count(|c| &c.stale_lookups);
            state.note_stale(age);
            return Some(Served {
                credentials,
                stale: true,
                age,
            });
        }
        None
    }

    /// How long `credentials` are served fresh, and how long in all (stale after the first): the
    /// TTL and the stale allowance; for an IAM token, within its validity.
    pub(super) fn lifetime(&self, credentials: &Credentials) -> (Duration, Duration) {
        match credentials.valid_for() {
            None => (self.ttl, self.ttl + self.max_stale),
            Some(valid) => {
                let ttl = self.ttl.min(valid.mul_f64(TOKEN_FRESH));
                (
                    ttl,
                    (ttl + self.max_stale).min(valid.mul_f64(TOKEN_SERVABLE)),
                )
            }
        }
    }

    /// Fetches `db` from the source now, the call a client makes after its login failed.
    ///
    /// Answered without an upstream call when `known_version` (the version the caller has)
    /// is already superseded by the cached one, or, when the caller names no version, when the
    /// last fetch is younger than the refresh minimum interval. A caller naming the cached
    /// version is never answered with it from the cache: within the minimum interval it waits
    /// for the interval's end, and everyone who waited shares the one fetch then. That fetch
    /// also reads the pending version when the current one did not change (a rotation may be
    /// half done); while the source fails, no call is made before the backoff delay has passed.
    pub async fn refresh(
        &self,
        db: &str,
        known_version: Option<&str>,
    ) -> Result<Served, BrokerError> {
        let state = self.lookup(db)?;
        let arrived = Instant::now();
        // A client's login failed: a rotation may be under way, so watch for a while.
        state.watch_for(WATCH_AFTER_REFRESH);
        // A rejected value may have been corrected since: always ask again.
        if let Some(cached) = self.cache.get(&state.name)
            && !state.is_rejected()
        {
            let superseded = known_version.is_some_and(|known| known != cached.version_id);
            let allowed_at = cached.fetched + self.rotation.refresh_min_interval;
            let recent = arrived < allowed_at;
            if superseded || (recent && known_version.is_none()) {
                debug!(db = %state.name, superseded, recent, "refresh answered from the cache");
                return Ok(Served::fresh(cached));
            }
            if recent {
                debug!(db = %state.name, "refresh of the cached version waits for the minimum interval");
                tokio::time::sleep_until(allowed_at.into()).await;
            }
        }
        let credentials = self.fetch_shared(state, arrived, true, true).await?;
        Ok(Served::fresh(credentials))
    }

    /// Which databases are not ready, and which are served but degraded.
    pub fn readiness(&self) -> Readiness<'_> {
        let mut not_ready = Vec::new();
        let mut degraded = Vec::new();
        for (name, state) in &self.dbs {
            if !state.is_ready() {
                not_ready.push(name);
            }
            // An IAM login uses no secret: the master user secret's state is not its own.
            let impaired = matches!(state.config.login, Login::Secret(_))
                && state
                    .last_topology()
                    .is_some_and(|t| t.secret_status.as_deref() == Some("impaired"));
            if impaired || state.is_rejected() {
                degraded.push(name);
            }
        }
        not_ready.sort();
        degraded.sort();
        Readiness {
            not_ready,
            degraded,
        }
    }

    /// The configured databases.
    pub(crate) fn databases(&self) -> impl Iterator<Item = &DbName> {
        self.dbs.keys()
    }

    pub(super) fn lookup(&self, db: &str) -> Result<&DbState, BrokerError> {
        self.dbs
            .get(db)
            .map(AsRef::as_ref)
            .ok_or(BrokerError::UnknownDatabase)
    }

    /// The one way to call the source for a database. Callers queue on the database's flight;
    /// whoever finds an attempt that finished after it arrived takes that attempt's result.
    /// With `honor_backoff`, a caller arriving during a backoff delay gets the last error
    /// without a call.
    pub(super) async fn fetch_shared(
        &self,
        state: &DbState,
        arrived: Instant,
        honor_backoff: bool,
        with_pending: bool,
    ) -> Result<Arc<Credentials>, BrokerError> {
        self.fetch_with(state, arrived, honor_backoff, with_pending, None)
            .await
    }

    /// [`fetch_shared`](Self::fetch_shared), with the current version already read when
    /// `prefetched` (by a batch read at warm-up): the rest of the fetch is the same.
    pub(super) async fn fetch_with(
        &self,
        state: &DbState,
        arrived: Instant,
        honor_backoff: bool,
        with_pending: bool,
        prefetched: Option<SecretVersion>,
    ) -> Result<Arc<Credentials>, BrokerError> {
        let name = &state.name;
        let mut flight = state.flight.lock().await;
        if let Some(result) = flight.finished_since(arrived) {
            return result;
        }
        if honor_backoff && let Some(last) = flight.backing_off(Instant::now()) {
            return Err(last);
        }
        // A fallback region answers only while nothing fresh is cached.
        let fresh = self
            .cache
            .get(name)
            .is_some_and(|c| c.fetched.elapsed() < self.lifetime(&c).0);
        let result = self
            .upstream
            .fetch(state, with_pending, prefetched, !fresh)
            .await;
        let now = Instant::now();
        // The delay before the background task fetches again, and the backoff it is.
        let (next, backoff) = match &result {
            Ok(credentials) => {
                flight.succeeded();
                state.rejected.store(false, Ordering::Release);
                self.cache.insert(name.clone(), Arc::clone(credentials));
                // After the insert: a woken watcher finds the new version in the cache.
                state.publish(credentials);
                if state.serving_stale.swap(false, Ordering::AcqRel) {
                    info!(db = %name, "the secret source answers again; serving fresh credentials");
                }
                (
                    self.lifetime(credentials)
                        .0
                        .mul_f64(random_between(REFRESH_AHEAD)),
                    Duration::ZERO,
                )
            }
            Err(err) => {
                match err {
                    // A definite "does not exist" (the secret deleted or scheduled for deletion,
                    // the RDS database gone): nothing stale is served, so a deletion revokes.
                    BrokerError::Deleted(_) => {
                        self.cache.invalidate(name);
                        state.publish_deleted();
                    }
                    BrokerError::SecretNotFound(detail) => {
                        if self.cache.get(name).is_some() {
                            warn!(db = %name, error = %detail, "the secret no longer exists upstream; its credentials are no longer served");
                        }
                        self.cache.invalidate(name);
                        state.publish_deleted();
                    }
                    // A new value that is not credentials: the last good ones are still served,
                    // marked stale, within the stale allowance.
                    BrokerError::Malformed { .. } => {
                        state.rejected.store(true, Ordering::Release);
                        state.metrics.count(|c| &c.malformed);
                    }
                    _ => {}
                }
                let delay = flight.failed(now, &self.backoff);
                (delay, delay)
            }
        };
        state
            .metrics
            .set_backoff(backoff.as_secs_f64(), flight.failures);
        state.failures.store(flight.failures, Ordering::Release);
        flight.last = Some((now, result.clone()));
        let first = state.lock_next_fetch().replace(now + next).is_none();
        if first {
            state.wake.notify_one();
        }
        result
    }
}
