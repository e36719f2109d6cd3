//! What the broker keeps per configured database for as long as it runs: readiness, the flight,
//! the background schedule, the last version and topology seen, and the metric series.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;
use tracing::{info, warn};

use super::flight::Flight;
use crate::config::DatabaseConfig;
use crate::credentials::{Credentials, DbName};
use crate::metrics::{DbMetrics, Metrics};
use crate::source::Topology;

/// Per-database state that lives as long as the broker.
#[derive(Debug)]
pub(super) struct DbState {
    pub(super) name: DbName,
    pub(super) config: DatabaseConfig,
    /// Set once the credentials were fetched successfully.
    pub(super) ready: AtomicBool,
    /// Held for the duration of each upstream call: at most one per database.
    pub(super) flight: tokio::sync::Mutex<Flight>,
    /// When the background task should fetch next (refresh-ahead or retry after backoff).
    pub(super) next_fetch: Mutex<Option<Instant>>,
    /// Wakes the background task when `next_fetch` is first set, or set to now.
    pub(super) wake: Notify,
    /// Set while stale credentials are served, so that each outage is logged once.
    pub(super) serving_stale: AtomicBool,
    /// The version id last fetched, to notice rotations.
    last_version: Mutex<Option<String>>,
    /// The resolved RDS topology and when it was resolved.
    pub(super) topology: Mutex<Option<(Instant, Arc<Topology>)>>,
    /// The source saw a pending version: fetch it with the next fetch.
    pub(super) pending_hint: AtomicBool,
    /// The last fetch found a value that is not credentials: the last good credentials are
    /// served, marked stale, until a fetch succeeds again (or they expire).
    pub(super) rejected: AtomicBool,
    /// This database's metric series.
    pub(super) metrics: DbMetrics,
    /// What its watchers (long polls, event streams) were last told.
    pub(super) published: tokio::sync::watch::Sender<Published>,
    /// Until when rotation checks run at the watch interval whatever the schedule (after a
    /// refresh request).
    watch_until: Mutex<Option<Instant>>,
    /// The last and next rotation the source told, for the operator's view.
    pub(super) rotation_dates: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
    /// Fetches failed in a row.
    pub(super) failures: AtomicU32,
}

impl DbState {
    /// A database not fetched yet; `warm` schedules its first fetch now.
    pub(super) fn new(name: DbName, config: DatabaseConfig, warm: bool, metrics: &Metrics) -> Self {
        Self {
            metrics: DbMetrics::new(metrics, name.clone()),
            name,
            config,
            ready: AtomicBool::new(false),
            flight: tokio::sync::Mutex::new(Flight::default()),
            next_fetch: Mutex::new(warm.then(Instant::now)),
            wake: Notify::new(),
            serving_stale: AtomicBool::new(false),
            last_version: Mutex::new(None),
            topology: Mutex::new(None),
            pending_hint: AtomicBool::new(false),
            rejected: AtomicBool::new(false),
            published: tokio::sync::watch::Sender::new(Published::Nothing),
            watch_until: Mutex::new(None),
            rotation_dates: Mutex::new((None, None)),
            failures: AtomicU32::new(0),
        }
    }

    pub(super) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub(super) fn is_rejected(&self) -> bool {
        self.rejected.load(Ordering::Acquire)
    }

    /// The topology last resolved, however old.
    pub(super) fn last_topology(&self) -> Option<Arc<Topology>> {
        self.lock_topology().as_ref().map(|(_, t)| Arc::clone(t))
    }

    pub(super) fn lock_topology(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<(Instant, Arc<Topology>)>> {
        self.topology.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn lock_next_fetch(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.next_fetch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Has rotation checks run at the watch interval for `span` from now, and wakes the
    /// background task to reschedule.
    pub(super) fn watch_for(&self, span: Duration) {
        let until = Instant::now() + span;
        *self
            .watch_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(until);
        self.wake.notify_one();
    }

    /// Whether [`watch_for`](Self::watch_for) still holds.
    pub(super) fn is_watched(&self) -> bool {
        self.watch_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|until| Instant::now() < until)
    }

    /// Whether `version_id` is the version last fetched.
    pub(super) fn is_last_version(&self, version_id: &str) -> bool {
        self.last_version
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_deref()
            == Some(version_id)
    }

    /// Remembers the version fetched; a change is a rotation, counted and logged (version ids
    /// only).
    pub(super) fn note_version(&self, version_id: &str) {
        let mut last = self
            .last_version
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(previous) = last.as_deref()
            && previous != version_id
        {
            info!(db = %self.name, previous_version = previous, version_id, "credentials version changed");
            self.metrics.count(|c| &c.rotations);
        }
        *last = Some(version_id.to_owned());
    }

    /// Counts a stale answer; the first of an outage is logged.
    pub(super) fn note_stale(&self, age: Duration) {
        self.metrics.count(|c| &c.stale_served);
        if !self.serving_stale.swap(true, Ordering::AcqRel) {
            warn!(db = %self.name, age_seconds = age.as_secs(), "serving stale credentials: the secret source is failing");
        }
    }
}

impl DbState {
    /// Tells the watchers of a fetch's credentials, when their version or pending version is
    /// new to them.
    pub(super) fn publish(&self, credentials: &Credentials) {
        self.published.send_if_modified(|published| {
            if matches!(published, Published::Version(v) if v.same_versions(credentials)) {
                return false;
            }
            *published = Published::Version(VersionInfo::of(credentials));
            true
        });
    }

    /// Tells the watchers that the database's secret is gone.
    pub(super) fn publish_deleted(&self) {
        self.published.send_if_modified(|published| {
            let changed = *published != Published::Deleted;
            *published = Published::Deleted;
            changed
        });
    }
}

/// What a database last published to its watchers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum Published {
    /// Nothing fetched yet.
    #[default]
    Nothing,
    Version(VersionInfo),
    /// The secret or the RDS database is gone; nothing is served.
    Deleted,
}

/// A version as watchers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub version_id: String,
    /// The pending version of a rotation under way, if one was read.
    pub pending_version_id: Option<String>,
    pub fetched_at: SystemTime,
}

impl VersionInfo {
    /// The versions of `credentials`, without their secrets.
    pub fn of(credentials: &Credentials) -> Self {
        Self {
            version_id: credentials.version_id.clone(),
            pending_version_id: credentials.pending.as_ref().map(|p| p.version_id.clone()),
            fetched_at: credentials.fetched_at,
        }
    }

    fn same_versions(&self, credentials: &Credentials) -> bool {
        self.version_id == credentials.version_id
            && self.pending_version_id.as_deref()
                == credentials.pending.as_ref().map(|p| p.version_id.as_str())
    }
}
