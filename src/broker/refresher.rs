//! The background refresher: one task per database keeps it fresh until dropped, with warm-up
//! (when enabled), refresh-ahead before the TTL ends, retries after backoff, and the rotation
//! checks on the schedule `schedule.rs` sets, which fetch at once when the current version moved.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use tracing::{debug, info, warn};

use super::schedule;
use super::serve::Broker;
use super::state::DbState;
use super::upstream::Upstream;
use crate::config::{Login, SecretRef};
use crate::credentials::DbName;
use crate::source::{Call, RotationFacts, SourceError};

/// What the last rotation check of a database found, and when it ran.
#[derive(Debug, Default)]
struct Checked {
    at: Option<(Instant, SystemTime)>,
    facts: Option<RotationFacts>,
    /// The last check failed: the next failures are logged at debug only.
    failing: bool,
}

impl Broker {
    /// Keeps every database fresh in the background until the returned future is dropped.
    pub async fn run_background(self: Arc<Self>) {
        if self.warm && !self.dbs.is_empty() {
            info!(databases = self.dbs.len(), "warming up");
            // Batches first: the tasks below then find those databases fetched.
            self.warm_in_batches().await;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for name in self.dbs.keys() {
            let (broker, name) = (Arc::clone(&self), name.clone());
            tasks.spawn(async move { broker.keep_fresh(&name).await });
        }
        if tasks.is_empty() {
            // No database to keep fresh (the AWS agent's API alone): nothing to do, ever.
            std::future::pending::<()>().await;
        }
        while tasks.join_next().await.is_some() {}
    }

    pub(super) async fn keep_fresh(&self, name: &DbName) {
        let state = &self.dbs[name];
        let mut checked = Checked::default();
        loop {
            let due = *state.lock_next_fetch();
            let Some(due) = due else {
                // Not fetched yet and no warm-up: wait for the first on-demand fetch.
                state.wake.notified().await;
                continue;
            };
            let check_due = state
                .is_ready()
                .then(|| self.next_check_at(state, &checked));
            let wake_at = check_due.map_or(due, |d| d.min(due));
            if wake_at > Instant::now() {
                tokio::select! {
                    () = tokio::time::sleep_until(wake_at.into()) => {}
                    () = state.wake.notified() => {}
                }
                continue; // The schedule may have moved meanwhile (a refresh, a retry).
            }
            let Ok(_permit) = self.background.acquire().await else {
                return;
            };
            // The upstream calls' futures are large; boxed, they exist only while a call runs,
            // and a task waiting for its next refresh stays small (it matters with many dbs).
            if due <= Instant::now() {
                let pending = state.pending_hint.load(Ordering::Acquire);
                let _ = Box::pin(self.fetch_shared(state, Instant::now(), false, pending)).await;
            }
            if check_due.is_some_and(|d| d <= Instant::now()) {
                Box::pin(self.check_rotation(state, &mut checked)).await;
            }
        }
    }

    /// When `state`'s rotation facts are read next.
    fn next_check_at(&self, state: &DbState, checked: &Checked) -> Instant {
        let Some((instant, system)) = checked.at else {
            return Instant::now();
        };
        let rds_rotating = || {
            state
                .last_topology()
                .is_some_and(|t| t.secret_status.as_deref() == Some("rotating"))
        };
        let watching = self.upstream.clients(state).secrets.checks_are_free()
            || state.is_watched()
            || rds_rotating();
        instant + schedule::next_check(system, checked.facts.as_ref(), watching, &self.rotation)
    }

    /// Reads `state`'s rotation facts; fetches at once when the current version is not the
    /// cached one, or when the secret is gone (the fetch tells a deletion from a re-created
    /// RDS database).
    async fn check_rotation(&self, state: &DbState, checked: &mut Checked) {
        let result = self.upstream.rotation_facts(state).await;
        let now = SystemTime::now();
        // The move happened after the previous check: the detection delay is at most this.
        let since = checked.at.map_or(now, |(_, previous)| previous);
        checked.at = Some((Instant::now(), now));
        match result {
            Some(Ok(facts)) => {
                checked.failing = false;
                if let Some(current) = facts.current_version.as_deref()
                    && !state.is_last_version(current)
                {
                    self.fetch_moved(state, &facts, current, since).await;
                }
                checked.facts = Some(facts);
            }
            // Gone while served: the fetch revokes it, or finds a re-created RDS database's
            // new secret.
            Some(Err(SourceError::NotFound(_))) if self.cache.get(&state.name).is_some() => {
                let _ = Box::pin(self.fetch_shared(state, Instant::now(), false, false)).await;
            }
            Some(Err(SourceError::NotFound(_))) | None => {}
            Some(Err(e)) => {
                if checked.failing {
                    debug!(db = %state.name, error = %e, "checking the secret's rotation failed again");
                } else {
                    warn!(db = %state.name, error = %e, "checking the secret's rotation failed; it is checked again on schedule");
                }
                checked.failing = true;
            }
        }
    }

    /// The current version moved to `current`: fetches it now, and times the detection from
    /// the move (`LastRotatedDate` when it is later than the cached fetch, else `since`, the
    /// check before, so that the delay is never under-reported) to the new version being
    /// served.
    async fn fetch_moved(
        &self,
        state: &DbState,
        facts: &RotationFacts,
        current: &str,
        since: SystemTime,
    ) {
        let cached_at = self.cache.get(&state.name).map(|c| c.fetched_at);
        let moved = facts
            .last_rotated
            .filter(|at| cached_at.is_some_and(|c| *at > c) && *at <= SystemTime::now())
            .unwrap_or(since);
        info!(db = %state.name, version_id = current, "the current version moved; fetching it");
        let pending = state.pending_hint.load(Ordering::Acquire);
        let fetched = Box::pin(self.fetch_shared(state, Instant::now(), false, pending)).await;
        if let Ok(credentials) = fetched
            && credentials.version_id == current
        {
            let delay = SystemTime::now().duration_since(moved).unwrap_or_default();
            state.metrics.observe_detection(delay.as_secs_f64());
        }
    }
}

impl Upstream {
    /// Reads the rotation facts of `state`'s secret into its rotation metrics; notes a pending
    /// version for the next fetch. `None` when the source knows no rotation, the RDS database
    /// is not resolved yet or has no secret, or the database logs in with IAM tokens.
    async fn rotation_facts(&self, state: &DbState) -> Option<Result<RotationFacts, SourceError>> {
        let name = &state.name;
        let id = match &state.config.login {
            Login::Secret(SecretRef::SecretId(id)) => id.clone(),
            Login::Secret(SecretRef::Rds(_)) => state.last_topology()?.secret_arn.clone()?,
            // A token has no secret, and no rotation: it is signed again before it expires.
            Login::Iam(_) => return None,
        };
        let source = &self.clients(state).secrets;
        let call = source.rotation(&id)?;
        let facts = match self.observe(source.operation(Call::Rotation), call).await {
            Ok(facts) => facts,
            Err(e) => return Some(Err(e)),
        };
        state.metrics.set_rotation(
            facts.rotation_enabled,
            facts.last_rotated,
            facts.next_rotation,
        );
        *state
            .rotation_dates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            (facts.last_rotated, facts.next_rotation);
        if let Some(version) = &facts.pending_version {
            debug!(db = %name, pending_version = %version, "a rotation is under way");
            state.pending_hint.store(true, Ordering::Release);
        }
        Some(Ok(facts))
    }
}
