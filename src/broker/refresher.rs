//! The background refresher: one task per database keeps it fresh until dropped, with warm-up
//! (when enabled), refresh-ahead before the TTL ends, retries after backoff, and the periodic
//! read of rotation facts for the rotation metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::{debug, info, warn};

use super::serve::Broker;
use super::state::DbState;
use super::upstream::Upstream;
use crate::config::SecretRef;
use crate::credentials::DbName;
use crate::source::Call;

impl Broker {
    /// Keeps every database fresh in the background until the returned future is dropped.
    pub async fn run_background(self: Arc<Self>) {
        let mut tasks = tokio::task::JoinSet::new();
        for name in self.dbs.keys() {
            let (broker, name) = (Arc::clone(&self), name.clone());
            tasks.spawn(async move { broker.keep_fresh(&name).await });
        }
        if self.warm {
            info!(databases = self.dbs.len(), "warming up");
        }
        while tasks.join_next().await.is_some() {}
    }

    pub(super) async fn keep_fresh(&self, name: &DbName) {
        let state = &self.dbs[name];
        let mut next_describe = Instant::now();
        loop {
            let due = *state.lock_next_fetch();
            let Some(due) = due else {
                // Not fetched yet and no warm-up: wait for the first on-demand fetch.
                state.wake.notified().await;
                continue;
            };
            let describe_due = state.is_ready().then_some(next_describe);
            let wake_at = describe_due.map_or(due, |d| d.min(due));
            if wake_at > Instant::now() {
                tokio::select! {
                    () = tokio::time::sleep_until(wake_at.into()) => {}
                    () = state.wake.notified() => {}
                }
                continue; // `next_fetch` may have moved meanwhile (a refresh, a retry).
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
            if describe_due.is_some_and(|d| d <= Instant::now()) {
                Box::pin(self.upstream.rotation_facts(state)).await;
                next_describe = Instant::now() + self.rotation.describe_interval;
            }
        }
    }

    /// Has the background task fetch every database now, whatever its schedule (the backoff of
    /// a failing one included): what SIGHUP asks for.
    pub fn fetch_all_now(&self) {
        let now = Instant::now();
        for state in self.dbs.values() {
            *state.lock_next_fetch() = Some(now);
            state.wake.notify_one();
        }
    }
}

impl Upstream {
    /// Reads the rotation facts of `state`'s secret into its rotation metrics; notes a pending
    /// version for the next fetch.
    async fn rotation_facts(&self, state: &DbState) {
        let name = &state.name;
        let id = match &state.config.secret {
            SecretRef::SecretId(id) => id.clone(),
            SecretRef::Rds(_) => match state.last_topology() {
                Some(t) => t.secret_arn.clone(),
                None => return,
            },
        };
        let Some(call) = self.source.rotation(&id) else {
            return;
        };
        let facts = match self
            .observe(self.source.operation(Call::Rotation), call)
            .await
        {
            Ok(facts) => facts,
            Err(e) => {
                warn!(db = %name, error = %e, "describing the secret failed");
                return;
            }
        };
        state.metrics.set_rotation(
            facts.rotation_enabled,
            facts.last_rotated,
            facts.next_rotation,
        );
        if let Some(version) = facts.pending_version {
            debug!(db = %name, pending_version = %version, "a rotation is under way");
            state.pending_hint.store(true, Ordering::Release);
        }
    }
}
