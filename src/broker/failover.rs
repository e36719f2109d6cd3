//! Replica-region failover: while the primary region fails transiently and no fresh value is
//! cached, the same secret is read from the database's fallback regions in order (Secrets
//! Manager replicas keep the name, and the ARN but for its region). Every fetch tries the
//! primary first, so the broker is back on it as soon as it answers.

use tracing::{info, warn};

use super::state::DbState;
use super::upstream::Upstream;
use crate::credentials::SecretVersion;
use crate::source::{Call, Source, Version};

/// A read a fallback region answered.
pub(super) struct Replica<'a> {
    pub(super) region: &'a str,
    pub(super) source: &'a dyn Source,
    /// The secret id as named in that region.
    pub(super) secret_id: String,
    pub(super) secret: SecretVersion,
}

impl Upstream {
    /// Reads the current version of `secret_id` from the first of `state`'s fallback regions
    /// that has it; `None` when none does.
    pub(super) async fn fail_over<'a>(
        &'a self,
        state: &'a DbState,
        secret_id: &str,
    ) -> Option<Replica<'a>> {
        let clients = self.clients(state);
        for region in &state.config.fallback_regions {
            let source = clients
                .replica(region)
                .expect("a client exists for every fallback region");
            let id = in_region(secret_id, region);
            let read = source.read(&id, Version::Current);
            match self
                .observe_fallback(source.operation(Call::Read), read)
                .await
            {
                Ok(secret) => {
                    info!(db = %state.name, region = %region, "the primary region failed; served from a fallback region");
                    self.metrics
                        .region_failovers
                        .with_label_values(&[region.as_str()])
                        .inc();
                    return Some(Replica {
                        region,
                        source,
                        secret_id: id,
                        secret,
                    });
                }
                Err(e) => {
                    warn!(db = %state.name, region = %region, error = %e, "reading from a fallback region failed");
                }
            }
        }
        None
    }
}

/// `secret_id` as named in `region`: a name is the same everywhere; an ARN names its region.
fn in_region(secret_id: &str, region: &str) -> String {
    let parts: Vec<&str> = secret_id.splitn(5, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "secretsmanager", _, rest] => {
            format!("arn:{partition}:secretsmanager:{region}:{rest}")
        }
        _ => secret_id.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::in_region;

    #[test]
    fn an_arn_is_moved_to_the_region_and_a_name_stays() {
        assert_eq!(
            in_region(
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf",
                "us-west-2"
            ),
            "arn:aws:secretsmanager:us-west-2:123456789012:secret:prod/db-AbCdEf"
        );
        assert_eq!(in_region("prod/db", "us-west-2"), "prod/db");
        assert_eq!(
            in_region("arn:aws:s3:::bucket", "us-west-2"),
            "arn:aws:s3:::bucket"
        );
    }
}
