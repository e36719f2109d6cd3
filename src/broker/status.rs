//! The operator's view of each database (`GET /status`, `credential-broker status`): its state,
//! version, age, rotation dates and failures, and nothing of its credentials.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use super::serve::Broker;
use super::state::{DbState, Published};
use crate::credentials::{Auth, DbName};

/// Where a database stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbCondition {
    /// Served within its TTL.
    Fresh,
    /// Served past its TTL, within the stale allowance: the source is failing.
    Stale,
    /// Fetched once, but nothing servable is left: requests fail until the source answers.
    Expired,
    /// Never fetched yet.
    NotFetched,
    /// The secret or the RDS database is gone: nothing is served.
    Deleted,
}

impl DbCondition {
    /// The word `GET /status` and the `status` command use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fresh => "fresh",
            Self::Stale => "stale",
            Self::Expired => "expired",
            Self::NotFetched => "not_fetched",
            Self::Deleted => "deleted",
        }
    }
}

/// One database as the operator sees it.
#[derive(Debug, Clone)]
pub struct DbStatus {
    pub db: DbName,
    pub condition: DbCondition,
    /// The version served (or last served), if any.
    pub version_id: Option<String>,
    pub fetched_at: Option<SystemTime>,
    /// How old the version served is.
    pub age: Option<Duration>,
    pub auth: Option<Auth>,
    pub region: Option<String>,
    /// When an IAM token expires.
    pub expires_at: Option<SystemTime>,
    /// `MasterUserSecret.SecretStatus` of an RDS database.
    pub secret_status: Option<String>,
    pub last_rotated: Option<SystemTime>,
    pub next_rotation: Option<SystemTime>,
    /// Fetches failed in a row, and when the next attempt is due while they fail.
    pub consecutive_failures: u32,
    pub next_retry: Option<SystemTime>,
}

impl Broker {
    /// Every database's status, sorted by name.
    pub fn status(&self) -> Vec<DbStatus> {
        let mut all: Vec<DbStatus> = self
            .dbs
            .values()
            .map(|state| self.status_of(state))
            .collect();
        all.sort_by(|a, b| a.db.cmp(&b.db));
        all
    }

    fn status_of(&self, state: &DbState) -> DbStatus {
        let now = Instant::now();
        let cached = self.cache.get(&state.name);
        // What the watchers were last told: a deletion, or the version last served.
        let (deleted, published) = match &*state.published.borrow() {
            Published::Deleted => (true, None),
            Published::Version(info) => (false, Some(info.clone())),
            Published::Nothing => (false, None),
        };
        let condition = match &cached {
            _ if deleted => DbCondition::Deleted,
            Some(c) => {
                let (ttl, servable) = self.lifetime(c);
                let age = now.saturating_duration_since(c.fetched);
                if age < ttl && !state.is_rejected() {
                    DbCondition::Fresh
                } else if age < servable {
                    DbCondition::Stale
                } else {
                    DbCondition::Expired
                }
            }
            None if state.is_ready() => DbCondition::Expired,
            None => DbCondition::NotFetched,
        };
        let (last_rotated, next_rotation) = *state
            .rotation_dates
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let failures = state.failures.load(Ordering::Acquire);
        let next_retry = (failures > 0)
            .then(|| *state.lock_next_fetch())
            .flatten()
            .map(|at| SystemTime::now() + at.saturating_duration_since(now));
        DbStatus {
            db: state.name.clone(),
            condition,
            version_id: cached
                .as_ref()
                .map(|c| c.version_id.clone())
                .or_else(|| published.as_ref().map(|p| p.version_id.clone())),
            fetched_at: cached
                .as_ref()
                .map(|c| c.fetched_at)
                .or_else(|| published.map(|p| p.fetched_at)),
            age: cached
                .as_ref()
                .map(|c| now.saturating_duration_since(c.fetched)),
            auth: cached.as_ref().map(|c| c.auth),
            region: cached.as_ref().and_then(|c| c.region.clone()),
            expires_at: cached.as_ref().and_then(|c| c.expires_at),
            secret_status: state.last_topology().and_then(|t| t.secret_status.clone()),
            last_rotated,
            next_rotation,
            consecutive_failures: failures,
            next_retry,
        }
    }
}
