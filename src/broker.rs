//! The core: a database name in, current credentials out, through the cache and the source.
//! Every upstream call for a database goes through one per-database flight, so there is never
//! more than one in progress; failures back off with growing, jittered delays; entries are
//! refreshed in the background before their TTL ends; and while the source fails the last good
//! credentials are served, marked stale, for at most `max_stale`. Nothing here knows about HTTP.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, UNIX_EPOCH};

use tokio::sync::{Notify, Semaphore};
use tracing::{debug, info, warn};

use crate::cache::CredentialCache;
use crate::config::{CacheConfig, DatabaseConfig, UpstreamConfig};
use crate::credentials::{Credentials, DbName, MalformedSecret};
use crate::metrics::Metrics;
use crate::source::{Source, SourceError};

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
    /// Wakes the background task when `next_fetch` is first set.
    wake: Notify,
    /// Set while stale credentials are served, so that each outage is logged once.
    serving_stale: AtomicBool,
    /// The version id last fetched, to notice rotations.
    last_version: Mutex<Option<String>>,
}

/// Serves credentials for the configured databases.
pub struct Broker {
    dbs: HashMap<DbName, DbState>,
    cache: CredentialCache,
    source: Box<dyn Source>,
    metrics: Metrics,
    ttl: Duration,
    max_stale: Duration,
    upstream: UpstreamConfig,
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

impl Broker {
    pub(crate) fn new(
        databases: impl IntoIterator<Item = (DbName, DatabaseConfig)>,
        cache: &CacheConfig,
        upstream: UpstreamConfig,
        source: Box<dyn Source>,
        metrics: Metrics,
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
                };
                (name, state)
            })
            .collect();
        Self {
            dbs,
            // Entries live past their TTL for `max_stale`, to be served while the source fails.
            cache: CredentialCache::new(cache.ttl + cache.max_stale, cache.capacity),
            source,
            metrics,
            ttl: cache.ttl,
            max_stale: cache.max_stale,
            upstream,
            warm: cache.warm,
            background: Semaphore::new(BACKGROUND_CONCURRENCY),
        }
    }

    /// Current credentials for `db`: from the cache when present (stale if past the TTL, which
    /// happens only while the source fails), else from the source.
    pub async fn get(&self, db: &str) -> Result<Served, BrokerError> {
        let (name, state) = self.lookup(db)?;
        let arrived = Instant::now();
        if let Some(credentials) = self.cache.get(name).await {
            let age = arrived.saturating_duration_since(credentials.fetched);
            if age < self.ttl {
                self.count_lookup(name, "hit");
                return Ok(Served {
                    credentials,
                    stale: false,
                    age,
                });
            }
            if age < self.ttl + self.max_stale {
                self.count_lookup(name, "stale");
                self.note_stale(name, state, age);
                return Ok(Served {
                    credentials,
                    stale: true,
                    age,
                });
            }
        }
        self.count_lookup(name, "miss");
        let credentials = self
            .fetch_shared(name, state, arrived, true)
            .await
            .map_err(|e| match e {
                BrokerError::Source(source) if state.ready.load(Ordering::Acquire) => {
                    BrokerError::Expired(source)
                }
                other => other,
            })?;
        Ok(Served {
            credentials,
            stale: false,
            age: Duration::ZERO,
        })
    }

    /// Fetches `db` from the source now and caches the result. Refreshes that arrive while an
    /// upstream call for `db` is in flight share its result instead of calling again, and while
    /// the source is failing no call is made before the backoff delay has passed.
    pub async fn refresh(&self, db: &str) -> Result<Served, BrokerError> {
        let (name, state) = self.lookup(db)?;
        let credentials = self.fetch_shared(name, state, Instant::now(), true).await?;
        Ok(Served {
            age: credentials.fetched.elapsed(),
            credentials,
            stale: false,
        })
    }

    /// The configured databases that have not been fetched successfully yet.
    pub fn not_ready(&self) -> Vec<&DbName> {
        let mut names: Vec<&DbName> = self
            .dbs
            .iter()
            .filter(|(_, state)| !state.ready.load(Ordering::Acquire))
            .map(|(name, _)| name)
            .collect();
        names.sort();
        names
    }

    /// Keeps every database fresh in the background until the returned future is dropped:
    /// warm-up (when enabled), refresh-ahead before the TTL ends, and retries with backoff.
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
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
                continue; // `next_fetch` may have moved meanwhile (a refresh, a retry).
            }
            let Ok(_permit) = self.background.acquire().await else {
                return;
            };
            let _ = self.fetch_shared(name, state, Instant::now(), false).await;
        }
    }

    fn lookup(&self, db: &str) -> Result<(&DbName, &DbState), BrokerError> {
        self.dbs
            .get_key_value(db)
            .ok_or(BrokerError::UnknownDatabase)
    }

    fn count_lookup(&self, name: &DbName, result: &str) {
        self.metrics
            .cache_lookups
            .with_label_values(&[name.as_str(), result])
            .inc();
    }

    fn note_stale(&self, name: &DbName, state: &DbState, age: Duration) {
        self.metrics
            .stale_served
            .with_label_values(&[name.as_str()])
            .inc();
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
        let result = self.fetch(name, state).await;
        let now = Instant::now();
        let next = if let Ok(credentials) = &result {
            flight.failures = 0;
            flight.retry_at = None;
            self.cache
                .insert(name.clone(), Arc::clone(credentials))
                .await;
            if state.serving_stale.swap(false, Ordering::AcqRel) {
                info!(db = %name, "the secret source answers again; serving fresh credentials");
            }
            now + self.ttl.mul_f64(fastrand_between(REFRESH_AHEAD))
        } else {
            flight.failures = flight.failures.saturating_add(1);
            let delay = self.backoff(flight.failures);
            flight.retry_at = Some(now + delay);
            now + delay
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

    /// One upstream fetch and parse, with metrics and logs.
    async fn fetch(&self, name: &DbName, state: &DbState) -> Result<Arc<Credentials>, BrokerError> {
        let operation = self.source.operation();
        let started = Instant::now();
        let result = self.source.fetch(&state.config.secret_id).await;
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
        let reachable = !matches!(
            result,
            Err(SourceError::Timeout(_) | SourceError::Unavailable(_))
        );
        self.metrics.upstream_up.set(i64::from(reachable));
        let secret = result.inspect_err(|e| {
            warn!(db = %name, error = %e, "fetching credentials failed");
        })?;
        let credentials =
            Credentials::from_secret(name.clone(), &state.config, secret).map_err(|reason| {
                warn!(db = %name, %reason, "secret is not usable as database credentials");
                BrokerError::Malformed {
                    db: name.clone(),
                    reason,
                }
            })?;
        note_version(name, state, &credentials.version_id);
        let fetched_at = credentials
            .fetched_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.metrics
            .last_fetch
            .with_label_values(&[name.as_str()])
            .set(fetched_at);
        state.ready.store(true, Ordering::Release);
        debug!(db = %name, version_id = %credentials.version_id, "credentials fetched");
        Ok(Arc::new(credentials))
    }
}

/// A uniformly random factor in `[low, high)`.
fn fastrand_between((low, high): (f64, f64)) -> f64 {
    low + fastrand::f64() * (high - low)
}

/// Remembers the version fetched for a database and logs when it changed (version ids only).
fn note_version(name: &DbName, state: &DbState, version_id: &str) {
    let mut last = state
        .last_version
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    match last.as_deref() {
        Some(previous) if previous != version_id => {
            info!(db = %name, previous_version = previous, version_id, "credentials version changed");
        }
        _ => {}
    }
    *last = Some(version_id.to_owned());
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
        fn operation(&self) -> &'static str {
            "Fake"
        }

        fn fetch<'a>(
            &'a self,
            secret_id: &'a str,
        ) -> BoxFuture<'a, Result<SecretVersion, SourceError>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                if secret_id == "missing" {
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
            secret_id: secret_id.into(),
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
            &CacheConfig {
                ttl,
                capacity: 10,
                warm: false,
                max_stale,
            },
            UpstreamConfig {
                backoff_initial: Duration::from_millis(200),
                backoff_max: Duration::from_secs(2),
            },
            Box::new(FakeSource {
                calls: Arc::clone(&calls),
                version: Arc::clone(&version),
                failing: Arc::clone(&failing),
            }),
            Metrics::new(),
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
            h.broker.refresh("nope").await,
            Err(BrokerError::UnknownDatabase)
        ));
        assert_eq!(h.calls.load(Ordering::SeqCst), 0);
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
            async move { broker.refresh("orders").await }
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
        assert_eq!(h.broker.not_ready().len(), 2);
        h.broker.get("orders").await.unwrap();
        let names: Vec<String> = h
            .broker
            .not_ready()
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
        assert_eq!(
            h.calls.load(Ordering::SeqCst),
            1,
            "a stale serve does not call upstream"
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
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
        let delays: Vec<Duration> = (1..=6).map(|n| h.broker.backoff(n)).collect();
        for pair in delays.windows(3) {
            assert!(pair[2] > pair[0], "{delays:?}");
        }
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(2)),
            "capped: {delays:?}"
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
}
