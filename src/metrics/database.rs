//! The per-database handle: one database's event counters, and its gauges looked up by its name
//! when set (a database that never rotates exports no rotation series). Gauges are set by
//! background fetches only, so the lookup costs nothing on the request path, and the handle
//! stays three pointers however many series a database has.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{GaugeVec, IntGaugeVec};

use super::db_counters::DbCounters;
use super::registry::Metrics;
use crate::credentials::{DbName, SECRET_STATUSES};

/// One database's metric series.
#[derive(Debug)]
pub(crate) struct DbMetrics {
    db: DbName,
    metrics: Metrics,
    /// Exported at scrape time; see [`DbCounters`].
    counters: Arc<DbCounters>,
}

impl DbMetrics {
    pub(crate) fn new(metrics: &Metrics, db: DbName) -> Self {
        Self {
            db,
            metrics: metrics.clone(),
            counters: Arc::default(),
        }
    }

    /// The event counters, for registering them with the registry.
    pub(crate) fn counters(&self) -> &Arc<DbCounters> {
        &self.counters
    }

    /// Counts one event (a hit, a rotation, ...).
    pub(crate) fn count(&self, event: fn(&DbCounters) -> &AtomicU64) {
        DbCounters::inc(event(&self.counters));
    }

    /// The delay before the next attempt and the consecutive failures.
    pub(crate) fn set_backoff(&self, seconds: f64, failures: u32) {
        self.set(&self.metrics.upstream_backoff, seconds);
        self.set_int(&self.metrics.upstream_failures, i64::from(failures));
    }

    pub(crate) fn set_last_fetch(&self, at: SystemTime) {
        self.set(&self.metrics.last_fetch, unix_seconds(at));
    }

    /// What the source says of rotation; a date it does not give leaves its series as it was.
    pub(crate) fn set_rotation(
        &self,
        enabled: bool,
        last_rotated: Option<SystemTime>,
        next_rotation: Option<SystemTime>,
    ) {
        self.set_int(&self.metrics.rotation_enabled, i64::from(enabled));
        if let Some(at) = last_rotated {
            self.set(&self.metrics.last_rotated, unix_seconds(at));
        }
        if let Some(at) = next_rotation {
            self.set(&self.metrics.next_rotation, unix_seconds(at));
        }
    }

    /// A rotation seen `seconds` after it happened.
    pub(crate) fn observe_detection(&self, seconds: f64) {
        self.metrics.rotation_detection.observe(seconds);
    }

    /// 1 for `current` among the RDS secret statuses, 0 for the others.
    pub(crate) fn set_secret_status(&self, current: Option<&str>) {
        for status in SECRET_STATUSES {
            self.metrics
                .secret_status
                .with_label_values(&[self.db.as_str(), status])
                .set(i64::from(current == Some(status)));
        }
    }

    fn set(&self, family: &GaugeVec, value: f64) {
        family.with_label_values(&[self.db.as_str()]).set(value);
    }

    fn set_int(&self, family: &IntGaugeVec, value: i64) {
        family.with_label_values(&[self.db.as_str()]).set(value);
    }
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}
