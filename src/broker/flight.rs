//! The per-database flight: the outcome of the last upstream attempt, shared with everyone who
//! waited for it, and the backoff after failures (growing, capped, jittered).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::BrokerError;
use crate::config::UpstreamConfig;
use crate::credentials::Credentials;

/// The outcome of the last upstream attempt for a database (or, for the agent's API, a secret
/// version), and the failures since a success.
#[derive(Debug)]
pub(super) struct Flight<T = Credentials, E = BrokerError> {
    pub(super) last: Option<(Instant, Result<Arc<T>, E>)>,
    pub(super) failures: u32,
    pub(super) retry_at: Option<Instant>,
}

impl<T, E> Default for Flight<T, E> {
    fn default() -> Self {
        Self {
            last: None,
            failures: 0,
            retry_at: None,
        }
    }
}

impl<T, E: Clone> Flight<T, E> {
    /// The result of an attempt that finished after `arrived`: a caller that queued behind it
    /// takes it rather than calling again.
    pub(super) fn finished_since(&self, arrived: Instant) -> Option<Result<Arc<T>, E>> {
        match &self.last {
            Some((finished, result)) if *finished >= arrived => Some(result.clone()),
            _ => None,
        }
    }

    /// The last error while the backoff delay after it has not passed.
    pub(super) fn backing_off(&self, now: Instant) -> Option<E> {
        match (self.retry_at, &self.last) {
            (Some(retry_at), Some((_, Err(last)))) if now < retry_at => Some(last.clone()),
            _ => None,
        }
    }

    /// Records a success: no failures, no backoff.
    pub(super) fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }

    /// Records a failure at `now` and returns the backoff delay before the next attempt.
    pub(super) fn failed(&mut self, now: Instant, upstream: &UpstreamConfig) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = backoff(upstream, self.failures);
        self.retry_at = Some(now + delay);
        delay
    }
}

/// The delay after `failures` consecutive failures: exponential, capped, with "equal jitter"
/// (between half and all of the exponential delay), so spacing always grows while a fleet of
/// brokers does not retry in lockstep.
fn backoff(upstream: &UpstreamConfig, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    let full = upstream
        .backoff_initial
        .saturating_mul(1 << exponent)
        .min(upstream.backoff_max);
    full.mul_f64(random_between((0.5, 1.0)))
}

/// A uniformly random factor in `[low, high)`.
pub(super) fn random_between((low, high): (f64, f64)) -> f64 {
    low + fastrand::f64() * (high - low)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_with_growing_jittered_capped_delays() {
        let upstream = UpstreamConfig {
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(2),
        };
        // Equal jitter: failure n waits between half and all of initial x 2^(n-1), capped.
        let (initial, max) = (upstream.backoff_initial, upstream.backoff_max);
        for n in 1..=8u32 {
            let full = initial.saturating_mul(1 << (n - 1)).min(max);
            for _ in 0..20 {
                let delay = backoff(&upstream, n);
                assert!(
                    delay >= full / 2 && delay <= full,
                    "failure {n}: {delay:?} of {full:?}"
                );
            }
        }
        assert!(
            initial.saturating_mul(1 << 7) > max,
            "the test reaches the cap"
        );
    }
}
