//! Per-database event counters as plain atomics, turned into series only when `/metrics` is
//! scraped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

use super::names::{
    CACHE_LOOKUPS_TOTAL, CREDENTIAL_ROTATIONS_TOTAL, CREDENTIALS_EXPIRED_TOTAL,
    DATABASE_DELETED_TOTAL, MALFORMED_SECRET_TOTAL, STALE_SERVED_TOTAL, label,
};
use crate::credentials::DbName;

/// Event counters of one database, as plain atomics: with a thousand databases, prometheus
/// child series (each holding its own copy of the metric's descriptor) would cost about 5 KB per
/// database; these cost 56 bytes and are turned into series only when `/metrics` is scraped.
/// Every database's counters are exported from the start, at 0 until something happens, so
/// that `increase()` sees the first event.
#[derive(Debug, Default)]
pub(crate) struct DbCounters {
    pub(crate) hits: AtomicU64,
    pub(crate) stale_lookups: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) stale_served: AtomicU64,
    pub(crate) rotations: AtomicU64,
    pub(crate) deleted: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) malformed: AtomicU64,
}

impl DbCounters {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One series of every database, exported from [`DbCounters`].
struct DbSeries {
    name: &'static str,
    help: &'static str,
    /// A second label and its value, besides `db`.
    extra: Option<(&'static str, &'static str)>,
    counter: fn(&DbCounters) -> &AtomicU64,
}

const DB_COUNTER_SERIES: &[DbSeries] = &[
    DbSeries {
        name: CACHE_LOOKUPS_TOTAL,
        help: LOOKUPS_HELP,
        extra: Some(("result", "hit")),
        counter: |c| &c.hits,
    },
    DbSeries {
        name: CACHE_LOOKUPS_TOTAL,
        help: LOOKUPS_HELP,
        extra: Some(("result", "stale")),
        counter: |c| &c.stale_lookups,
    },
    DbSeries {
        name: CACHE_LOOKUPS_TOTAL,
        help: LOOKUPS_HELP,
        extra: Some(("result", "miss")),
        counter: |c| &c.misses,
    },
    DbSeries {
        name: STALE_SERVED_TOTAL,
        help: "Responses that served credentials past their TTL because the source failed.",
        extra: None,
        counter: |c| &c.stale_served,
    },
    DbSeries {
        name: CREDENTIAL_ROTATIONS_TOTAL,
        help: "Version changes of a database's credentials observed by the broker.",
        extra: None,
        counter: |c| &c.rotations,
    },
    DbSeries {
        name: DATABASE_DELETED_TOTAL,
        help: "Times the broker found a database's RDS instance or cluster deleted.",
        extra: None,
        counter: |c| &c.deleted,
    },
    DbSeries {
        name: CREDENTIALS_EXPIRED_TOTAL,
        help: "Requests answered 503 credentials_expired: the source failed past max_stale.",
        extra: None,
        counter: |c| &c.expired,
    },
    DbSeries {
        name: MALFORMED_SECRET_TOTAL,
        help: "Fetches whose secret value was not usable credentials; the last good ones stayed served, marked stale.",
        extra: None,
        counter: |c| &c.malformed,
    },
];

const LOOKUPS_HELP: &str = "Credential cache lookups by database and result (hit, stale, miss).";

#[derive(Debug)]
pub(super) struct DbCountersCollector {
    descs: Vec<Desc>,
    dbs: Vec<(DbName, Arc<DbCounters>)>,
}

impl DbCountersCollector {
    pub(super) fn new(dbs: Vec<(DbName, Arc<DbCounters>)>) -> Self {
        let mut descs: Vec<Desc> = Vec::new();
        for series in DB_COUNTER_SERIES {
            if descs.iter().all(|d| d.fq_name != series.name) {
                let mut labels = vec!["db".to_owned()];
                labels.extend(series.extra.map(|(label, _)| label.to_owned()));
                descs.push(
                    Desc::new(
                        series.name.to_owned(),
                        series.help.to_owned(),
                        labels,
                        HashMap::new(),
                    )
                    .expect("valid metric"),
                );
            }
        }
        Self { descs, dbs }
    }
}

impl Collector for DbCountersCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families: Vec<MetricFamily> = Vec::new();
        for series in DB_COUNTER_SERIES {
            let index = families
                .iter()
                .position(|f| f.name() == series.name)
                .unwrap_or_else(|| {
                    let mut family = MetricFamily::default();
                    family.set_name(series.name.to_owned());
                    family.set_help(series.help.to_owned());
                    family.set_field_type(MetricType::COUNTER);
                    families.push(family);
                    families.len() - 1
                });
            let mut metrics = families[index].take_metric();
            for (db, counters) in &self.dbs {
                let mut labels = vec![label("db", db.as_str())];
                labels.extend(series.extra.map(|(k, v)| label(k, v)));
                let mut counter = proto::Counter::default();
                #[allow(clippy::cast_precision_loss)] // exact below 2^53 events
                counter.set_value((series.counter)(counters).load(Ordering::Relaxed) as f64);
                let mut metric = proto::Metric::from_label(labels);
                metric.set_counter(counter);
                metrics.push(metric);
            }
            families[index].set_metric(metrics);
        }
        families
    }
}
