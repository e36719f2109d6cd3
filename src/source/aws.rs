//! What every AWS source shares: the SDK configuration (credentials chain, region, endpoint,
//! the broker's timeouts and retry policy), loaded once, and the sorting of SDK failures.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::error::{MALFORMED_RESPONSE, SourceError};
use crate::config::AwsConfig;
use crate::credentials::is_error_code;

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
    if let Some(path) = &config.credentials_file {
        loader = loader.profile_files(
            EnvConfigFiles::builder()
                .include_default_config_file(true)
                .with_file(EnvConfigFileKind::Credentials, path)
                .build(),
        );
    }
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// Sorts an AWS SDK failure that is not a definite service answer, by its type: timeouts (of an
/// attempt, the operation or the connection), answers the SDK could not parse (malformed: a
/// success status whose body is not the operation's output, or a response that is no HTTP
/// answer), and everything else as unavailable. The detail never holds anything of a response
/// but a service error code, checked for shape: the SDK's own `Debug` and `Display` forms can
/// carry the raw response, body included, so they are never used.
pub(crate) fn sdk_failure<E>(err: &SdkError<E, HttpResponse>) -> SourceError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::TimeoutError(_) => SourceError::Timeout("no answer within the timeout".into()),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            SourceError::Timeout("connecting timed out".into())
        }
        SdkError::DispatchFailure(failure) => {
            let kind = if failure.is_io() {
                "a connection error"
            } else if failure.is_user() {
                "a request error"
            } else {
                "a dispatch error"
            };
            SourceError::Unavailable(format!("the request failed with {kind}"))
        }
        SdkError::ResponseError(_) => SourceError::Malformed(MALFORMED_RESPONSE.into()),
        // The SDK reports a success body it cannot parse as an unmodelled service error.
        SdkError::ServiceError(service) if service.raw().status().is_success() => {
            SourceError::Malformed(MALFORMED_RESPONSE.into())
        }
        SdkError::ServiceError(service) => SourceError::Unavailable(format!(
            "the service answered {}",
            error_code(service.err().code())
        )),
        _ => SourceError::Unavailable("the request could not be made".into()),
    }
}

/// A service error code as it may be logged: the code when it has the shape of one (at most 64
/// letters, digits and `.:#_-`), else a placeholder. The code comes from the response.
fn error_code(code: Option<&str>) -> &str {
    match code {
        Some(code) if is_error_code(code) => code,
        Some(_) => "an error code that is not one",
        None => "an error without a code",
    }
}
