//! The Prometheus registry and every metric the broker exports: the names in one place, the
//! families registered once, the hot read route counted without contention, and a handle per
//! database that holds its series.

mod database;
mod db_counters;
mod hot_route;
mod names;
mod registry;

pub(crate) use database::DbMetrics;
pub(crate) use hot_route::{HotRoute, SHARDS, shard_index};
pub use names::*;
pub use registry::{MetricSet, Metrics};

/// Asserts that the `/metrics` page `text` has every line of `series`, and exactly one
/// `# TYPE` line for the `family` it names.
#[cfg(test)]
pub(crate) fn assert_series(text: &str, family: &str, series: &[impl AsRef<str>]) {
    for line in series {
        let line = line.as_ref();
        assert!(text.contains(line), "{line} in {text}");
    }
    assert_eq!(
        text.matches(&format!("# TYPE {family} ")).count(),
        1,
        "{text}"
    );
}

#[cfg(test)]
mod tests;
