//! AWS Secrets Manager through the AWS SDK: `GetSecretValue` for `AWSCURRENT`, with explicit
//! connect, attempt and operation timeouts so that a hung endpoint can never hang a request.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, SdkError};
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;

use super::{BoxFuture, Source, SourceError};
use crate::config::AwsConfig;
use crate::credentials::{SecretPayload, SecretVersion};

/// The staging label of the version that is in use.
const AWSCURRENT: &str = "AWSCURRENT";

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

    async fn fetch_inner(&self, secret_id: &str) -> Result<SecretVersion, SourceError> {
        let output = self
            .client
            .get_secret_value()
            .secret_id(secret_id)
            .version_stage(AWSCURRENT)
            .send()
            .await
            .map_err(|e| classify(secret_id, &e))?;
        let payload = if let Some(text) = output.secret_string {
            SecretPayload::String(text.into())
        } else if let Some(blob) = output.secret_binary {
            SecretPayload::Binary(blob.into_inner().into())
        } else {
            return Err(SourceError::Unavailable(format!(
                "secret {secret_id} has neither SecretString nor SecretBinary"
            )));
        };
        Ok(SecretVersion {
            payload,
            version_id: output.version_id.unwrap_or_default(),
            arn: output.arn,
        })
    }
}

impl Source for SecretsManagerSource {
    fn operation(&self) -> &'static str {
        "GetSecretValue"
    }

    fn fetch<'a>(
        &'a self,
        secret_id: &'a str,
    ) -> BoxFuture<'a, Result<SecretVersion, SourceError>> {
        Box::pin(self.fetch_inner(secret_id))
    }
}

/// Sorts an SDK error into the broker's kinds by its type, never by message text or status code.
fn classify<R>(secret_id: &str, err: &SdkError<GetSecretValueError, R>) -> SourceError
where
    R: std::fmt::Debug,
{
    let detail = DisplayErrorContext(err).to_string();
    match err {
        SdkError::TimeoutError(_) => SourceError::Timeout(detail),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => SourceError::Timeout(detail),
        SdkError::ServiceError(service)
            if matches!(
                service.err(),
                GetSecretValueError::ResourceNotFoundException(_)
            ) =>
        {
            SourceError::NotFound(secret_id.to_owned())
        }
        _ => SourceError::Unavailable(detail),
    }
}
