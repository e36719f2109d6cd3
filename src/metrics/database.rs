//! The per-database handle: one database's event counters and gauges, each gauge resolved from
//! its family once, the first time it is set (a database that never rotates exports no rotation
//! series), so the broker never looks a series up by label.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{Gauge, GaugeVec, IntGauge, IntGaugeVec};

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
    backoff: OnceLock<Gauge>,
    failures: OnceLock<IntGauge>,
    last_fetch: OnceLock<Gauge>,
    rotation_enabled: OnceLock<IntGauge>,
    last_rotated: OnceLock<Gauge>,
    next_rotation: OnceLock<Gauge>,
    /// One gauge per value of [`SECRET_STATUSES`], in that order.
    secret_status: OnceLock<Vec<IntGauge>>,
}

impl DbMetrics {
    pub(crate) fn new(metrics: &Metrics, db: DbName) -> Self {
        Self {
            db,
            metrics: metrics.clone(),
            counters: Arc::default(),
            backoff: OnceLock::new(),
            failures: OnceLock::new(),
            last_fetch: OnceLock::new(),
            rotation_enabled: OnceLock::new(),
            last_rotated: OnceLock::new(),
            next_rotation: OnceLock::new(),
            secret_status: OnceLock::new(),
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
        self.gauge(&self.backoff, &self.metrics.upstream_backoff)
            .set(seconds);
        self.int_gauge(&self.failures, &self.metrics.upstream_failures)
            .set(i64::from(failures));
    }

    pub(crate) fn set_last_fetch(&self, at: SystemTime) {
        self.gauge(&self.last_fetch, &self.metrics.last_fetch)
            .set(unix_seconds(at));
    }

    /// What the source says of rotation; a date it does not give leaves its series as it was.
    pub(crate) fn set_rotation(
        &self,
        enabled: bool,
        last_rotated: Option<SystemTime>,
        next_rotation: Option<SystemTime>,
    ) {
        self.int_gauge(&self.rotation_enabled, &self.metrics.rotation_enabled)
            .set(i64::from(enabled));
        if let Some(at) = last_rotated {
            self.gauge(&self.last_rotated, &self.metrics.last_rotated)
                .set(unix_seconds(at));
        }
        if let Some(at) = next_rotation {
            self.gauge(&self.next_rotation, &self.metrics.next_rotation)
                .set(unix_seconds(at));
        }
    }

    /// 1 for `current` among the RDS secret statuses, 0 for the others.
    pub(crate) fn set_secret_status(&self, current: Option<&str>) {
        let gauges = self.secret_status.get_or_init(|| {
            SECRET_STATUSES
                .iter()
                .map(|status| {
                    self.metrics
                        .secret_status
                        .with_label_values(&[self.db.as_str(), status])
                })
                .collect()
        });
        for (status, gauge) in SECRET_STATUSES.iter().zip(gauges) {
            gauge.set(i64::from(current == Some(*status)));
        }
    }

    fn gauge<'a>(&self, slot: &'a OnceLock<Gauge>, family: &GaugeVec) -> &'a Gauge {
        slot.get_or_init(|| family.with_label_values(&[self.db.as_str()]))
    }

    fn int_gauge<'a>(&self, slot: &'a OnceLock<IntGauge>, family: &IntGaugeVec) -> &'a IntGauge {
        slot.get_or_init(|| family.with_label_values(&[self.db.as_str()]))
    }
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}
