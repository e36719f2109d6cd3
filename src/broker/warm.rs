//! Warm-up in batches: at start, the databases named by a secret id are read
//! [`MAX_BATCH`] at a time with the source's batch call (`BatchGetSecretValue`), and each is
//! fetched with the value it got; those a batch did not return are left to their own fetch.

use std::collections::HashMap;
use std::time::Instant;

use tracing::{debug, warn};

use super::serve::Broker;
use super::state::DbState;
use crate::source::{Call, MAX_BATCH};

impl Broker {
    /// Reads every database named by a secret id that is not fetched yet in batches, where
    /// the source has a batch call; after a failed batch, the rest are left to single reads.
    pub(super) async fn warm_in_batches(&self) {
        let due: Vec<(&DbState, &str)> = self
            .dbs
            .values()
            .filter(|state| !state.is_ready())
            .filter_map(|state| Some((state.as_ref(), state.config.secret_id()?)))
            .collect();
        // One database: a batch is no fewer calls than a single read.
        if due.len() < 2 {
            return;
        }
        let source = &self.upstream.source;
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
