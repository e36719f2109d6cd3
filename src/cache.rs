//! The credential cache: moka with a TTL and a capacity, and single-flight fills so that any
//! number of concurrent misses for one database cause one upstream call.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use crate::credentials::{Credentials, DbName};

#[derive(Debug, Clone)]
pub(crate) struct CredentialCache {
    inner: Cache<DbName, Arc<Credentials>>,
}

impl CredentialCache {
    pub(crate) fn new(ttl: Duration, capacity: u64) -> Self {
        Self {
            inner: Cache::builder()
                .time_to_live(ttl)
                .max_capacity(capacity)
                .build(),
        }
    }

    /// The cached credentials for `db`, if present and not expired.
    pub(crate) async fn get(&self, db: &DbName) -> Option<Arc<Credentials>> {
        self.inner.get(db).await
    }

    /// The cached credentials for `db`, or the result of `fill`; concurrent callers for the same
    /// `db` wait for one `fill` and share its result (or its error).
    pub(crate) async fn get_or_fill<F, E>(
        &self,
        db: &DbName,
        fill: F,
    ) -> Result<Arc<Credentials>, Arc<E>>
    where
        F: Future<Output = Result<Arc<Credentials>, E>>,
        E: Send + Sync + 'static,
    {
        self.inner.try_get_with_by_ref(db, fill).await
    }

    /// Replaces whatever is cached for `db`.
    pub(crate) async fn insert(&self, db: DbName, credentials: Arc<Credentials>) {
        self.inner.insert(db, credentials).await;
    }
}
