//! Held requests: a long poll or an event stream waits for a change, so it is counted against
//! `server.max_waiters` instead of `server.max_concurrent_requests`, and the request timeout
//! does not end it. The front gives every routed request a [`Hold`]; a handler about to wait
//! takes a [`Waiter`] place through it, which the front then sees.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::error::ApiError;
use super::state::ApiState;

/// Shared by the front and the handler of one routed request: set once the request is held.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hold(Arc<AtomicBool>);

impl Hold {
    /// Whether the handler holds the request (the front then arms no timeout and gives back
    /// the request's concurrency place).
    pub(crate) fn is_held(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Takes one of the `max_waiters` places, or answers 503 `overloaded` when all are taken.
    pub(crate) fn begin(&self, state: &Arc<ApiState>) -> Result<Waiter, ApiError> {
        let max = state.limits.max_waiters;
        state
            .waiters
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| ApiError::Overloaded)?;
        state.metrics.waiters.inc();
        self.0.store(true, Ordering::Release);
        Ok(Waiter {
            state: Arc::clone(state),
        })
    }
}

/// One of the `max_waiters` places, given back when dropped (the answer sent, the stream ended
/// or the client gone).
#[derive(Debug)]
pub(crate) struct Waiter {
    state: Arc<ApiState>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.state.waiters.fetch_sub(1, Ordering::AcqRel);
        self.state.metrics.waiters.dec();
    }
}

/// The `wait` of a long poll: a duration (`30s`, `5m`, `1m 30s`) or plain seconds, at most
/// `max`; anything else is 400 `invalid_wait`.
pub(crate) fn parse_wait(text: &str, max: Duration) -> Result<Duration, ApiError> {
    let text = text.trim();
    let wait = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(text).map_err(|_| ApiError::InvalidWait(max))?,
    };
    if wait > max {
        return Err(ApiError::InvalidWait(max));
    }
    Ok(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_durations_or_seconds_up_to_the_maximum() {
        let max = Duration::from_mins(5);
        assert_eq!(parse_wait("30", max).unwrap(), Duration::from_secs(30));
        assert_eq!(parse_wait("30s", max).unwrap(), Duration::from_secs(30));
        assert_eq!(parse_wait("5m", max).unwrap(), max);
        assert_eq!(parse_wait("1m 30s", max).unwrap(), Duration::from_secs(90));
        assert_eq!(parse_wait("0", max).unwrap(), Duration::ZERO);
        for bad in [
            "",
            "-1",
            "5m1s",
            "301",
            "soon",
            "1e3",
            "18446744073709551616",
        ] {
            assert!(
                matches!(parse_wait(bad, max), Err(ApiError::InvalidWait(_))),
                "{bad:?}"
            );
        }
    }
}
