//! RDS IAM authentication tokens, signed here with the AWS SDK's own `SigV4` signer: a presigned
//! `connect` request for `rds-db`, written as botocore's `generate_db_auth_token` writes it.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::api::{BoxFuture, TokenSigner};
use super::error::SourceError;
use crate::credentials::AuthToken;

/// How long RDS takes a token after its signing (the most it allows).
pub(crate) const TOKEN_LIFETIME: Duration = Duration::from_mins(15);

/// What a query value may hold as it is: RFC 3986's unreserved characters (botocore's
/// `percent_encode`).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The signing parameters in the order botocore writes them; the signature comes last.
const PARAM_ORDER: [&str; 6] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Security-Token",
];

/// Signs tokens with one credentials provider (the broker's chain) in one region.
#[derive(Debug)]
pub(crate) struct IamSigner {
    credentials: Option<SharedCredentialsProvider>,
    region: Option<String>,
}

impl IamSigner {
    pub(crate) fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self {
            credentials: sdk.credentials_provider(),
            region: sdk.region().map(ToString::to_string),
        }
    }
}

impl TokenSigner for IamSigner {
    fn sign<'a>(
        &'a self,
        host: &'a str,
        port: u16,
        username: &'a str,
    ) -> BoxFuture<'a, Result<AuthToken, SourceError>> {
        Box::pin(async move {
            let region = self.region.as_deref().ok_or_else(|| {
                SourceError::Unavailable("no AWS region is configured to sign a token for".into())
            })?;
            let provider = self.credentials.as_ref().ok_or_else(|| {
                SourceError::Unavailable("no AWS credentials provider is configured".into())
            })?;
            let credentials = provider
                .provide_credentials()
                .await
                .map_err(|e| credentials_failure(&e))?;
            let expiry = credentials.expiry();
            let identity = Identity::from(credentials);
            let now = SystemTime::now();
            let token = presign(&identity, region, host, port, username, now)?;
            let signed_at = whole_seconds(now);
            let lifetime_end = signed_at + TOKEN_LIFETIME;
            let expires_at = expiry.map_or(lifetime_end, |e| e.min(lifetime_end));
            Ok(AuthToken::new(
                username.to_owned(),
                token,
                signed_at,
                expires_at,
            ))
        })
    }
}

/// The token: `host:port/?Action=connect&DBUser=...` and the signing parameters, signed at `at`.
fn presign(
    identity: &Identity,
    region: &str,
    host: &str,
    port: u16,
    username: &str,
    at: SystemTime,
) -> Result<String, SourceError> {
    let unsignable = |_| SourceError::Malformed("the token's request could not be signed".into());
    let mut settings = SigningSettings::default();
    settings.expires_in = Some(TOKEN_LIFETIME);
    settings.signature_location = SignatureLocation::QueryParams;
    let params = v4::SigningParams::builder()
        .identity(identity)
        .region(region)
        .name("rds-db")
        .time(at)
        .settings(settings)
        .build()
        .map_err(|_| {
            SourceError::Malformed("the token's signing parameters are incomplete".into())
        })?;
    let user = utf8_percent_encode(username, QUERY_VALUE).to_string();
    let target = format!("{host}:{port}/?Action=connect&DBUser={user}");
    let url = format!("https://{target}");
    let request = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::empty())
        .map_err(unsignable)?;
    let (instructions, signature) = sign(request, &params.into())
        .map_err(|_| SourceError::Malformed("the token could not be signed".into()))?
        .into_parts();
    let mut token = target;
    for name in PARAM_ORDER {
        if let Some((_, value)) = instructions.params().iter().find(|(n, _)| *n == name) {
            token.push('&');
            token.push_str(name);
            token.push('=');
            token.extend(utf8_percent_encode(value, QUERY_VALUE));
        }
    }
    token.push_str("&X-Amz-Signature=");
    token.push_str(&signature);
    Ok(token)
}

/// `at` without its fraction of a second, as the token's `X-Amz-Date` holds it.
fn whole_seconds(at: SystemTime) -> SystemTime {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_secs(since.as_secs())
}

/// Sorts a failure to load the AWS credentials by its kind; its message is not kept (a
/// provider's error may quote what an endpoint answered).
fn credentials_failure(err: &CredentialsError) -> SourceError {
    let kind = match err {
        CredentialsError::ProviderTimedOut(_) => {
            return SourceError::Timeout("loading the AWS credentials timed out".into());
        }
        CredentialsError::CredentialsNotLoaded(_) => "no provider had any",
        CredentialsError::InvalidConfiguration(_) => "the configuration is invalid",
        CredentialsError::ProviderError(_) => "the provider failed",
        _ => "an unexpected error",
    };
    SourceError::Unavailable(format!("loading the AWS credentials failed: {kind}"))
}

#[cfg(test)]
mod tests {
    use aws_credential_types::Credentials;

    use super::*;

    fn identity(session_token: Option<&str>) -> Identity {
        Identity::from(Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token.map(str::to_owned),
            None,
            "test",
        ))
    }

    #[test]
    fn a_token_is_host_port_action_user_then_the_signing_parameters_signature_last() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_hours(499_000);
        let sign = |identity: &Identity| {
            presign(identity, "us-east-1", "db.example", 5432, "app_user", at).unwrap()
        };
        let token = sign(&identity(Some("tok/en+=")));
        let expected_prefix = "db.example:5432/?Action=connect&DBUser=app_user&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261204%2Fus-east-1%2Frds-db%2Faws4_request&X-Amz-Date=20261204T160000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token=tok%2Fen%2B%3D&X-Amz-Signature=";
        assert!(token.starts_with(expected_prefix), "{token}");
        let signature = &token[expected_prefix.len()..];
        assert_eq!(signature.len(), 64);
        assert!(signature.bytes().all(|b| b.is_ascii_hexdigit()));
        let without = sign(&identity(None));
        assert!(!without.contains("Security-Token"));
        assert_ne!(&without[without.len() - 64..], signature);
    }
}
