//! What the broker asks of the places credentials come from: [`Source`] reads the current or
//! pending version of a secret and, where the place knows rotation, its rotation facts;
//! [`RdsApi`] resolves an RDS instance or cluster to its master user secret and endpoint.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use super::error::SourceError;
use crate::config::RdsTarget;
use crate::credentials::{
    AWSCURRENT, AuthToken, Endpoint, SecretVersion, ServiceRefusal, StoredSecret, VersionSelector,
};

/// The staging label of the version a rotation is putting in place.
pub(crate) const AWSPENDING: &str = "AWSPENDING";

/// A boxed future, so that sources can sit behind `dyn` traits.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which version of a secret the broker needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The version in use.
    Current,
    /// The version a rotation is putting in place, if there is one.
    Pending,
}

/// The kinds of call a source answers, each counted in upstream metrics under the operation
/// name its source gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// [`Source::read`].
    Read,
    /// [`Source::rotation`].
    Rotation,
    /// [`Source::read_batch`].
    ReadBatch,
}

/// The most secret ids one [`Source::read_batch`] call takes (`BatchGetSecretValue`'s limit).
pub(crate) const MAX_BATCH: usize = 20;

/// What a batch read returned: the secret ids it has a current version of, with it. The ids
/// it left out (missing, denied, or an answer that is no answer) are read singly, which sorts
/// their failures as a single read does.
pub(crate) type BatchAnswer = Vec<(String, SecretVersion)>;

/// What a source knows of a secret's rotation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationFacts {
    pub rotation_enabled: bool,
    pub last_rotated: Option<SystemTime>,
    pub next_rotation: Option<SystemTime>,
    /// A version that is pending and not current: a rotation is under way.
    pub pending_version: Option<String>,
    /// The version in use now (`AWSCURRENT`), when the source lists its versions: compared with
    /// the cached one, it tells a rotation without reading the value.
    pub current_version: Option<String>,
    /// How long the rotation window opening at `next_rotation` lasts, when the schedule says;
    /// `None`: until the end of that UTC day.
    pub window: Option<Duration>,
}

/// A place secrets are read from, by id.
pub(crate) trait Source: Send + Sync + 'static {
    /// The operation name upstream metrics count `call` under (`GetSecretValue`, ...).
    fn operation(&self, call: Call) -> &'static str;

    /// Reads `version` of `secret_id`; [`SourceError::NotFound`] when there is no such
    /// version (for [`Version::Pending`]: no rotation under way).
    fn read<'a>(
        &'a self,
        secret_id: &'a str,
        version: Version,
    ) -> BoxFuture<'a, Result<SecretVersion, SourceError>>;

    /// Reads the version of `secret_id` that `selector` names, with what the source knows of
    /// it, for the AWS agent's API; a definite "no" is [`SourceError::Refused`]. The default
    /// serves the current and pending versions through [`read`](Self::read), by stage only.
    fn read_stored<'a>(
        &'a self,
        secret_id: &'a str,
        selector: &'a VersionSelector,
    ) -> BoxFuture<'a, Result<StoredSecret, SourceError>> {
        Box::pin(async move {
            let no_such_version = || {
                SourceError::Refused(ServiceRefusal::new(
                    Some("ResourceNotFoundException"),
                    Some(
                        "Secrets Manager can't find the specified secret value for the requested version.",
                    ),
                ))
            };
            let (version, stage) = match (&selector.version_id, selector.version_stage.as_deref()) {
                (None, None | Some(AWSCURRENT)) => (Version::Current, AWSCURRENT),
                (None, Some(AWSPENDING)) => (Version::Pending, AWSPENDING),
                _ => return Err(no_such_version()),
            };
            let secret = self.read(secret_id, version).await.map_err(|e| match e {
                SourceError::NotFound(_) => no_such_version(),
                other => other,
            })?;
            Ok(StoredSecret {
                arn: secret.arn,
                name: Some(secret_id.to_owned()),
                version_id: secret.version_id,
                payload: secret.payload,
                stages: vec![stage.to_owned()],
                created: None,
            })
        })
    }

    /// Reads the current versions of up to [`MAX_BATCH`] secrets in one call, where the source
    /// has one (`BatchGetSecretValue`). `None` (the default): no batch call.
    fn read_batch<'a>(
        &'a self,
        _secret_ids: &'a [String],
    ) -> Option<BoxFuture<'a, Result<BatchAnswer, SourceError>>> {
        None
    }

    /// Rotation facts about `secret_id`; `None` (the default) for sources without rotation.
    fn rotation<'a>(
        &'a self,
        _secret_id: &'a str,
    ) -> Option<BoxFuture<'a, Result<RotationFacts, SourceError>>> {
        None
    }

    /// Whether [`rotation`](Self::rotation) costs nothing (a local read): then it is called
    /// every `rotation.watch_interval`, not only while a rotation may be under way.
    fn checks_are_free(&self) -> bool {
        false
    }
}

/// The operation name upstream metrics count the signing of an IAM auth token under (loading
/// the AWS credentials it is signed with can fail).
pub(crate) const SIGN_AUTH_TOKEN: &str = "SignAuthToken";

/// Signs RDS IAM authentication tokens with the broker's AWS credentials and region.
pub(crate) trait TokenSigner: Send + Sync + 'static {
    /// A token for `username` at `host`:`port`, valid for 15 minutes (or until the AWS
    /// credentials it is signed with expire, if sooner).
    fn sign<'a>(
        &'a self,
        host: &'a str,
        port: u16,
        username: &'a str,
    ) -> BoxFuture<'a, Result<AuthToken, SourceError>>;
}

/// What RDS says about an instance or cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The master user secret; `None` when RDS does not manage the password (an IAM login
    /// needs none).
    pub secret_arn: Option<String>,
    /// `MasterUserSecret.SecretStatus`: creating, active, rotating or impaired.
    pub secret_status: Option<String>,
    /// The endpoint, the reader endpoint of a cluster, the engine and the database name.
    pub endpoint: Endpoint,
}

/// Resolves RDS instances and clusters.
pub(crate) trait RdsApi: Send + Sync + 'static {
    /// The operation name upstream metrics count the resolution of `target` under.
    fn operation(&self, target: &RdsTarget) -> &'static str;

    fn resolve<'a>(&'a self, target: &'a RdsTarget)
    -> BoxFuture<'a, Result<Topology, SourceError>>;
}
