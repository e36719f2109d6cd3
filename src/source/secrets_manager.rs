//! AWS Secrets Manager through the AWS SDK: `GetSecretValue` for `AWSCURRENT` (or `AWSPENDING`)
//! and `DescribeSecret`, with explicit connect, attempt and operation timeouts so that a hung
//! endpoint can never hang a request.

use std::time::SystemTime;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretError;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use aws_sdk_secretsmanager::primitives::DateTime;

use super::{
    BoxFuture, MALFORMED_RESPONSE, MAX_ARN, SecretMetadata, Source, SourceError, Stage, bounded,
    is_version_id, sdk_failure,
};
use crate::config::AwsConfig;
use crate::credentials::{SecretPayload, SecretVersion};

/// The largest secret value kept: Secrets Manager stores at most 64 KiB.
const MAX_SECRET_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub(crate) struct SecretsManagerSource {
    client: Client,
}

/// Loads the shared AWS SDK configuration (credentials chain, region, endpoint) with the broker's
/// timeouts and retry policy applied.
pub(crate) async fn sdk_config(config: &AwsConfig) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(config.connect_timeout)
                .operation_attempt_timeout(config.attempt_timeout)
                .operation_timeout(config.operation_timeout)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts));
    if let Some(region) = &config.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

impl SecretsManagerSource {
    pub(crate) fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self {
            client: Client::new(sdk),
        }
    }

    async fn fetch_inner(
        &self,
        secret_id: &str,
        stage: Stage,
    ) -> Result<SecretVersion, SourceError> {
        // The stage is always sent, AWSCURRENT included: it is the contract, and it avoids
        // reading an old version from implementations that cache the default.
        let output = self
            .client
            .get_secret_value()
            .secret_id(secret_id)
            .version_stage(stage.label())
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                // Deleted for good, or scheduled for deletion: either way not to be served.
                Some(
                    GetSecretValueError::ResourceNotFoundException(_)
                    | GetSecretValueError::InvalidRequestException(_),
                ) => SourceError::NotFound(secret_id.to_owned()),
                _ => sdk_failure(&e),
            })?;
        let payload = match (output.secret_string, output.secret_binary) {
            (Some(text), _) if text.len() <= MAX_SECRET_BYTES => SecretPayload::String(text.into()),
            (None, Some(blob)) if blob.as_ref().len() <= MAX_SECRET_BYTES => {
                SecretPayload::Binary(blob.into_inner().into())
            }
            (None, None) => {
                return Err(SourceError::Malformed(format!(
                    "{MALFORMED_RESPONSE}: neither SecretString nor SecretBinary"
                )));
            }
            _ => {
                return Err(SourceError::Malformed(format!(
                    "{MALFORMED_RESPONSE}: the secret value is larger than {MAX_SECRET_BYTES} bytes"
                )));
            }
        };
        let version_id = output
            .version_id
            .filter(|id| is_version_id(id))
            .ok_or_else(|| {
                SourceError::Malformed(format!(
                    "{MALFORMED_RESPONSE}: the version id is missing or not one"
                ))
            })?;
        let arn = output
            .arn
            .map(|arn| bounded("the ARN", arn, MAX_ARN))
            .transpose()?;
        Ok(SecretVersion {
            payload,
            version_id,
            arn,
        })
    }

    async fn describe_inner(&self, secret_id: &str) -> Result<SecretMetadata, SourceError> {
        let output = self
            .client
            .describe_secret()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(DescribeSecretError::ResourceNotFoundException(_)) => {
                    SourceError::NotFound(secret_id.to_owned())
                }
                _ => sdk_failure(&e),
            })?;
        let time = |t: Option<&DateTime>| t.and_then(|t| SystemTime::try_from(*t).ok());
        let pending_version = output.version_ids_to_stages().and_then(|versions| {
            versions
                .iter()
                .find(|(_, stages)| {
                    stages.iter().any(|s| s == Stage::Pending.label())
                        && !stages.iter().any(|s| s == Stage::Current.label())
                })
                .map(|(id, _)| id.clone())
                .filter(|id| is_version_id(id))
        });
        Ok(SecretMetadata {
            rotation_enabled: output.rotation_enabled().unwrap_or(false),
            last_rotated: time(output.last_rotated_date()),
            next_rotation: time(output.next_rotation_date()),
            pending_version,
        })
    }
}

impl Source for SecretsManagerSource {
    fn fetch_operation(&self) -> &'static str {
        "GetSecretValue"
    }

    fn fetch<'a>(
        &'a self,
        secret_id: &'a str,
        stage: Stage,
    ) -> BoxFuture<'a, Result<SecretVersion, SourceError>> {
        Box::pin(self.fetch_inner(secret_id, stage))
    }

    fn describe<'a>(
        &'a self,
        secret_id: &'a str,
    ) -> Option<BoxFuture<'a, Result<SecretMetadata, SourceError>>> {
        Some(Box::pin(self.describe_inner(secret_id)))
    }
}
