//! The broker's way to its sources: the source of secrets, the RDS API when a database is named
//! by it, the signer of IAM auth tokens, and the one wrapper every call goes through, which times it and counts its outcome.

use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::source::{RdsApi, Source, SourceError, TokenSigner};

/// The sources of one broker, with the metrics their calls are counted in.
pub(super) struct Upstream {
    pub(super) source: Box<dyn Source>,
    /// Present when any database is named by an RDS identifier.
    pub(super) rds: Option<Box<dyn RdsApi>>,
    /// Present when any database logs in with an IAM auth token.
    pub(super) iam: Option<Box<dyn TokenSigner>>,
    pub(super) metrics: Metrics,
    /// How long a resolved RDS topology is reused.
    pub(super) topology_ttl: Duration,
}

impl Upstream {
    /// Times an upstream call and counts its outcome; keeps `upstream_up` current.
    pub(super) async fn observe<T>(
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
        let up = !result.as_ref().is_err_and(SourceError::is_outage);
        self.metrics.upstream_up.set(i64::from(up));
        result
    }
}
