//! Reads in batches, whenever many databases need a fetch at once (warm-up at start, SIGHUP):
//! the databases whose password is in a secret, named by id or resolved from RDS, are read
//! [`MAX_BATCH`] at a time with the source's batch call (`BatchGetSecretValue`), one series per
//! identity, and each is fetched with the value it got; those a batch did not return are left
//! to their own fetch.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use futures_util::future::join_all;
use tracing::{debug, warn};

use super::serve::{BACKGROUND_CONCURRENCY, Broker};
use super::state::DbState;
use crate::config::{AssumedRole, Login};
use crate::credentials::DbName;
use crate::source::{Call, MAX_BATCH, Source};

impl Broker {
    /// Reads every database not fetched yet in batches, where the source has a batch call.
    pub(super) async fn warm_in_batches(&self) {
        let fetched = self.read_in_batches(|state| !state.is_ready()).await;
        debug!(fetched = fetched.len(), "warmed up in batches");
    }

    /// Fetches every database now, whatever its schedule (the backoff of a failing one
    /// included): what SIGHUP asks for. Those a batch read are done; the background task of
    /// each other one fetches it at once.
    pub async fn fetch_all_now(&self) {
        let fetched = self.read_in_batches(|_| true).await;
        debug!(fetched = fetched.len(), "fetched in batches on reload");
        let now = Instant::now();
        for state in self.dbs.values() {
            if !fetched.contains(&state.name) {
                *state.lock_next_fetch() = Some(now);
                state.wake.notify_one();
            }
        }
    }

    /// Reads the `wanted` databases whose password is in a secret in batches, one series per
    /// identity (the broker's own, each role); RDS databases are resolved first (from the
    /// topology cache when fresh). Returns the databases fetched.
    async fn read_in_batches(&self, wanted: impl Fn(&DbState) -> bool) -> HashSet<DbName> {
        let states: Vec<&DbState> = self
            .dbs
            .values()
            .map(AsRef::as_ref)
            .filter(|state| wanted(state))
            .collect();
        let mut due: BTreeMap<Option<&AssumedRole>, Vec<(&DbState, String)>> = BTreeMap::new();
        // RDS databases are resolved a few at a time, as the background tasks would.
        for chunk in states.chunks(BACKGROUND_CONCURRENCY) {
            let ids = join_all(chunk.iter().map(|state| self.secret_id_of(state))).await;
            for (state, id) in chunk.iter().zip(ids) {
                if let Some(id) = id {
                    let role = state.config.role.as_ref();
                    due.entry(role).or_default().push((state, id));
                }
            }
        }
        let mut fetched = HashSet::new();
        for (role, due) in due {
            // One database: a batch is no fewer calls than a single read.
            if due.len() >= 2 {
                let source = &self.upstream.sources.of(role).secrets;
                Box::pin(self.read_batches_of(source.as_ref(), &due, &mut fetched)).await;
            }
        }
        fetched
    }

    /// The secret `state`'s password is read from: its secret id, or its RDS database's master
    /// user secret (resolved, or from the topology cache when fresh). `None` for an IAM login,
    /// and for an RDS database not resolved or without a secret, whose own fetch says why.
    async fn secret_id_of(&self, state: &DbState) -> Option<String> {
        if matches!(state.config.login, Login::Iam(_)) {
            return None;
        }
        if let Some(id) = state.config.secret_id() {
            return Some(id.to_owned());
        }
        let topology = Box::pin(self.upstream.topology(state, false)).await;
        topology.ok().flatten().and_then(|t| t.secret_arn.clone())
    }

    /// Reads `due` with `source`'s batch call, [`MAX_BATCH`] at a time, adding the databases
    /// fetched to `fetched`.
    async fn read_batches_of(
        &self,
        source: &dyn Source,
        due: &[(&DbState, String)],
        fetched: &mut HashSet<DbName>,
    ) {
        for chunk in due.chunks(MAX_BATCH) {
            let ids: Vec<String> = chunk.iter().map(|(_, id)| id.clone()).collect();
            let Some(call) = source.read_batch(&ids) else {
                return;
            };
            let answer = match self
                .upstream
                .observe(source.operation(Call::ReadBatch), call)
                .await
            {
                Ok(answer) => answer,
                Err(e) => {
                    // Denied (no BatchGetSecretValue in the policy) or failing: the databases
                    // left are read one by one, as without batches.
                    warn!(error = %e, "a batch read failed; the databases not fetched yet are read one by one");
                    return;
                }
            };
            let mut by_id: HashMap<String, _> = answer.into_iter().collect();
            for (state, id) in chunk {
                // Two databases of one secret: the second reads it singly.
                if let Some(secret) = by_id.remove(id) {
                    let result = Box::pin(self.fetch_with(
                        state,
                        Instant::now(),
                        false,
                        false,
                        Some(secret),
                    ))
                    .await;
                    if result.is_ok() {
                        fetched.insert(state.name.clone());
                    }
                }
            }
        }
    }
}
