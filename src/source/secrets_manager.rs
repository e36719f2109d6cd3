//! AWS Secrets Manager through the AWS SDK (set up in `aws.rs`, with explicit connect, attempt
//! and operation timeouts): `GetSecretValue` for `AWSCURRENT` or `AWSPENDING`, and
//! `DescribeSecret` for rotation facts.

use std::time::{Duration, SystemTime};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretError;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use aws_sdk_secretsmanager::primitives::DateTime;

use super::api::{BoxFuture, Call, RotationFacts, Source, Version};
use super::aws::sdk_failure;
use super::error::{MALFORMED_RESPONSE, MAX_ARN, SourceError, bounded, is_version_id};
use crate::credentials::{SecretPayload, SecretVersion};

/// The staging label of a version.
fn stage(version: Version) -> &'static str {
    match version {
        Version::Current => CURRENT,
        Version::Pending => PENDING,
    }
}

const CURRENT: &str = "AWSCURRENT";
const PENDING: &str = "AWSPENDING";

/// The largest secret value kept: Secrets Manager stores at most 64 KiB.
const MAX_SECRET_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub(crate) struct SecretsManagerSource {
    client: Client,
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
        version: Version,
    ) -> Result<SecretVersion, SourceError> {
        // The stage is always sent, AWSCURRENT included: it is the contract, and it avoids
        // reading an old version from implementations that cache the default.
        let output = self
            .client
            .get_secret_value()
            .secret_id(secret_id)
            .version_stage(stage(version))
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

    async fn describe_inner(&self, secret_id: &str) -> Result<RotationFacts, SourceError> {
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
        // The version holding `wanted` and not `unless`: ids that are no version ids (a broken
        // or hostile endpoint) are never kept.
        let version = |wanted: &str, unless: Option<&str>| {
            output.version_ids_to_stages().and_then(|versions| {
                versions
                    .iter()
                    .find(|(_, stages)| {
                        stages.iter().any(|s| s == wanted)
                            && unless.is_none_or(|u| !stages.iter().any(|s| s == u))
                    })
                    .map(|(id, _)| id.clone())
                    .filter(|id| is_version_id(id))
            })
        };
        let rules = output.rotation_rules();
        Ok(RotationFacts {
            rotation_enabled: output.rotation_enabled().unwrap_or(false),
            last_rotated: time(output.last_rotated_date()),
            next_rotation: time(output.next_rotation_date()),
            pending_version: version(PENDING, Some(CURRENT)),
            current_version: version(CURRENT, None),
            window: rules.and_then(|r| {
                window_length(r.duration(), r.schedule_expression().unwrap_or_default())
            }),
        })
    }
}

/// The rotation window's length: `Duration` (`"3h"`, 1 to 24 hours), else one hour for a
/// schedule in hours; `None` (until the end of the UTC day) for anything else.
fn window_length(duration: Option<&str>, schedule: &str) -> Option<Duration> {
    let hours = |text: &str| {
        let hours = text.strip_suffix('h')?.parse::<u64>().ok()?;
        (1..=24)
            .contains(&hours)
            .then(|| Duration::from_hours(hours))
    };
    match duration {
        Some(text) => hours(text),
        None => schedule.contains("hour").then_some(Duration::from_hours(1)),
    }
}

impl Source for SecretsManagerSource {
    fn operation(&self, call: Call) -> &'static str {
        match call {
            Call::Read => "GetSecretValue",
            Call::Rotation => "DescribeSecret",
        }
    }

    fn read<'a>(
        &'a self,
        secret_id: &'a str,
        version: Version,
    ) -> BoxFuture<'a, Result<SecretVersion, SourceError>> {
        Box::pin(self.fetch_inner(secret_id, version))
    }

    fn rotation<'a>(
        &'a self,
        secret_id: &'a str,
    ) -> Option<BoxFuture<'a, Result<RotationFacts, SourceError>>> {
        Some(Box::pin(self.describe_inner(secret_id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_comes_from_the_duration_or_an_hourly_schedule() {
        assert_eq!(
            window_length(Some("3h"), "rate(7 days)"),
            Some(Duration::from_hours(3))
        );
        assert_eq!(
            window_length(None, "rate(4 hours)"),
            Some(Duration::from_hours(1))
        );
        assert_eq!(window_length(None, "rate(7 days)"), None);
        assert_eq!(window_length(None, ""), None);
        for bad in ["0h", "25h", "3", "h", "-1h", "3m", "99999999999999999999h"] {
            assert_eq!(window_length(Some(bad), ""), None, "{bad}");
        }
    }
}
