//! The core: a database name in, current credentials out, through the cache and the source.
//! Nothing here knows about HTTP.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use futures_util::StreamExt;
use tracing::{debug, info, warn};

use crate::cache::CredentialCache;
use crate::config::{CacheConfig, DatabaseConfig};
use crate::credentials::{Credentials, DbName, MalformedSecret};
use crate::metrics::Metrics;
use crate::source::{Source, SourceError};

/// How many databases warm-up fetches at once.
const WARM_CONCURRENCY: usize = 8;
/// Longest pause between warm-up rounds for databases that could not be fetched yet.
const WARM_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why the broker could not return credentials.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    #[error("unknown database")]
    UnknownDatabase,
    #[error("secret source: {0}")]
    Source(#[from] SourceError),
    #[error("secret for database {db} is malformed: {reason}")]
    Malformed { db: DbName, reason: MalformedSecret },
}

/// Per-database state that lives as long as the broker.
#[derive(Debug)]
struct DbState {
    config: DatabaseConfig,
    /// Set once the credentials were fetched successfully.
    ready: AtomicBool,
    /// Serializes explicit refreshes so that concurrent ones share one upstream call.
    refresh: tokio::sync::Mutex<()>,
    /// The version id last fetched, to notice rotations.
    last_version: Mutex<Option<String>>,
}

/// Serves credentials for the configured databases.
pub struct Broker {
    dbs: HashMap<DbName, DbState>,
    cache: CredentialCache,
    source: Box<dyn Source>,
    metrics: Metrics,
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
        source: Box<dyn Source>,
        metrics: Metrics,
    ) -> Self {
        let dbs = databases
            .into_iter()
            .map(|(name, config)| {
                let state = DbState {
                    config,
                    ready: AtomicBool::new(false),
                    refresh: tokio::sync::Mutex::new(()),
                    last_version: Mutex::new(None),
                };
                (name, state)
            })
            .collect();
        Self {
            dbs,
            cache: CredentialCache::new(cache.ttl, cache.capacity),
            source,
            metrics,
        }
    }

    /// Current credentials for `db`, from the cache when fresh, else from the source.
    pub async fn get(&self, db: &str) -> Result<Arc<Credentials>, BrokerError> {
        let (name, state) = self.lookup(db)?;
        if let Some(credentials) = self.cache.get(name).await {
            self.count_lookup(name, "hit");
            return Ok(credentials);
        }
        self.count_lookup(name, "miss");
        self.fill(name, state).await
    }

    /// Fetches `db` from the source now, bypassing the cache, and caches the result. Refreshes
    /// that arrive while another one is running share its result instead of calling again.
    pub async fn refresh(&self, db: &str) -> Result<Arc<Credentials>, BrokerError> {
        let (name, state) = self.lookup(db)?;
        let arrived = Instant::now();
        let _turn = state.refresh.lock().await;
        if let Some(cached) = self.cache.get(name).await
            && cached.fetched >= arrived
        {
            debug!(db = %name, "refresh served by a fetch that finished after it arrived");
            return Ok(cached);
        }
        let credentials = self.fetch(name, state).await?;
        self.cache
            .insert(name.clone(), Arc::clone(&credentials))
            .await;
        Ok(credentials)
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

    /// Fetches every database that is not ready, in rounds with growing pauses, until all are.
    pub async fn warm(&self) {
        let mut pause = Duration::from_secs(1);
        loop {
            let pending: Vec<(&DbName, &DbState)> = self
                .not_ready()
                .into_iter()
                .filter_map(|name| self.dbs.get_key_value(name.as_str()))
                .collect();
            if pending.is_empty() {
                info!(databases = self.dbs.len(), "all databases warmed");
                return;
            }
            futures_util::stream::iter(pending)
                .for_each_concurrent(WARM_CONCURRENCY, |(name, state)| async move {
                    // Errors are logged by `fetch`; readiness records the outcome.
                    let _ = self.fill(name, state).await;
                })
                .await;
            if self.not_ready().is_empty() {
                continue;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(WARM_MAX_BACKOFF);
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

    /// Fills the cache for `name`, sharing one fetch among all concurrent callers.
    async fn fill(&self, name: &DbName, state: &DbState) -> Result<Arc<Credentials>, BrokerError> {
        self.cache
            .get_or_fill(name, self.fetch(name, state))
            .await
            .map_err(|shared| (*shared).clone())
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

/// Remembers the version fetched for a database and logs when it changed (version ids only).
fn note_version(name: &DbName, state: &DbState, version_id: &str) {
    let mut last = state
        .last_version
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
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

    /// A unit-test stand-in for a source: counts calls, answers after a short delay.
    struct CountingSource {
        calls: Arc<AtomicUsize>,
        version: Arc<Mutex<String>>,
    }

    impl Source for CountingSource {
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
                Ok(SecretVersion {
                    payload: SecretPayload::String(r#"{"username":"u","password":"p"}"#.into()),
                    version_id: self.version.lock().unwrap().clone(),
                    arn: None,
                })
            })
        }
    }

    fn broker() -> (Arc<Broker>, Arc<AtomicUsize>, Arc<Mutex<String>>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let version = Arc::new(Mutex::new("v1".to_owned()));
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
                ttl: Duration::from_mins(1),
                capacity: 10,
                warm: false,
            },
            Box::new(CountingSource {
                calls: Arc::clone(&calls),
                version: Arc::clone(&version),
            }),
            Metrics::new(),
        );
        (Arc::new(broker), calls, version)
    }

    async fn concurrently<F, Fut>(n: usize, f: F) -> Vec<Result<Arc<Credentials>, BrokerError>>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Arc<Credentials>, BrokerError>> + Send + 'static,
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
        let (broker, calls, _) = broker();
        assert!(matches!(
            broker.get("nope").await,
            Err(BrokerError::UnknownDatabase)
        ));
        assert!(matches!(
            broker.refresh("nope").await,
            Err(BrokerError::UnknownDatabase)
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn concurrent_cold_gets_share_one_fetch() {
        let (broker, calls, _) = broker();
        let results = concurrently(50, || {
            let broker = Arc::clone(&broker);
            async move { broker.get("orders").await }
        })
        .await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_refreshes_share_one_fetch_and_see_the_new_version() {
        let (broker, calls, version) = broker();
        broker.get("orders").await.unwrap();
        *version.lock().unwrap() = "v2".to_owned();
        let results = concurrently(20, || {
            let broker = Arc::clone(&broker);
            async move { broker.refresh("orders").await }
        })
        .await;
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().unwrap().version_id == "v2")
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "one warm fetch, one refresh"
        );
        assert_eq!(broker.get("orders").await.unwrap().version_id, "v2");
    }

    #[tokio::test]
    async fn readiness_lists_databases_not_fetched_yet() {
        let (broker, _, _) = broker();
        assert_eq!(broker.not_ready().len(), 2);
        broker.get("orders").await.unwrap();
        let names: Vec<String> = broker.not_ready().iter().map(ToString::to_string).collect();
        assert_eq!(names, ["gone"]);
        assert!(matches!(
            broker.get("gone").await,
            Err(BrokerError::Source(SourceError::NotFound(_)))
        ));
    }
}
