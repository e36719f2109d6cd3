//! Warm-up in batches: at start, the databases named by a secret id are read
//! [`MAX_BATCH`] at a time with the source's batch call (`BatchGetSecretValue`), and each is
//! fetched with the value it got; those a batch did not return are left to their own fetch.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use tracing::{debug, warn};

use super::serve::Broker;
use super::state::DbState;
use crate::config::AssumedRole;
use crate::source::{Call, MAX_BATCH, Source};

impl Broker {
    /// Reads every database named by a secret id that is not fetched yet in batches, where
    /// the source has a batch call, one series per identity (the broker's own, each role);
    /// after a failed batch, the rest of that identity's are left to single reads.
    pub(super) async fn warm_in_batches(&self) {
        let mut due: BTreeMap<Option<&AssumedRole>, Vec<(&DbState, &str)>> = BTreeMap::new();
        for state in self.dbs.values().filter(|state| !state.is_ready()) {
            if let Some(id) = state.config.secret_id() {
                let role = state.config.role.as_ref();
                due.entry(role).or_default().push((state.as_ref(), id));
            }
        }
        for (role, due) in due {
            // One database: a batch is no fewer calls than a single read.
            if due.len() >= 2 {
                let source = &self.upstream.sources.of(role).secrets;
                Box::pin(self.warm_batches_of(source.as_ref(), &due)).await;
            }
        }
    }

    /// Reads `due` with `source`'s batch call, [`MAX_BATCH`] at a time.
    async fn warm_batches_of(&self, source: &dyn Source, due: &[(&DbState, &str)]) {
        let (mut batches, mut fetched) = (0, 0);
        for chunk in due.chunks(MAX_BATCH) {
            let ids: Vec<String> = chunk.iter().map(|(_, id)| (*id).to_owned()).collect();
            let Some(call) = source.read_batch(&ids) else {
                return;
            };
            batches += 1;
            let answer = match self
                .upstream
                .observe(source.operation(Call::ReadBatch), call)
                .await
            {
                Ok(answer) => answer,
                Err(e) => {
                    // Denied (no BatchGetSecretValue in the policy) or failing: the databases
                    // left are read one by one, as without batches.
                    warn!(error = %e, "a batch read at warm-up failed; the databases not fetched yet are read one by one");
                    return;
                }
            };
            let mut by_id: HashMap<String, _> = answer.into_iter().collect();
            for (state, id) in chunk {
                // Two databases of one secret: the second reads it singly.
                if let Some(secret) = by_id.remove(*id) {
                    fetched += 1;
                    let _ = Box::pin(self.fetch_with(
                        state,
                        Instant::now(),
                        false,
                        false,
                        Some(secret),
                    ))
                    .await;
                }
            }
        }
        debug!(
            batches,
            fetched,
            databases = due.len(),
            "warmed up in batches"
        );
    }
}
