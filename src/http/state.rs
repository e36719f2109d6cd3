//! What the credentials API's front layer, router layer and handlers share.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use super::audit::Audit;
use crate::broker::Broker;
use crate::clients::{Client, Clients};
use crate::config::Limits;
use crate::metrics::Metrics;

/// What the credentials API's front layer and handlers share.
#[derive(Debug)]
pub(crate) struct ApiState {
    pub(super) broker: Arc<Broker>,
    /// `None` when authentication is disabled.
    pub(super) clients: Option<Arc<Clients>>,
    /// The caller of every request when authentication is disabled.
    pub(super) anonymous: Arc<Client>,
    pub(super) limits: Limits,
    /// Requests in progress, at most `limits.max_concurrent_requests`.
    pub(super) in_progress: AtomicUsize,
    /// Held requests (long polls, event streams), at most `limits.max_waiters`.
    pub(super) waiters: AtomicUsize,
    pub(super) audit: Audit,
    pub(super) metrics: Metrics,
}
