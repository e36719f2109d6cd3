//! The credential cache: moka with a lifetime (the TTL plus the stale allowance) and a capacity.
//! Freshness, single-flight and backoff are decided by the broker, which owns the fill path, so
//! the cache is moka's synchronous one: a cache hit is answered without a future.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use crate::credentials::{Credentials, DbName};

#[derive(Debug, Clone)]
pub(crate) struct CredentialCache {
    inner: Cache<DbName, Arc<Credentials>, foldhash::fast::RandomState>,
}

impl CredentialCache {
    /// A cache that drops entries `lifetime` after they were inserted.
    pub(crate) fn new(lifetime: Duration, capacity: u64) -> Self {
        Self {
            inner: Cache::builder()
                .time_to_live(lifetime)
                .max_capacity(capacity)
                .build_with_hasher(foldhash::fast::RandomState::default()),
        }
    }

    /// The cached credentials for `db`, if present and within their lifetime.
    pub(crate) fn get(&self, db: &DbName) -> Option<Arc<Credentials>> {
        self.inner.get(db)
    }

    /// Drops whatever is cached for `db`.
    pub(crate) fn invalidate(&self, db: &DbName) {
        self.inner.invalidate(db);
    }

    /// Replaces whatever is cached for `db`.
    pub(crate) fn insert(&self, db: DbName, credentials: Arc<Credentials>) {
        self.inner.insert(db, credentials);
    }
}
