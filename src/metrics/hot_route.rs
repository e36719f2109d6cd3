//! The most frequent routes (the credentials read, the AWS agent API's reads), counted without
//! contention in per-thread shards and exported within the HTTP families.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily};
use prometheus::{HistogramVec, IntCounterVec};

use super::names::{CREDENTIALS_ROUTE, LATENCY_BUCKETS, label};

/// Shards of [`HotRoute`]: enough that the worker threads of a sidecar rarely share one.
pub(crate) const SHARDS: usize = 16;

/// The answers to [`CREDENTIALS_ROUTE`], counted in per-thread shards so that two worker
/// threads never write to the same cache line (a prometheus histogram is four atomic writes to
/// shared lines per observation). Exported, summed, as the route's series of
/// `http_request_duration_seconds` and as `http_requests_total{method="GET",status="200"}`.
#[derive(Debug)]
pub(crate) struct HotRoute {
    shards: Box<[Shard]>,
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    /// `GET` requests answered `200`.
    ok: AtomicU64,
    /// Observations per latency bucket: at most its bound, above the bound before it.
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Default for HotRoute {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

impl HotRoute {
    /// Records one answer that took `elapsed`; `ok` for a `200` to a `GET`.
    pub(crate) fn record(&self, elapsed: Duration, ok: bool) {
        let shard = &self.shards[shard_index()];
        if ok {
            shard.ok.fetch_add(1, Ordering::Relaxed);
        }
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = LATENCY_BUCKETS.iter().position(|bound| seconds <= *bound) {
            shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        shard.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        shard.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The `200` count and the latency histogram, summed over the shards.
    fn totals(&self) -> (u64, proto::Histogram) {
        let sum = |field: fn(&Shard) -> &AtomicU64| -> u64 {
            self.shards
                .iter()
                .map(|shard| field(shard).load(Ordering::Relaxed))
                .sum()
        };
        let mut histogram = proto::Histogram::default();
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len());
        for (index, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self
                .shards
                .iter()
                .map(|shard| shard.buckets[index].load(Ordering::Relaxed))
                .sum::<u64>();
            let mut bucket = proto::Bucket::default();
            bucket.set_upper_bound(*bound);
            bucket.set_cumulative_count(cumulative);
            buckets.push(bucket);
        }
        histogram.set_bucket(buckets);
        histogram.set_sample_count(sum(|shard| &shard.count));
        #[allow(clippy::cast_precision_loss)] // nanoseconds: exact below 104 days in total
        histogram.set_sample_sum(sum(|shard| &shard.sum_nanos) as f64 / 1e9);
        (sum(|shard| &shard.ok), histogram)
    }
}

/// This thread's shard (of [`HotRoute`], of the audit buffers), below [`SHARDS`], assigned
/// round robin on first use: threads serving requests on different cores write to different
/// cache lines.
pub(crate) fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|index| *index)
}

/// A hot route other than [`CREDENTIALS_ROUTE`], with its template.
pub(super) type NamedHotRoute = (String, Arc<HotRoute>);

/// `http_requests_total` and `http_request_duration_seconds`: the prometheus vectors, with the
/// [`HotRoute`] series added at scrape time: [`CREDENTIALS_ROUTE`]'s, and those of the other
/// frequent routes registered since (the AWS agent API's).
#[derive(Debug, Clone)]
pub(super) struct HttpCollector {
    pub(super) requests: IntCounterVec,
    pub(super) duration: HistogramVec,
    pub(super) hot: Arc<HotRoute>,
    pub(super) more: Arc<Mutex<Vec<NamedHotRoute>>>,
}

impl HttpCollector {
    /// The hot route of `template`, registered on first use.
    pub(super) fn hot_route(&self, template: &str) -> Arc<HotRoute> {
        let mut more = self.more.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, hot)) = more.iter().find(|(route, _)| route == template) {
            return Arc::clone(hot);
        }
        let hot = Arc::new(HotRoute::default());
        more.push((template.to_owned(), Arc::clone(&hot)));
        hot
    }
}

impl Collector for HttpCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.requests.desc();
        descs.extend(self.duration.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut requests = self.requests.collect();
        let mut duration = self.duration.collect();
        let more = self.more.lock().unwrap_or_else(PoisonError::into_inner);
        let hot = std::iter::once((CREDENTIALS_ROUTE, &self.hot))
            .chain(more.iter().map(|(route, hot)| (route.as_str(), hot)));
        for (route, hot) in hot {
            let (ok, histogram) = hot.totals();
            if ok > 0 {
                let mut counter = proto::Counter::default();
                #[allow(clippy::cast_precision_loss)] // exact below 2^53 requests
                counter.set_value(ok as f64);
                let mut metric = proto::Metric::from_label(vec![
                    label("method", "GET"),
                    label("route", route),
                    label("status", "200"),
                ]);
                metric.set_counter(counter);
                requests[0].mut_metric().push(metric);
            }
            if histogram.get_sample_count() > 0 {
                let mut metric = proto::Metric::from_label(vec![label("route", route)]);
                metric.set_histogram(histogram);
                duration[0].mut_metric().push(metric);
            }
        }
        drop(more);
        requests.extend(duration);
        requests
    }
}
