//! RDS topology: an RDS-named database resolved to its master user secret and endpoint, cached
//! for `topology_ttl`, kept through an RDS API outage, dropped when the database is deleted.

use std::sync::Arc;
use std::time::Instant;

use tracing::warn;

use super::error::BrokerError;
use super::state::DbState;
use super::upstream::Upstream;
use crate::source::{SourceError, Topology};

impl Upstream {
    /// The RDS topology of `state`'s database (`None` when it is not named by RDS): cached
    /// for `topology_ttl`, or resolved again (always, with `force`).
    pub(super) async fn topology(
        &self,
        state: &DbState,
        force: bool,
    ) -> Result<Option<Arc<Topology>>, BrokerError> {
        let Some(target) = state.config.rds() else {
            return Ok(None);
        };
        if !force
            && let Some((resolved, topology)) = state.lock_topology().as_ref()
            && resolved.elapsed() < self.topology_ttl
        {
            return Ok(Some(Arc::clone(topology)));
        }
        let name = &state.name;
        let rds = self
            .clients(state)
            .rds
            .as_ref()
            .expect("an RDS client exists when RDS databases do");
        let resolved = self
            .observe(rds.operation(target), rds.resolve(target))
            .await;
        let topology = match resolved {
            Ok(topology) => Arc::new(topology),
            Err(SourceError::Gone(id)) => {
                warn!(db = %name, rds = %id, "the RDS database no longer exists");
                state.metrics.count(|c| &c.deleted);
                *state.lock_topology() = None;
                return Err(BrokerError::Deleted(id));
            }
            Err(err) => {
                // An outage of the RDS API does not stop a known secret from being read.
                if err.is_outage()
                    && !force
                    && let Some(topology) = state.last_topology()
                {
                    warn!(db = %name, error = %err, "resolving the RDS database failed; using the last topology");
                    return Ok(Some(topology));
                }
                warn!(db = %name, error = %err, "resolving the RDS database failed");
                return Err(err.into());
            }
        };
        state
            .metrics
            .set_secret_status(topology.secret_status.as_deref());
        *state.lock_topology() = Some((Instant::now(), Arc::clone(&topology)));
        Ok(Some(topology))
    }
}
