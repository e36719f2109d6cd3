//! The core: a database name in, current credentials out, through the cache and the sources.
//! Every upstream call for a database goes through one per-database flight, so there is never
//! more than one in progress; failures back off with growing, jittered delays; entries are
//! refreshed in the background before their TTL ends; and while the source fails the last good
//! credentials are served, marked stale, for at most `max_stale`. RDS databases are resolved to
//! their master user secret and endpoint, cached apart with a longer TTL. Nothing here knows
//! about HTTP.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, Semaphore};
use tracing::{debug, info, warn};

use crate::cache::CredentialCache;
use crate::config::{CacheConfig, DatabaseConfig, RotationConfig, SecretRef, UpstreamConfig};
use crate::credentials::{Credentials, DbName, Defaults, MalformedSecret};
use crate::metrics::{DbCounters, Metrics};
use crate::source::rds::SECRET_STATUSES;
use crate::source::{RdsApi, SecretMetadata, Source, SourceError, Stage, Topology};

/// How many background fetches (warm-up and refresh-ahead) run at once across all databases.
const BACKGROUND_CONCURRENCY: usize = 8;
/// Background refresh starts at a random point between these fractions of the TTL.
const REFRESH_AHEAD: (f64, f64) = (0.80, 0.90);

/// Why the broker could not return credentials.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    #[error("unknown database")]
    UnknownDatabase,
    #[error("secret source: {0}")]
    Source(#[from] SourceError),
    #[error("secret for database {db} is malformed: {reason}")]
    Malformed { db: DbName, reason: MalformedSecret },
    /// The last good credentials are older than `ttl + max_stale` and the source still fails.
    #[error("credentials expired: {0}")]
    Expired(SourceError),
    /// The RDS instance or cluster no longer exists.
    #[error("database deleted: {0}")]
    Deleted(String),
}

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

/// The outcome of the last upstream attempt for a database, shared with everyone who waited.
#[derive(Debug, Default)]
struct Flight {
    last: Option<(Instant, Result<Arc<Credentials>, BrokerError>)>,
    failures: u32,
    retry_at: Option<Instant>,
}

/// Per-database state that lives as long as the broker.
#[derive(Debug)]
struct DbState {
    config: DatabaseConfig,
    /// Set once the credentials were fetched successfully.
    ready: AtomicBool,
    /// Held for the duration of each upstream call: at most one per database.
    flight: tokio::sync::Mutex<Flight>,
    /// When the background task should fetch next (refresh-ahead or retry after backoff).
    next_fetch: Mutex<Option<Instant>>,
    /// Wakes the background task when `next_fetch` is first set, or set to now.
    wake: Notify,
    /// Set while stale credentials are served, so that each outage is logged once.
    serving_stale: AtomicBool,
    /// The version id last fetched, to notice rotations.
    last_version: Mutex<Option<String>>,
    /// The resolved RDS topology and when it was resolved.
    topology: Mutex<Option<(Instant, Arc<Topology>)>>,
    /// `DescribeSecret` saw an `AWSPENDING` version: fetch it with the next fetch.
    pending_hint: AtomicBool,
    /// The last fetch found a value that is not credentials: the last good credentials are
    /// served, marked stale, until a fetch succeeds again (or they expire).
    rejected: AtomicBool,
    /// This database's event counters (lookups, stale serves, rotations, ...).
    counters: Arc<DbCounters>,
}

/// Serves credentials for the configured databases.
pub struct Broker {
    dbs: foldhash::HashMap<DbName, DbState>,
    cache: CredentialCache,
    source: Box<dyn Source>,
    rds: Option<Box<dyn RdsApi>>,
    metrics: Metrics,
    ttl: Duration,
    max_stale: Duration,
    topology_ttl: Duration,
    upstream: UpstreamConfig,
    rotation: RotationConfig,
    warm: bool,
    background: Semaphore,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("dbs", &self.dbs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The parts a broker is built from.
pub(crate) struct Parts {
    pub(crate) source: Box<dyn Source>,
    /// Required when any database is named by an RDS identifier.
    pub(crate) rds: Option<Box<dyn RdsApi>>,
    pub(crate) metrics: Metrics,
    pub(crate) upstream: UpstreamConfig,
    pub(crate) rotation: RotationConfig,
}

impl Broker {
    pub(crate) fn new(
        databases: impl IntoIterator<Item = (DbName, DatabaseConfig)>,
        cache: &CacheConfig,
        parts: Parts,
    ) -> Self {
        let dbs = databases
            .into_iter()
            .map(|(name, config)| {
                let state = DbState {
                    config,
                    ready: AtomicBool::new(false),
                    flight: tokio::sync::Mutex::new(Flight::default()),
                    next_fetch: Mutex::new(cache.warm.then(Instant::now)),
                    wake: Notify::new(),
                    serving_stale: AtomicBool::new(false),
                    last_version: Mutex::new(None),
                    topology: Mutex::new(None),
                    pending_hint: AtomicBool::new(false),
                    rejected: AtomicBool::new(false),
                    counters: Arc::default(),
                };
                (name, state)
            })
            .collect::<foldhash::HashMap<_, _>>();
        let mut counters: Vec<_> = dbs
            .iter()
            .map(|(name, state)| (name.clone(), Arc::clone(&state.counters)))
            .collect();
        counters.sort_by(|a, b| a.0.cmp(&b.0));
        parts.metrics.register_db_counters(counters);
        Self {
            dbs,
            // Entries live past their TTL for `max_stale`, to be served while the source fails.
            cache: CredentialCache::new(cache.ttl + cache.max_stale, cache.capacity),
            source: parts.source,
            rds: parts.rds,
            metrics: parts.metrics,
            ttl: cache.ttl,
            max_stale: cache.max_stale,
            topology_ttl: cache.topology_ttl,
            upstream: parts.upstream,
            rotation: parts.rotation,
            warm: cache.warm,
            background: Semaphore::new(BACKGROUND_CONCURRENCY),
        }
    }

    /// Current credentials for `db`: from the cache when present (stale if past the TTL, which
    /// happens only while the source fails), else from the source.
    pub async fn get(&self, db: &str) -> Result<Served, BrokerError> {
        let (name, state) = self.lookup(db)?;
        let arrived = Instant::now();
        if let Some(served) = self.cached_at(name, state, arrived) {
            return Ok(served);
        }
        DbCounters::inc(&state.counters.misses);
        let credentials = self
            .fetch_shared(name, state, arrived, true, false)
            .await
            .map_err(|e| match e {
                BrokerError::Source(source)
                    if source.is_outage() && state.ready.load(Ordering::Acquire) =>
                {
                    DbCounters::inc(&state.counters.expired);
                    BrokerError::Expired(source)
                }
                other => other,
            })?;
        Ok(Served::fresh(credentials))
    }

    /// What [`get`](Self::get) answers for `db` when the cache can answer without waiting:
    /// `Ok(None)` when the source has to be asked.
    pub fn cached(&self, db: &str) -> Result<Option<Served>, BrokerError> {
        let (name, state) = self.lookup(db)?;
        Ok(self.cached_at(name, state, Instant::now()))
    }

    /// The cached credentials of `name` as served at `now`: fresh within the TTL (unless the
    /// source's latest value was rejected as malformed), stale within the stale allowance after
    /// it, else `None`. Counts the lookup when it is answered.
    fn cached_at(&self, name: &DbName, state: &DbState, now: Instant) -> Option<Served> {
        let credentials = self.cache.get(name)?;
        let age = now.saturating_duration_since(credentials.fetched);
        if age < self.ttl && !state.rejected.load(Ordering::Acquire) {
            DbCounters::inc(&state.counters.hits);
            return Some(Served {
                credentials,
                stale: false,
                age,
            });
        }
        if age < self.ttl + self.max_stale {
            DbCounters::inc(&state.counters.stale_lookups);
            Self::note_stale(name, state, age);
            return Some(Served {
                credentials,
                stale: true,
                age,
            });
        }
        None
    }

    /// Fetches `db` from the source now, the call a client makes after its login failed.
    ///
    /// Answered without an upstream call when `known_version` (the version the caller has)
    /// is already superseded by the cached one, or when the last fetch is younger than the
    /// refresh minimum interval. Otherwise callers share one upstream call, which also reads
    /// the `AWSPENDING` version when the current one did not change (a rotation may be half
    /// done); while the source fails, no call is made before the backoff delay has passed.
    pub async fn refresh(
        &self,
        db: &str,
        known_version: Option<&str>,
    ) -> Result<Served, BrokerError> {
        let (name, state) = self.lookup(db)?;
        let arrived = Instant::now();
        if let Some(cached) = self.cache.get(name) {
            let superseded = known_version.is_some_and(|known| known != cached.version_id);
            let recent = cached.fetched.elapsed() < self.rotation.refresh_min_interval;
            // A rejected value may have been corrected since: always ask again.
            let rejected = state.rejected.load(Ordering::Acquire);
            if (superseded || recent) && !rejected {
                debug!(db = %name, superseded, recent, "refresh answered from the cache");
                return Ok(Served::fresh(cached));
            }
        }
        let credentials = self.fetch_shared(name, state, arrived, true, true).await?;
        Ok(Served::fresh(credentials))
    }

    /// Which databases are not ready, and which are served but degraded.
    pub fn readiness(&self) -> Readiness<'_> {
        let mut not_ready = Vec::new();
        let mut degraded = Vec::new();
        for (name, state) in &self.dbs {
            if !state.ready.load(Ordering::Acquire) {
                not_ready.push(name);
            }
            let topology = state
                .topology
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let impaired = topology
                .as_ref()
                .is_some_and(|(_, t)| t.secret_status.as_deref() == Some("impaired"));
            if impaired || state.rejected.load(Ordering::Acquire) {
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

    /// Keeps every database fresh in the background until the returned future is dropped:
    /// warm-up (when enabled), refresh-ahead before the TTL ends, retries with backoff, and the
    /// periodic `DescribeSecret` for rotation metrics.
    pub async fn run_background(self: Arc<Self>) {
        let mut tasks = tokio::task::JoinSet::new();
        for name in self.dbs.keys() {
            let (broker, name) = (Arc::clone(&self), name.clone());
            tasks.spawn(async move { broker.keep_fresh(&name).await });
        }
        if self.warm {
            info!(databases = self.dbs.len(), "warming up");
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn keep_fresh(&self, name: &DbName) {
        let state = &self.dbs[name];
        let mut next_describe = Instant::now();
        loop {
            let due = *state
                .next_fetch
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let Some(due) = due else {
                // Not fetched yet and no warm-up: wait for the first on-demand fetch.
                state.wake.notified().await;
                continue;
            };
            let describe_due = state.ready.load(Ordering::Acquire).then_some(next_describe);
            let wake_at = describe_due.map_or(due, |d| d.min(due));
            if wake_at > Instant::now() {
                tokio::select! {
                    () = tokio::time::sleep_until(wake_at.into()) => {}
                    () = state.wake.notified() => {}
                }
                continue; // `next_fetch` may have moved meanwhile (a refresh, a retry).
            }
            let Ok(_permit) = self.background.acquire().await else {
                return;
            };
            // The upstream calls' futures are large; boxed, they exist only while a call runs,
            // and a task waiting for its next refresh stays small (it matters with many dbs).
            if due <= Instant::now() {
                let pending = state.pending_hint.load(Ordering::Acquire);
                let _ =
                    Box::pin(self.fetch_shared(name, state, Instant::now(), false, pending)).await;
            }
            if describe_due.is_some_and(|d| d <= Instant::now()) {
                Box::pin(self.describe(name, state)).await;
                next_describe = Instant::now() + self.rotation.describe_interval;
            }
        }
    }

    /// Has the background task fetch every database now, whatever its schedule (the backoff of
    /// a failing one included): what SIGHUP asks for.
    pub fn fetch_all_now(&self) {
        let now = Instant::now();
        for state in self.dbs.values() {
            *state
                .next_fetch
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(now);
            state.wake.notify_one();
        }
    }

    /// The configured databases.
    pub(crate) fn databases(&self) -> impl Iterator<Item = &DbName> {
        self.dbs.keys()
    }

    fn lookup(&self, db: &str) -> Result<(&DbName, &DbState), BrokerError> {
        self.dbs
            .get_key_value(db)
            .ok_or(BrokerError::UnknownDatabase)
    }

    fn note_stale(name: &DbName, state: &DbState, age: Duration) {
        DbCounters::inc(&state.counters.stale_served);
        if !state.serving_stale.swap(true, Ordering::AcqRel) {
            warn!(db = %name, age_seconds = age.as_secs(), "serving stale credentials: the secret source is failing");
        }
    }

    /// The one way to call the source for a database. Callers queue on the database's flight;
    /// whoever finds an attempt that finished after it arrived takes that attempt's result.
    /// With `honor_backoff`, a caller arriving during a backoff delay gets the last error
    /// without a call.
    async fn fetch_shared(
        &self,
        name: &DbName,
        state: &DbState,
        arrived: Instant,
        honor_backoff: bool,
        with_pending: bool,
    ) -> Result<Arc<Credentials>, BrokerError> {
        let mut flight = state.flight.lock().await;
        if let Some((finished, result)) = &flight.last
            && *finished >= arrived
        {
            return result.clone();
        }
        if honor_backoff
            && let (Some(retry_at), Some((_, Err(last)))) = (flight.retry_at, &flight.last)
            && Instant::now() < retry_at
        {
            return Err(last.clone());
        }
        let result = self.fetch(name, state, with_pending).await;
        let now = Instant::now();
        let next = match &result {
            Ok(credentials) => {
                flight.failures = 0;
                flight.retry_at = None;
                state.rejected.store(false, Ordering::Release);
                self.cache.insert(name.clone(), Arc::clone(credentials));
                if state.serving_stale.swap(false, Ordering::AcqRel) {
                    info!(db = %name, "the secret source answers again; serving fresh credentials");
                }
                now + self.ttl.mul_f64(fastrand_between(REFRESH_AHEAD))
            }
            Err(err) => {
                match err {
                    // A definite "does not exist" (the secret deleted or scheduled for deletion,
                    // the RDS database gone): nothing stale is served, so a deletion revokes.
                    BrokerError::Deleted(_) => self.cache.invalidate(name),
                    BrokerError::Source(source) if !source.is_outage() => {
                        if self.cache.get(name).is_some() {
                            warn!(db = %name, error = %source, "the secret no longer exists upstream; its credentials are no longer served");
                        }
                        self.cache.invalidate(name);
                    }
                    // A new value that is not credentials: the last good ones are still served,
                    // marked stale, within the stale allowance.
                    BrokerError::Malformed { .. } => {
                        state.rejected.store(true, Ordering::Release);
                        DbCounters::inc(&state.counters.malformed);
                    }
                    _ => {}
                }
                flight.failures = flight.failures.saturating_add(1);
                let delay = self.backoff(flight.failures);
                flight.retry_at = Some(now + delay);
                now + delay
            }
        };
        let backoff = flight.retry_at.map_or(0.0, |at| (at - now).as_secs_f64());
        self.metrics
            .upstream_backoff
            .with_label_values(&[name.as_str()])
            .set(backoff);
        self.metrics
            .upstream_failures
            .with_label_values(&[name.as_str()])
            .set(i64::from(flight.failures));
        flight.last = Some((now, result.clone()));
        let first = state
            .next_fetch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(next)
            .is_none();
        if first {
            state.wake.notify_one();
        }
        result
    }

    /// The delay after `failures` consecutive failures: exponential, capped, with "equal
    /// jitter" (between half and all of the exponential delay), so spacing always grows while
    /// a fleet of brokers does not retry in lockstep.
    fn backoff(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(20);
        let full = self
            .upstream
            .backoff_initial
            .saturating_mul(1 << exponent)
            .min(self.upstream.backoff_max);
        full.mul_f64(fastrand_between((0.5, 1.0)))
    }

    /// Times an upstream call and counts its outcome; keeps `upstream_up` current.
    async fn observe<T>(
        &self,
        operation: &str,
        call: impl Future<Output = Result<T, SourceError>>,
    ) -> Result<T, SourceError> {
        let started = Instant::now();
        let result = call.await;
        self.metrics
            .upstream_duration
            .with_label_values(&[operation])
            .observe(started.elapsed().as_secs_f64());
        let outcome = result
            .as_ref()
            .map_or_else(SourceError::outcome, |_| "success");
        self.metrics
            .upstream_requests
            .with_label_values(&[operation, outcome])
            .inc();
        let up = !result.as_ref().is_err_and(SourceError::is_outage);
        self.metrics.upstream_up.set(i64::from(up));
        result
    }

    /// The RDS topology of `state`'s database: cached for `topology_ttl`, or resolved again.
    async fn topology(
        &self,
        name: &DbName,
        state: &DbState,
        force: bool,
    ) -> Result<Option<Arc<Topology>>, BrokerError> {
        let SecretRef::Rds(target) = &state.config.secret else {
            return Ok(None);
        };
        if !force {
            let cached = state
                .topology
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some((resolved, topology)) = cached.as_ref()
                && resolved.elapsed() < self.topology_ttl
            {
                return Ok(Some(Arc::clone(topology)));
            }
        }
        let rds = self
            .rds
            .as_ref()
            .expect("an RDS client exists when RDS databases do");
        let resolved = self.observe(target.operation(), rds.resolve(target)).await;
        let topology = match resolved {
            Ok(topology) => Arc::new(topology),
            Err(SourceError::Gone(id)) => {
                warn!(db = %name, rds = %id, "the RDS database no longer exists");
                DbCounters::inc(&state.counters.deleted);
                *state
                    .topology
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
                return Err(BrokerError::Deleted(id));
            }
            Err(err) => {
                // An outage of the RDS API does not stop a known secret from being read.
                let cached = state
                    .topology
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some((_, topology)) = cached.as_ref().filter(|_| err.is_outage() && !force) {
                    warn!(db = %name, error = %err, "resolving the RDS database failed; using the last topology");
                    return Ok(Some(Arc::clone(topology)));
                }
                warn!(db = %name, error = %err, "resolving the RDS database failed");
                return Err(err.into());
            }
        };
        for status in SECRET_STATUSES {
            let current = topology.secret_status.as_deref() == Some(status);
            self.metrics
                .secret_status
                .with_label_values(&[name.as_str(), status])
                .set(i64::from(current));
        }
        *state
            .topology
            .lock()
            .unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), Arc::clone(&topology)));
        Ok(Some(topology))
    }

    /// One fetch: resolve RDS if needed, read the current version (and the pending one when
    /// asked and the current did not change), parse, record metrics and logs.
    async fn fetch(
        &self,
        name: &DbName,
        state: &DbState,
        with_pending: bool,
    ) -> Result<Arc<Credentials>, BrokerError> {
        let mut topology = self.topology(name, state, false).await?;
        let operation = self.source.fetch_operation();
        let secret_id = |topology: &Option<Arc<Topology>>| match (&state.config.secret, topology) {
            (SecretRef::SecretId(id), _) => id.clone(),
            (SecretRef::Rds(_), Some(t)) => t.secret_arn.clone(),
            (SecretRef::Rds(_), None) => unreachable!("RDS databases always have a topology"),
        };
        let mut id = secret_id(&topology);
        let mut result = self
            .observe(operation, self.source.fetch(&id, Stage::Current))
            .await;
        if matches!(result, Err(SourceError::NotFound(_))) && topology.is_some() {
            // The secret is gone: the instance may have been re-created with a new one.
            topology = self.topology(name, state, true).await?;
            let new_id = secret_id(&topology);
            if new_id != id {
                info!(db = %name, "the RDS database has a new master user secret");
                id = new_id;
                result = self
                    .observe(operation, self.source.fetch(&id, Stage::Current))
                    .await;
            }
        }
        let secret = result.inspect_err(|e| {
            warn!(db = %name, error = %e, "fetching credentials failed");
        })?;
        let malformed = |reason| {
            warn!(db = %name, %reason, "secret is not usable as database credentials");
            BrokerError::Malformed {
                db: name.clone(),
                reason,
            }
        };
        let mut defaults = Defaults::from_config(&state.config);
        if let Some(topology) = &topology {
            defaults = defaults.with_topology(topology);
        }
        let mut credentials =
            Credentials::from_secret(name.clone(), defaults, secret).map_err(malformed)?;
        let unchanged = state
            .last_version
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_deref()
            == Some(credentials.version_id.as_str());
        if with_pending && (unchanged || state.pending_hint.load(Ordering::Acquire)) {
            match self
                .observe(operation, self.source.fetch(&id, Stage::Pending))
                .await
            {
                Ok(pending) => {
                    credentials = credentials.with_pending(pending).map_err(malformed)?;
                }
                Err(SourceError::NotFound(_)) => state.pending_hint.store(false, Ordering::Release),
                Err(e) => warn!(db = %name, error = %e, "reading the pending version failed"),
            }
        }
        Self::note_version(name, state, &credentials.version_id);
        self.metrics
            .last_fetch
            .with_label_values(&[name.as_str()])
            .set(unix_seconds(credentials.fetched_at));
        state.ready.store(true, Ordering::Release);
        debug!(db = %name, version_id = %credentials.version_id, "credentials fetched");
        Ok(Arc::new(credentials))
    }

    /// `DescribeSecret` for rotation metrics; notes a pending version for the next fetch.
    async fn describe(&self, name: &DbName, state: &DbState) {
        let id = match &state.config.secret {
            SecretRef::SecretId(id) => id.clone(),
            SecretRef::Rds(_) => {
                let topology = state
                    .topology
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                match topology.as_ref() {
                    Some((_, t)) => t.secret_arn.clone(),
                    None => return,
                }
            }
        };
        let Some(call) = self.source.describe(&id) else {
            return;
        };
        let metadata: SecretMetadata = match self.observe("DescribeSecret", call).await {
            Ok(metadata) => metadata,
            Err(e) => {
                warn!(db = %name, error = %e, "describing the secret failed");
                return;
            }
        };
        let db = [name.as_str()];
        self.metrics
            .rotation_enabled
            .with_label_values(&db)
            .set(i64::from(metadata.rotation_enabled));
        if let Some(at) = metadata.last_rotated {
            self.metrics
                .last_rotated
                .with_label_values(&db)
                .set(unix_seconds(at));
        }
        if let Some(at) = metadata.next_rotation {
            self.metrics
                .next_rotation
                .with_label_values(&db)
                .set(unix_seconds(at));
        }
        if let Some(version) = metadata.pending_version {
            debug!(db = %name, pending_version = %version, "a rotation is under way");
            state.pending_hint.store(true, Ordering::Release);
        }
    }

    /// Remembers the version fetched for a database; a change is a rotation, counted and
    /// logged (version ids only).
    fn note_version(name: &DbName, state: &DbState, version_id: &str) {
        let mut last = state
            .last_version
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(previous) = last.as_deref()
            && previous != version_id
        {
            info!(db = %name, previous_version = previous, version_id, "credentials version changed");
            DbCounters::inc(&state.counters.rotations);
        }
        *last = Some(version_id.to_owned());
    }
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A uniformly random factor in `[low, high)`.
fn fastrand_between((low, high): (f64, f64)) -> f64 {
    low + fastrand::f64() * (high - low)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{SecretPayload, SecretVersion};
    use crate::source::BoxFuture;
    use std::sync::atomic::AtomicUsize;

    /// A unit-test stand-in for a source: counts calls, answers after a short delay, and can be
    /// switched to failing.
    struct FakeSource {
        calls: Arc<AtomicUsize>,
        version: Arc<Mutex<String>>,
        failing: Arc<AtomicBool>,
    }

    impl Source for FakeSource {
        fn fetch_operation(&self) -> &'static str {
            "Fake"
        }

        fn fetch<'a>(
            &'a self,
            secret_id: &'a str,
            stage: Stage,
        ) -> BoxFuture<'a, Result<SecretVersion, SourceError>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                if secret_id == "missing" || stage == Stage::Pending {
                    return Err(SourceError::NotFound(secret_id.to_owned()));
                }
                if self.failing.load(Ordering::SeqCst) {
                    return Err(SourceError::Unavailable("down".to_owned()));
                }
                Ok(SecretVersion {
                    payload: SecretPayload::String(r#"{"username":"u","password":"p"}"#.into()),
                    version_id: self.version.lock().unwrap().clone(),
                    arn: None,
                })
            })
        }
    }

    struct Harness {
        broker: Arc<Broker>,
        calls: Arc<AtomicUsize>,
        version: Arc<Mutex<String>>,
        failing: Arc<AtomicBool>,
    }

    fn harness(ttl: Duration, max_stale: Duration) -> Harness {
        let calls = Arc::new(AtomicUsize::new(0));
        let version = Arc::new(Mutex::new("v1".to_owned()));
        let failing = Arc::new(AtomicBool::new(false));
        let db = |secret_id: &str| DatabaseConfig {
            secret: SecretRef::SecretId(secret_id.into()),
            host: None,
            port: None,
            dbname: None,
            engine: None,
        };
        let broker = Broker::new(
            [
                (DbName::parse("orders").unwrap(), db("orders-secret")),
                (DbName::parse("gone").unwrap(), db("missing")),
            ],
            &CacheConfig::for_tests(ttl, max_stale),
            Parts {
                source: Box::new(FakeSource {
                    calls: Arc::clone(&calls),
                    version: Arc::clone(&version),
                    failing: Arc::clone(&failing),
                }),
                rds: None,
                metrics: Metrics::new(),
                upstream: UpstreamConfig {
                    backoff_initial: Duration::from_millis(200),
                    backoff_max: Duration::from_secs(2),
                },
                rotation: RotationConfig {
                    describe_interval: Duration::from_mins(10),
                    refresh_min_interval: Duration::ZERO,
                },
            },
        );
        Harness {
            broker: Arc::new(broker),
            calls,
            version,
            failing,
        }
    }

    fn default_harness() -> Harness {
        harness(Duration::from_mins(1), Duration::from_mins(1))
    }

    #[test]
    fn a_waiting_background_task_is_small() {
        let h = default_harness();
        let name = DbName::parse("orders").unwrap();
        let task = h.broker.keep_fresh(&name);
        let size = std::mem::size_of_val(&task);
        assert!(
            size < 512,
            "a keep_fresh future takes {size} bytes per database"
        );
    }

    async fn concurrently<F, Fut>(n: usize, f: F) -> Vec<Result<Served, BrokerError>>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Served, BrokerError>> + Send + 'static,
    {
        let handles: Vec<_> = (0..n).map(|_| tokio::spawn(f())).collect();
        let mut results = Vec::new();
        for handle in handles {
            results.push(handle.await.unwrap());
        }
        results
    }

    #[tokio::test]
    async fn unknown_database_never_reaches_the_source() {
        let h = default_harness();
        assert!(matches!(
            h.broker.get("nope").await,
            Err(BrokerError::UnknownDatabase)
        ));
        assert!(matches!(
            h.broker.refresh("nope", None).await,
            Err(BrokerError::UnknownDatabase)
        ));
        assert_eq!(h.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn cached_answers_from_the_cache_alone_and_none_until_a_fetch() {
        let h = default_harness();
        assert!(matches!(
            h.broker.cached("nope"),
            Err(BrokerError::UnknownDatabase)
        ));
        assert!(h.broker.cached("orders").unwrap().is_none());
        assert_eq!(h.calls.load(Ordering::SeqCst), 0, "cached never fetches");
        h.broker.get("orders").await.unwrap();
        let served = h
            .broker
            .cached("orders")
            .unwrap()
            .expect("cached after a get");
        assert_eq!(served.credentials.version_id, "v1");
        assert!(!served.stale);
        assert_eq!(h.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_cold_gets_share_one_fetch() {
        let h = default_harness();
        let broker = Arc::clone(&h.broker);
        let results = concurrently(50, move || {
            let broker = Arc::clone(&broker);
            async move { broker.get("orders").await }
        })
        .await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(h.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_refreshes_share_one_fetch_and_see_the_new_version() {
        let h = default_harness();
        h.broker.get("orders").await.unwrap();
        *h.version.lock().unwrap() = "v2".to_owned();
        let broker = Arc::clone(&h.broker);
        let results = concurrently(20, move || {
            let broker = Arc::clone(&broker);
            async move { broker.refresh("orders", None).await }
        })
        .await;
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().unwrap().credentials.version_id == "v2")
        );
        assert_eq!(
            h.calls.load(Ordering::SeqCst),
            2,
            "one cold fetch, one refresh"
        );
        assert_eq!(
            h.broker.get("orders").await.unwrap().credentials.version_id,
            "v2"
        );
    }

    #[tokio::test]
    async fn readiness_lists_databases_not_fetched_yet() {
        let h = default_harness();
        assert_eq!(h.broker.readiness().not_ready.len(), 2);
        h.broker.get("orders").await.unwrap();
        let names: Vec<String> = h
            .broker
            .readiness()
            .not_ready
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["gone"]);
        assert!(matches!(
            h.broker.get("gone").await,
            Err(BrokerError::Source(SourceError::NotFound(_)))
        ));
    }

    #[tokio::test]
    async fn stale_credentials_are_served_within_max_stale_then_expire() {
        let h = harness(Duration::from_millis(300), Duration::from_millis(600));
        let fresh = h.broker.get("orders").await.unwrap();
        assert!(!fresh.stale);
        h.failing.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let stale = h.broker.get("orders").await.unwrap();
        assert!(stale.stale);
        assert!(stale.age >= Duration::from_millis(300));
        assert!(h.broker.cached("orders").unwrap().expect("stale").stale);
        assert_eq!(
            h.calls.load(Ordering::SeqCst),
            1,
            "a stale serve does not call upstream"
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(h.broker.cached("orders").unwrap().is_none(), "expired");
        assert!(matches!(
            h.broker.get("orders").await,
            Err(BrokerError::Expired(_))
        ));
    }

    #[tokio::test]
    async fn failures_back_off_with_growing_delays() {
        let h = default_harness();
        h.failing.store(true, Ordering::SeqCst);
        assert!(h.broker.get("orders").await.is_err());
        assert_eq!(h.calls.load(Ordering::SeqCst), 1);
        // Inside the backoff delay, callers get the last error without a call.
        for _ in 0..10 {
            assert!(h.broker.get("orders").await.is_err());
        }
        assert_eq!(h.calls.load(Ordering::SeqCst), 1);
        // Equal jitter: failure n waits between half and all of initial x 2^(n-1), capped.
        let (initial, max) = (
            h.broker.upstream.backoff_initial,
            h.broker.upstream.backoff_max,
        );
        for n in 1..=8u32 {
            let full = initial.saturating_mul(1 << (n - 1)).min(max);
            for _ in 0..20 {
                let delay = h.broker.backoff(n);
                assert!(
                    delay >= full / 2 && delay <= full,
                    "failure {n}: {delay:?} of {full:?}"
                );
            }
        }
        assert!(
            initial.saturating_mul(1 << 7) > max,
            "the test reaches the cap"
        );
    }

    #[tokio::test]
    async fn background_refresh_keeps_an_entry_fresh_before_its_ttl_ends() {
        let h = harness(Duration::from_millis(500), Duration::from_mins(1));
        let task = tokio::spawn(Arc::clone(&h.broker).run_background());
        h.broker.get("orders").await.unwrap();
        *h.version.lock().unwrap() = "v2".to_owned();
        tokio::time::sleep(Duration::from_millis(600)).await;
        let served = h.broker.get("orders").await.unwrap();
        task.abort();
        assert!(!served.stale, "refreshed ahead of the TTL");
        assert_eq!(served.credentials.version_id, "v2");
        assert!(served.age < Duration::from_millis(500));
    }

    /// A unit-test stand-in for the RDS API with a fixed secret status.
    struct FixedRds(&'static str);

    impl RdsApi for FixedRds {
        fn resolve<'a>(
            &'a self,
            _target: &'a crate::source::RdsTarget,
        ) -> BoxFuture<'a, Result<Topology, SourceError>> {
            Box::pin(async move {
                Ok(Topology {
                    secret_arn: "orders-secret".into(),
                    secret_status: Some(self.0.into()),
                    host: Some("rds-host".into()),
                    port: Some(5432),
                    reader_host: None,
                    engine: Some("postgres".into()),
                    dbname: Some("orders".into()),
                })
            })
        }
    }

    #[tokio::test]
    async fn an_impaired_secret_is_served_and_reported_degraded() {
        let h = default_harness();
        let metrics = Metrics::new();
        let broker = Broker::new(
            [(
                DbName::parse("orders").unwrap(),
                DatabaseConfig {
                    secret: SecretRef::Rds(crate::source::RdsTarget::Instance("i".into())),
                    host: None,
                    port: None,
                    dbname: None,
                    engine: None,
                },
            )],
            &CacheConfig::for_tests(Duration::from_mins(1), Duration::from_mins(1)),
            Parts {
                source: Box::new(FakeSource {
                    calls: Arc::clone(&h.calls),
                    version: Arc::clone(&h.version),
                    failing: Arc::clone(&h.failing),
                }),
                rds: Some(Box::new(FixedRds("impaired"))),
                metrics: metrics.clone(),
                upstream: UpstreamConfig::default(),
                rotation: RotationConfig::default(),
            },
        );
        let served = broker.get("orders").await.unwrap();
        assert_eq!(
            served.credentials.secret_status.as_deref(),
            Some("impaired")
        );
        assert_eq!(served.credentials.host.as_deref(), Some("rds-host"));
        let readiness = broker.readiness();
        assert!(readiness.not_ready.is_empty());
        assert_eq!(readiness.degraded.len(), 1);
        let text = metrics.render();
        assert!(
            text.contains(r#"credential_broker_secret_status{db="orders",status="impaired"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"credential_broker_secret_status{db="orders",status="active"} 0"#));
    }
}
