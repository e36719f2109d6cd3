//! AWS Secrets Manager through the AWS SDK (set up in `aws.rs`, with explicit connect, attempt
//! and operation timeouts): `GetSecretValue` for `AWSCURRENT` or `AWSPENDING` (or any version,
//! for the AWS agent's API), and `DescribeSecret` for rotation facts.

use std::time::{Duration, SystemTime};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretError;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use aws_sdk_secretsmanager::primitives::{Blob, DateTime};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::api::{
    AWSPENDING, BatchAnswer, BoxFuture, Call, MAX_BATCH, RotationFacts, Source, Version,
};
use super::aws::sdk_failure;
use super::error::{MALFORMED_RESPONSE, MAX_ARN, SourceError, bounded, is_version_id};
use crate::credentials::{
    AWSCURRENT, MAX_STAGE_LEN, SecretPayload, SecretVersion, ServiceRefusal, StoredSecret,
    VersionSelector,
};

/// The staging label of a version.
fn stage(version: Version) -> &'static str {
    match version {
        Version::Current => AWSCURRENT,
        Version::Pending => AWSPENDING,
    }
}

/// The most staging labels one version carries (Secrets Manager allows 20).
const MAX_STAGES: usize = 20;

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
                _ => read_failure(&e),
            })?;
        Ok(SecretVersion {
            payload: payload(output.secret_string, output.secret_binary)?,
            version_id: version_id(output.version_id)?,
            arn: arn(output.arn)?,
        })
    }

    /// `GetSecretValue` for the version `selector` names (`AWSCURRENT` when it names none),
    /// with every modelled "no" of the service kept as a refusal with its code and message.
    async fn read_stored_inner(
        &self,
        secret_id: &str,
        selector: &VersionSelector,
    ) -> Result<StoredSecret, SourceError> {
        let stage = match (&selector.version_id, &selector.version_stage) {
            (None, None) => Some(AWSCURRENT.to_owned()),
            (_, stage) => stage.clone(),
        };
        let output = self
            .client
            .get_secret_value()
            .secret_id(secret_id)
            .set_version_id(selector.version_id.clone())
            .set_version_stage(stage)
            .send()
            .await
            .map_err(|e| read_failure(&e))?;
        let stages: Vec<String> = output
            .version_stages
            .unwrap_or_default()
            .into_iter()
            .take(MAX_STAGES)
            .map(|stage| bounded("a version stage", stage, MAX_STAGE_LEN))
            .collect::<Result<_, _>>()?;
        Ok(StoredSecret {
            payload: payload(output.secret_string, output.secret_binary)?,
            version_id: version_id(output.version_id)?,
            arn: arn(output.arn)?,
            name: output
                .name
                .map(|name| bounded("the name", name, MAX_ARN))
                .transpose()?,
            stages,
            created: output
                .created_date
                .and_then(|t| SystemTime::try_from(t).ok()),
        })
    }

    /// `BatchGetSecretValue` for up to [`MAX_BATCH`] ids: the values it returned, each under
    /// the id it was asked by (a name, a full ARN or a partial one). Values that fail the checks
    /// a single read makes are left out, to be read singly.
    async fn read_batch_inner(&self, secret_ids: &[String]) -> Result<BatchAnswer, SourceError> {
        let ids = &secret_ids[..secret_ids.len().min(MAX_BATCH)];
        let output = self
            .client
            .batch_get_secret_value()
            .set_secret_id_list(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| sdk_failure(&e))?;
        let mut found = Vec::new();
        for entry in output.secret_values.unwrap_or_default() {
            let Some(id) = ids
                .iter()
                .find(|id| names_entry(id, entry.name.as_deref(), entry.arn.as_deref()))
            else {
                continue;
            };
            let checked = payload(entry.secret_string, entry.secret_binary).and_then(|payload| {
                Ok(SecretVersion {
                    payload,
                    version_id: version_id(entry.version_id)?,
                    arn: arn(entry.arn)?,
                })
            });
            if let Ok(secret) = checked {
                found.push((id.clone(), secret));
            }
        }
        Ok(found)
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
            pending_version: version(AWSPENDING, Some(AWSCURRENT)),
            current_version: version(AWSCURRENT, None),
            window: rules.and_then(|r| {
                window_length(r.duration(), r.schedule_expression().unwrap_or_default())
            }),
        })
    }
}

/// A secret's value as answered: a string or bytes of at most [`MAX_SECRET_BYTES`].
fn payload(text: Option<String>, blob: Option<Blob>) -> Result<SecretPayload, SourceError> {
    match (text, blob) {
        (Some(text), _) if text.len() <= MAX_SECRET_BYTES => Ok(SecretPayload::String(text.into())),
        (None, Some(blob)) if blob.as_ref().len() <= MAX_SECRET_BYTES => {
            Ok(SecretPayload::Binary(blob.into_inner().into()))
        }
        (None, None) => Err(SourceError::Malformed(format!(
            "{MALFORMED_RESPONSE}: neither SecretString nor SecretBinary"
        ))),
        _ => Err(SourceError::Malformed(format!(
            "{MALFORMED_RESPONSE}: the secret value is larger than {MAX_SECRET_BYTES} bytes"
        ))),
    }
}

/// Whether a batch answer's secret (its `name` and `arn`) is the one asked for by `id`: its
/// name, its ARN, or its ARN without the six characters Secrets Manager appends (a partial
/// ARN).
fn names_entry(id: &str, name: Option<&str>, arn: Option<&str>) -> bool {
    name == Some(id)
        || arn.is_some_and(|arn| {
            arn == id
                || arn
                    .strip_prefix(id)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|suffix| suffix.len() == 6 && id.contains(":secret:"))
        })
}

/// An ARN as answered, checked for length and control characters.
fn arn(arn: Option<String>) -> Result<Option<String>, SourceError> {
    arn.map(|arn| bounded("the ARN", arn, MAX_ARN)).transpose()
}

/// A version id as answered, when it is one.
fn version_id(id: Option<String>) -> Result<String, SourceError> {
    id.filter(|id| is_version_id(id)).ok_or_else(|| {
        SourceError::Malformed(format!(
            "{MALFORMED_RESPONSE}: the version id is missing or not one"
        ))
    })
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
            Call::ReadBatch => "BatchGetSecretValue",
        }
    }

    fn read_batch<'a>(
        &'a self,
        secret_ids: &'a [String],
    ) -> Option<BoxFuture<'a, Result<BatchAnswer, SourceError>>> {
        Some(Box::pin(self.read_batch_inner(secret_ids)))
    }

    fn read<'a>(
        &'a self,
        secret_id: &'a str,
        version: Version,
    ) -> BoxFuture<'a, Result<SecretVersion, SourceError>> {
        Box::pin(self.fetch_inner(secret_id, version))
    }

    fn read_stored<'a>(
        &'a self,
        secret_id: &'a str,
        selector: &'a VersionSelector,
    ) -> BoxFuture<'a, Result<StoredSecret, SourceError>> {
        Box::pin(self.read_stored_inner(secret_id, selector))
    }

    fn rotation<'a>(
        &'a self,
        secret_id: &'a str,
    ) -> Option<BoxFuture<'a, Result<RotationFacts, SourceError>>> {
        Some(Box::pin(self.describe_inner(secret_id)))
    }
}

/// Sorts a failed `GetSecretValue`: a definite "no" of the service (no such secret or version,
/// a bad parameter, a key it cannot decrypt with, access denied, an unknown client) is a
/// refusal with its code and message; throttling, server errors, answers that are none and
/// every failure to get an answer are sorted by [`sdk_failure`].
fn read_failure(e: &SdkError<GetSecretValueError, HttpResponse>) -> SourceError {
    let refused = match e.as_service_error() {
        Some(
            GetSecretValueError::ResourceNotFoundException(_)
            | GetSecretValueError::InvalidRequestException(_)
            | GetSecretValueError::InvalidParameterException(_)
            | GetSecretValueError::DecryptionFailure(_),
        ) => true,
        Some(GetSecretValueError::InternalServiceError(_)) | None => false,
        // Unmodelled: a definite "no" unless it is throttling, a server error or a success
        // body the SDK could not read.
        Some(other) => {
            let code = other.code().unwrap_or_default();
            !e.raw_response()
                .is_some_and(|r| r.status().is_server_error() || r.status().is_success())
                && !aws_runtime::retries::classifiers::THROTTLING_ERRORS.contains(&code)
                && !aws_runtime::retries::classifiers::TRANSIENT_ERRORS.contains(&code)
        }
    };
    match e.as_service_error() {
        Some(err) if refused => {
            SourceError::Refused(ServiceRefusal::new(err.code(), err.message()))
        }
        _ => sdk_failure(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_answer_is_matched_to_the_name_the_arn_or_the_partial_arn_it_was_asked_by() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf";
        let (name, arn) = (Some("prod/db"), Some(arn));
        assert!(names_entry("prod/db", name, arn));
        assert!(names_entry(arn.unwrap(), name, arn));
        assert!(names_entry(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db",
            name,
            arn
        ));
        assert!(!names_entry("prod", name, arn));
        assert!(!names_entry("prod/d", name, arn));
        assert!(!names_entry(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod",
            name,
            arn
        ));
    }

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
