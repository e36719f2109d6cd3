//! One fetch of a database's credentials: resolve RDS if needed, read the current version (and
//! the pending one when asked and the current did not change), merge the endpoint, parse; or,
//! for an IAM login, sign a token (`iam.rs`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::{debug, info, warn};

use super::error::BrokerError;
use super::state::DbState;
use super::upstream::Upstream;
use crate::config::{Login, SecretRef};
use crate::credentials::{Credentials, DbName, MalformedSecret, SecretVersion};
use crate::source::{Call, SourceError, Topology, Version};

/// How one read of a secret goes.
#[derive(Debug)]
struct ReadPlan {
    /// Read the pending version too (when the current did not change, or one is expected).
    with_pending: bool,
    /// The current version, already read by a batch.
    prefetched: Option<SecretVersion>,
    /// A transient failure of the primary region may be answered from a fallback region.
    may_fail_over: bool,
}

impl Upstream {
    /// Fetches `state`'s database from the source (its current version already read when
    /// `prefetched`, by a batch; read from a fallback region after a transient failure when
    /// `may_fail_over`); records the version, readiness and metrics.
    pub(super) async fn fetch(
        &self,
        state: &DbState,
        with_pending: bool,
        prefetched: Option<SecretVersion>,
        may_fail_over: bool,
    ) -> Result<Arc<Credentials>, BrokerError> {
        let credentials = match &state.config.login {
            Login::Secret(reference) => {
                let plan = ReadPlan {
                    with_pending,
                    prefetched,
                    may_fail_over,
                };
                self.read_secret(state, reference, plan).await?
            }
            Login::Iam(iam) => self.sign(state, iam).await?,
        };
        state.note_version(&credentials.version_id);
        state.metrics.set_last_fetch(credentials.fetched_at);
        state.ready.store(true, Ordering::Release);
        debug!(db = %state.name, version_id = %credentials.version_id, "credentials fetched");
        Ok(Arc::new(credentials))
    }

    /// Reads the password of `state`'s database from the secret `reference` names.
    async fn read_secret(
        &self,
        state: &DbState,
        reference: &SecretRef,
        plan: ReadPlan,
    ) -> Result<Credentials, BrokerError> {
        let name = &state.name;
        let mut topology = self.topology(state, false).await?;
        let clients = self.clients(state);
        let mut source = clients.secrets.as_ref();
        let mut region = clients.region.as_deref();
        let operation = source.operation(Call::Read);
        let secret_id = |topology: &Option<Arc<Topology>>| match (reference, topology) {
            (SecretRef::SecretId(id), _) => Ok(id.clone()),
            (SecretRef::Rds(target), Some(t)) => t
                .secret_arn
                .clone()
                .ok_or_else(|| not_managed(name, target.id())),
            (SecretRef::Rds(_), None) => unreachable!("RDS databases always have a topology"),
        };
        let mut id = secret_id(&topology)?;
        let mut result = match plan.prefetched {
            Some(secret) => Ok(secret),
            None => {
                self.observe(operation, source.read(&id, Version::Current))
                    .await
            }
        };
        if matches!(result, Err(SourceError::NotFound(_))) && topology.is_some() {
            // The secret is gone: the instance may have been re-created with a new one.
            topology = self.topology(state, true).await?;
            let new_id = secret_id(&topology)?;
            if new_id != id {
                info!(db = %name, "the RDS database has a new master user secret");
                id = new_id;
                result = self
                    .observe(operation, source.read(&id, Version::Current))
                    .await;
            }
        }
        if plan.may_fail_over
            && result.as_ref().is_err_and(SourceError::is_outage)
            && let Some(replica) = self.fail_over(state, &id).await
        {
            (region, source, id, result) = (
                Some(replica.region),
                replica.source,
                replica.secret_id,
                Ok(replica.secret),
            );
        }
        let secret = result.inspect_err(|e| {
            warn!(db = %name, error = %e, "fetching credentials failed");
        })?;
        let malformed = |reason: MalformedSecret| {
            warn!(db = %name, %reason, "secret is not usable as database credentials");
            BrokerError::Malformed {
                db: name.clone(),
                reason,
            }
        };
        // The configuration's endpoint values first, RDS's where it has none.
        let (fallback, secret_status) = match &topology {
            Some(t) => (
                state.config.endpoint.clone().or(t.endpoint.clone()),
                t.secret_status.clone(),
            ),
            None => (state.config.endpoint.clone(), None),
        };
        let mut credentials =
            Credentials::from_secret(name.clone(), fallback, secret_status, secret)
                .map_err(malformed)?;
        credentials.region = region.map(str::to_owned);
        let unchanged = state.is_last_version(&credentials.version_id);
        if plan.with_pending && (unchanged || state.pending_hint.load(Ordering::Acquire)) {
            match self
                .observe(operation, source.read(&id, Version::Pending))
                .await
            {
                Ok(pending) => {
                    credentials = credentials.with_pending(pending).map_err(malformed)?;
                }
                Err(SourceError::NotFound(_)) => state.pending_hint.store(false, Ordering::Release),
                Err(e) => warn!(db = %name, error = %e, "reading the pending version failed"),
            }
        }
        Ok(credentials)
    }
}

/// An RDS database without a master user secret (`ManageMasterUserPassword` off), for a
/// password login: logged, and reported as its secret not found.
fn not_managed(db: &DbName, rds: &str) -> BrokerError {
    warn!(db = %db, rds = %rds, "the RDS database has no master user secret");
    SourceError::NotManaged(format!(
        "{rds} has no master user secret in Secrets Manager (ManageMasterUserPassword is off)"
    ))
    .into()
}
