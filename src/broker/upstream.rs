//! The broker's way to its sources: the source of secrets, the RDS API when a database is named
//! by it, the signer of IAM auth tokens (one set per identity: the broker's own and each
//! assumed role), and the one wrapper every call goes through, which times it and counts its outcome.

use std::time::{Duration, Instant};

use super::state::DbState;
use crate::metrics::Metrics;
use crate::source::{Clients, SourceError, Sources};

/// The sources of one broker, with the metrics their calls are counted in.
pub(super) struct Upstream {
    /// The clients of the broker's own identity and of each assumed role.
    pub(super) sources: Sources,
    pub(super) metrics: Metrics,
    /// How long a resolved RDS topology is reused.
    pub(super) topology_ttl: Duration,
}

impl Upstream {
    /// The clients `state`'s database is read with: its role's, or the broker's own.
    pub(super) fn clients(&self, state: &DbState) -> &Clients {
        self.sources.of(state.config.role.as_ref())
    }

    /// Times an upstream call and counts its outcome; keeps `upstream_up` current.
    pub(super) async fn observe<T>(
        &self,
        operation: &str,
        call: impl Future<Output = Result<T, SourceError>>,
    ) -> Result<T, SourceError> {
        let result = self.observe_fallback(operation, call).await;
        let up = !result.as_ref().is_err_and(SourceError::is_outage);
        self.metrics.upstream_up.set(i64::from(up));
        result
    }

    /// Times a call to a fallback region and counts its outcome: `upstream_up` stays the
    /// primary region's.
    pub(super) async fn observe_fallback<T>(
        &self,
        operation: &str,
        call: impl Future<Output = Result<T, SourceError>>,
    ) -> Result<T, SourceError> {
        let started = Instant::now();
        let result = call.await;
        self.metrics
            .upstream_duration
            .with_label_values(&[operation])
            .observe(started.elapsed().as_secs_f64());
        let outcome = result
            .as_ref()
            .map_or_else(SourceError::outcome, |_| "success");
        self.metrics
            .upstream_requests
            .with_label_values(&[operation, outcome])
            .inc();
        result
    }
}
