//! Secrets by id for the AWS agent's API: any secret and version the caller names, cached per
//! (secret, version) with the broker's own behaviour: one flight per key, backoff after
//! failures, a refresh in the background ahead of the TTL, and the last value served stale
//! within the allowance while the source fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::Mutex;
use tracing::{debug, warn};

use super::error::SecretError;
use super::flight::random_between;
use super::secret_cache::{Entry, SecretFlight, SecretKey, SecretStore, ServedSecret};
use super::serve::Broker;
use crate::credentials::StoredVersion;
use crate::source::Call;

/// Background refresh of a used entry starts between these fractions of the TTL.
const REFRESH_AHEAD: (f64, f64) = (0.80, 0.90);

impl Broker {
    /// The secret version `key` names, for the AWS agent's API: from the cache while fresh
    /// (starting a background refresh once it is due), else from the source through the key's
    /// flight; while the source fails, the last value within the stale allowance. With
    /// `refresh_now`, the source is asked (no sooner than the refresh minimum interval after
    /// the last fetch), and a failure is returned as it is (the cached value stays).
    pub async fn get_secret(
        self: &Arc<Self>,
        key: &SecretKey,
        refresh_now: bool,
    ) -> Result<ServedSecret, SecretError> {
        let store = self.secret_store();
        let arrived = Instant::now();
        if !refresh_now {
            if let Some(served) = self.cached_secret(key) {
                return Ok(served);
            }
        } else if let Some(entry) = store.entries.get(key) {
            let allowed_at = entry.fetched + store.settings.refresh_min_interval;
            if arrived < allowed_at {
                // Never the value the caller may already hold: wait for the interval's end,
                // and share one fetch with everyone who waited.
                debug!("refreshNow waits for the minimum interval since the last fetch");
                tokio::time::sleep_until(allowed_at.into()).await;
            }
        }
        let result = self.fetch_secret(key, arrived).await;
        match result {
            Ok(entry) => {
                let lookups = &store.lookups;
                if refresh_now {
                    &lookups.refresh
                } else {
                    &lookups.miss
                }
                .inc();
                Ok(entry.served(Instant::now(), false))
            }
            Err(err) if err.is_outage() && !refresh_now => {
                let now = Instant::now();
                match store.cached(key, now) {
                    Some((entry, stale)) => {
                        debug!(error = %err, stale, "the source fails; serving the last value");
                        if stale {
                            store.lookups.stale.inc();
                        }
                        Ok(entry.served(now, stale))
                    }
                    None => Err(err),
                }
            }
            Err(err) => Err(err),
        }
    }

    /// The value of `key` when the cache has it fresh, for the AWS agent's API, without
    /// waiting: starts the background refresh of the entry once it is due. `None` when the
    /// source has to be asked (or the value is past its TTL).
    pub fn cached_secret(self: &Arc<Self>, key: &SecretKey) -> Option<ServedSecret> {
        let store = self.secret_store();
        let now = Instant::now();
        let entry = store.entries.get(key)?;
        if now.saturating_duration_since(entry.fetched) >= store.settings.ttl {
            return None;
        }
        if now >= entry.refresh_at && !entry.refreshing.swap(true, Ordering::AcqRel) {
            let (broker, key) = (Arc::clone(self), key.clone());
            tokio::spawn(async move {
                let _ = broker.fetch_secret(&key, Instant::now()).await;
            });
        }
        store.lookups.hit.inc();
        Some(entry.served(now, false))
    }

    /// The one way to call the source for `key`: callers queue on its flight; whoever finds an
    /// attempt that finished after it arrived takes that result; during a backoff delay the
    /// last error is returned without a call. A refusal drops the cached value (a deleted
    /// secret is no longer served).
    async fn fetch_secret(
        &self,
        key: &SecretKey,
        arrived: Instant,
    ) -> Result<Arc<Entry>, SecretError> {
        let store = self.secret_store();
        let flight = store
            .flights
            .get_with_by_ref(key, || Arc::new(Mutex::new(SecretFlight::default())));
        let mut flight = flight.lock().await;
        let taken = flight
            .finished_since(arrived)
            .or_else(|| flight.backing_off(Instant::now()).map(Err));
        if let Some(result) = taken {
            return result;
        }
        let source = &self.upstream.sources.own.secrets;
        let result = self
            .upstream
            .observe(
                source.operation(Call::Read),
                source.read_stored(&key.secret_id, &key.selector),
            )
            .await
            .map_err(SecretError::from);
        let now = Instant::now();
        let result = match result {
            Ok(secret) => {
                flight.succeeded();
                let entry = Arc::new(Entry {
                    secret: Arc::new(StoredVersion::from(secret)),
                    fetched: now,
                    refresh_at: now + store.settings.ttl.mul_f64(random_between(REFRESH_AHEAD)),
                    refreshing: AtomicBool::new(false),
                });
                store.entries.insert(key.clone(), Arc::clone(&entry));
                Ok(entry)
            }
            Err(err) => {
                if matches!(err, SecretError::Refused(_)) {
                    store.entries.invalidate(key);
                } else {
                    warn!(error = %err, "reading a secret for the AWS agent's API failed");
                }
                flight.failed(now, &self.backoff);
                Err(err)
            }
        };
        flight.last = Some((now, result.clone()));
        result
    }

    fn secret_store(&self) -> &SecretStore {
        self.secrets
            .as_ref()
            .expect("the agent's API is served only when its store is configured")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::broker::StoreSettings;
    use crate::broker::testing::{PASSWORD, TestBroker};
    use crate::config::UpstreamConfig;
    use crate::credentials::VersionSelector;
    use crate::source::stand_in::Controls;

    fn store(ttl: Duration, max_stale: Duration) -> (Arc<Broker>, Arc<Controls>) {
        TestBroker {
            upstream: UpstreamConfig {
                backoff_initial: Duration::from_millis(300),
                backoff_max: Duration::from_secs(2),
            },
            agent: Some(StoreSettings {
                ttl,
                max_stale,
                capacity: 100,
                refresh_min_interval: Duration::from_millis(100),
            }),
            ..TestBroker::default()
        }
        .build()
    }

    fn key(secret_id: &str) -> SecretKey {
        SecretKey {
            secret_id: secret_id.to_owned(),
            selector: VersionSelector::default(),
        }
    }

    #[tokio::test]
    async fn a_used_entry_is_refreshed_in_the_background_before_its_ttl_ends() {
        let (broker, source) = store(Duration::from_millis(300), Duration::ZERO);
        broker.get_secret(&key("good"), false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(280)).await;
        let hit = broker.get_secret(&key("good"), false).await.unwrap();
        assert!(!hit.stale && hit.age >= Duration::from_millis(270));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(source.calls(), 2, "one fetch, then one refresh ahead");
        let after = broker.get_secret(&key("good"), false).await.unwrap();
        assert!(after.age < Duration::from_millis(150), "{:?}", after.age);
        assert_eq!(source.calls(), 2, "served from the refreshed entry");
    }

    #[tokio::test]
    async fn an_outage_serves_the_last_value_stale_within_the_allowance_then_fails() {
        let (broker, source) = store(Duration::from_millis(100), Duration::from_millis(300));
        let fresh = broker.get_secret(&key("good"), false).await.unwrap();
        assert!(String::from_utf8_lossy(fresh.secret.agent_json()).contains(PASSWORD));
        source.set_failing(true);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let stale = broker.get_secret(&key("good"), false).await.unwrap();
        assert!(stale.stale);
        // Within the backoff delay no call is made: the last error is shared.
        let calls = source.calls();
        let again = broker.get_secret(&key("good"), false).await.unwrap();
        assert!(again.stale);
        assert_eq!(source.calls(), calls);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(matches!(
            broker.get_secret(&key("good"), false).await,
            Err(SecretError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn refresh_now_returns_a_failure_as_it_is_and_keeps_the_cached_value() {
        let (broker, source) = store(Duration::from_mins(1), Duration::from_mins(1));
        broker.get_secret(&key("good"), false).await.unwrap();
        source.set_failing(true);
        assert!(matches!(
            broker.get_secret(&key("good"), true).await,
            Err(SecretError::Unavailable(_))
        ));
        let cached = broker.get_secret(&key("good"), false).await.unwrap();
        assert!(!cached.stale);
    }

    #[tokio::test]
    async fn refresh_now_waits_for_the_minimum_interval_and_concurrent_ones_share_a_call() {
        let (broker, source) = store(Duration::from_mins(1), Duration::from_mins(1));
        broker.get_secret(&key("good"), false).await.unwrap();
        source.set_version("v2");
        let started = Instant::now();
        let refreshes: Vec<_> = (0..20)
            .map(|_| {
                let broker = Arc::clone(&broker);
                tokio::spawn(async move { broker.get_secret(&key("good"), true).await })
            })
            .collect();
        for refresh in refreshes {
            let served = refresh.await.unwrap().unwrap();
            assert_eq!(served.secret.secret.version_id, "v2");
        }
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(90), "{waited:?}");
        assert_eq!(
            source.calls(),
            2,
            "one fetch, then one refresh for all twenty"
        );
        // One more, right after: it waits for the interval again rather than call at once.
        let started = Instant::now();
        broker.get_secret(&key("good"), true).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(90));
        assert_eq!(source.calls(), 3);
    }

    #[tokio::test]
    async fn a_refusal_is_passed_on_with_the_stores_code() {
        let (broker, _) = store(Duration::from_mins(1), Duration::from_mins(1));
        match broker.get_secret(&key("no-such-secret"), false).await {
            Err(SecretError::Refused(refusal)) => {
                assert_eq!(refusal.code(), "ResourceNotFoundException");
            }
            other => panic!("{other:?}"),
        }
        let pending = SecretKey {
            secret_id: "good".to_owned(),
            selector: VersionSelector {
                version_id: Some("v0".to_owned()),
                version_stage: None,
            },
        };
        assert!(matches!(
            broker.get_secret(&pending, false).await,
            Err(SecretError::Refused(_))
        ));
    }
}
