//! The one stand-in source of unit tests: well-known secret ids with fixed answers, an optional
//! delay, and controls to count calls, change the version and make it fail; and a stand-in for
//! the RDS API. Integration tests use moto and the real SDK instead.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::api::{BoxFuture, Call, RdsApi, Source, Topology, Version};
use super::error::SourceError;
use crate::config::RdsTarget;
use crate::credentials::{Endpoint, SecretPayload, SecretVersion};

/// The password of the `good` secret, for tests that check it never leaks.
pub(crate) const PASSWORD: &str = "unit-test-password-!@#";

/// What a test changes while the stand-in runs, and what it counts.
#[derive(Debug)]
pub(crate) struct Controls {
    /// Reads so far.
    pub(crate) calls: AtomicUsize,
    /// The version id every secret has now.
    pub(crate) version: Mutex<String>,
    /// While set, every known secret fails as unavailable.
    pub(crate) failing: AtomicBool,
}

impl Controls {
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub(crate) fn set_version(&self, version: &str) {
        version.clone_into(&mut self.version.lock().unwrap());
    }

    pub(crate) fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

/// Answers, by secret id: `plain` (a login only), `good` (a login with [`PASSWORD`], host and
/// port), `broken` (not JSON, holding [`PASSWORD`]), `slow` (a timeout); any other id is not
/// found, and so is every pending version.
#[derive(Debug)]
pub(crate) struct StandInSource {
    delay: Duration,
    controls: Arc<Controls>,
}

impl StandInSource {
    /// A stand-in answering after `delay`, every secret at version `version` until changed.
    pub(crate) fn new(delay: Duration, version: &'static str) -> Self {
        Self {
            delay,
            controls: Arc::new(Controls {
                calls: AtomicUsize::new(0),
                version: Mutex::new(version.to_owned()),
                failing: AtomicBool::new(false),
            }),
        }
    }

    pub(crate) fn controls(&self) -> Arc<Controls> {
        Arc::clone(&self.controls)
    }

    async fn answer(
        &self,
        secret_id: &str,
        version: Version,
    ) -> Result<SecretVersion, SourceError> {
        self.controls.calls.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let text = match secret_id {
            _ if version == Version::Pending => None,
            "plain" => Some(r#"{"username":"u","password":"p"}"#.to_owned()),
            "good" => Some(format!(
                r#"{{"username":"app","password":"{PASSWORD}","host":"h","port":5432}}"#
            )),
            "broken" => Some(format!("not json {PASSWORD}")),
            "slow" => return Err(SourceError::Timeout("test".into())),
            _ => None,
        };
        let text = text.ok_or_else(|| SourceError::NotFound(secret_id.to_owned()))?;
        if self.controls.failing.load(Ordering::SeqCst) {
            return Err(SourceError::Unavailable("down".to_owned()));
        }
        Ok(SecretVersion {
            payload: SecretPayload::String(text.into()),
            version_id: self.controls.version.lock().unwrap().clone(),
            arn: Some(format!("arn:test:{secret_id}")),
        })
    }
}

impl Source for StandInSource {
    fn operation(&self, _call: Call) -> &'static str {
        "StandIn"
    }

    fn read<'a>(
        &'a self,
        secret_id: &'a str,
        version: Version,
    ) -> BoxFuture<'a, Result<SecretVersion, SourceError>> {
        Box::pin(self.answer(secret_id, version))
    }
}

/// A stand-in for the RDS API: every database has the `plain` secret, the given secret status
/// and a PostgreSQL endpoint at `rds-host`.
pub(crate) struct StandInRds(pub(crate) &'static str);

impl RdsApi for StandInRds {
    fn operation(&self, _target: &RdsTarget) -> &'static str {
        "StandInRds"
    }

    fn resolve<'a>(
        &'a self,
        _target: &'a RdsTarget,
    ) -> BoxFuture<'a, Result<Topology, SourceError>> {
        Box::pin(async move {
            Ok(Topology {
                secret_arn: Some("plain".into()),
                secret_status: Some(self.0.into()),
                endpoint: Endpoint {
                    host: Some("rds-host".into()),
                    port: Some(5432),
                    reader_host: None,
                    engine: Some("postgres".into()),
                    dbname: Some("orders".into()),
                },
            })
        })
    }
}
