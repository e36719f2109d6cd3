//! Credentials of an assumed role: STS `AssumeRole` through the SDK's own provider, called once
//! per role and again only when the credentials near their expiry, shared by every client and
//! the token signer of that role.

use std::time::{Duration, SystemTime};

use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{self, ProvideCredentials, SharedCredentialsProvider};
use tokio::sync::Mutex;

use crate::config::AssumedRole;

/// The role session name: who assumed the role, in `CloudTrail`.
const SESSION_NAME: &str = "credential-broker";
/// Credentials are renewed when less than this is left of them (a quarter of their life when
/// that is shorter).
const RENEW_BEFORE: Duration = Duration::from_mins(5);

/// `base` with its credentials replaced by those of `role`, assumed with `base`'s.
pub(crate) async fn assume(
    base: &aws_config::SdkConfig,
    role: &AssumedRole,
) -> aws_config::SdkConfig {
    let mut builder = AssumeRoleProvider::builder(&role.arn)
        .session_name(SESSION_NAME)
        .configure(base);
    if let Some(id) = &role.external_id {
        builder = builder.external_id(id);
    }
    let cached = Renewing {
        inner: builder.build().await,
        held: Mutex::new(None),
    };
    base.to_builder()
        .credentials_provider(SharedCredentialsProvider::new(cached))
        .build()
}

/// Holds the credentials `inner` gave until they near their expiry.
#[derive(Debug)]
struct Renewing<P> {
    inner: P,
    /// The credentials, and when they were obtained.
    held: Mutex<Option<(Credentials, SystemTime)>>,
}

impl<P: ProvideCredentials> Renewing<P> {
    async fn credentials(&self) -> provider::Result {
        let mut held = self.held.lock().await;
        let now = SystemTime::now();
        if let Some((credentials, obtained)) = held.as_ref()
            && !due(credentials.expiry(), *obtained, now)
        {
            return Ok(credentials.clone());
        }
        let credentials = self.inner.provide_credentials().await?;
        *held = Some((credentials.clone(), now));
        Ok(credentials)
    }
}

/// Whether credentials obtained at `obtained` and expiring at `expiry` are to be renewed at
/// `now`.
fn due(expiry: Option<SystemTime>, obtained: SystemTime, now: SystemTime) -> bool {
    let Some(expiry) = expiry else {
        return false;
    };
    let life = expiry.duration_since(obtained).unwrap_or_default();
    let margin = RENEW_BEFORE.min(life / 4);
    expiry.duration_since(now).unwrap_or_default() <= margin
}

impl<P: ProvideCredentials> ProvideCredentials for Renewing<P> {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(self.credentials())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_renewed_in_the_last_five_minutes_or_quarter_of_their_life() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_hours(1);
        let hour = t0 + Duration::from_hours(1);
        assert!(!due(Some(hour), t0, t0 + Duration::from_mins(54)));
        assert!(due(Some(hour), t0, t0 + Duration::from_mins(55)));
        let short = t0 + Duration::from_secs(20);
        assert!(!due(Some(short), t0, t0 + Duration::from_secs(14)));
        assert!(due(Some(short), t0, t0 + Duration::from_secs(15)));
        assert!(due(Some(short), t0, short + Duration::from_secs(1)));
        assert!(!due(None, t0, hour + Duration::from_hours(9)));
    }
}
