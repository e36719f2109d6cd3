//! IAM logins: a token signed for the database's user at its endpoint (the configured one,
//! completed by RDS's), with no Secrets Manager call. How long a token is served, and when it
//! is signed again, is `lifetime` in `serve.rs`.

use tracing::warn;

use super::error::BrokerError;
use super::state::DbState;
use super::upstream::Upstream;
use crate::config::IamLogin;
use crate::credentials::Credentials;
use crate::source::{SIGN_AUTH_TOKEN, SourceError};

impl Upstream {
    /// Signs a token for `iam`'s user at `state`'s database.
    pub(super) async fn sign(
        &self,
        state: &DbState,
        iam: &IamLogin,
    ) -> Result<Credentials, BrokerError> {
        let name = &state.name;
        let topology = self.topology(state, false).await?;
        // The master user secret's status says nothing of an IAM login: not served.
        let endpoint = match &topology {
            Some(t) => state.config.endpoint.clone().or(t.endpoint.clone()),
            None => state.config.endpoint.clone(),
        };
        let (Some(host), Some(port)) = (endpoint.host.as_deref(), endpoint.port) else {
            // RDS gives an endpoint once the database is available.
            warn!(db = %name, "the database has no endpoint yet to sign a token for");
            return Err(SourceError::Unavailable("the database has no endpoint yet".into()).into());
        };
        let clients = self.clients(state);
        let signer = clients
            .iam
            .as_ref()
            .expect("a token signer exists when IAM databases do");
        let token = self
            .observe(SIGN_AUTH_TOKEN, signer.sign(host, port, &iam.username))
            .await
            .inspect_err(|e| warn!(db = %name, error = %e, "signing an IAM auth token failed"))?;
        let mut credentials = Credentials::from_token(name.clone(), endpoint, token);
        credentials.region.clone_from(&clients.region);
        Ok(credentials)
    }
}
