//! What a request of the AWS agent's API asks for, read as the agent reads it: the query style
//! (`/secretsmanager/get?secretId=…`) and the path style (`{path_prefix}{secretId}`, the id
//! taken as it stands), with `versionId`, `versionStage` and `refreshNow`.

use crate::broker::SecretKey;
use crate::credentials::{MAX_SECRET_ID_LEN, MAX_STAGE_LEN, VersionSelector};

/// A secret read the request asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SecretRead {
    pub(super) key: SecretKey,
    pub(super) refresh_now: bool,
}

/// Why a request is not a secret read, each answered 400 with the agent's text.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum BadRead {
    /// A parameter the agent does not know (its name when it is short visible ASCII).
    UnknownParameter(Option<String>),
    MissingSecretId,
    MissingPathSecretId,
    InvalidRefreshNow,
    /// A value no secret, version id or stage can have (too long, control characters).
    InvalidValue(&'static str),
}

impl BadRead {
    /// The plain-text body the agent answers with.
    pub(super) fn text(&self) -> String {
        match self {
            Self::UnknownParameter(Some(name)) => format!("unknown parameter: {name}"),
            Self::UnknownParameter(None) => "unknown parameter".to_owned(),
            Self::MissingSecretId => "missing parameter secretId".to_owned(),
            Self::MissingPathSecretId => "missing secret ID".to_owned(),
            Self::InvalidRefreshNow => "invalid refreshNow value".to_owned(),
            Self::InvalidValue(name) => format!("invalid parameter: {name}"),
        }
    }
}

/// Which style the request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Style {
    Query,
    Path,
}

/// Reads a request of `style`: `path_id` is the path after the prefix (path style), `query`
/// the raw query string.
pub(super) fn read(
    style: Style,
    path_id: &str,
    query: Option<&str>,
) -> Result<SecretRead, BadRead> {
    let mut secret_id = match style {
        Style::Path => Some(path_id.to_owned()),
        Style::Query => None,
    };
    let mut selector = VersionSelector::default();
    let mut refresh_now = false;
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match (&*name, style) {
            ("secretId", Style::Query) => secret_id = Some(value.into_owned()),
            ("versionId", _) => selector.version_id = Some(value.into_owned()),
            ("versionStage", _) => selector.version_stage = Some(value.into_owned()),
            ("refreshNow", _) => {
                refresh_now = match value.to_ascii_lowercase().as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(BadRead::InvalidRefreshNow),
                };
            }
            _ => return Err(BadRead::UnknownParameter(echoable(&name))),
        }
    }
    let secret_id = match (secret_id, style) {
        (Some(id), _) if !id.is_empty() => id,
        (_, Style::Query) => return Err(BadRead::MissingSecretId),
        (_, Style::Path) => return Err(BadRead::MissingPathSecretId),
    };
    check(&secret_id, MAX_SECRET_ID_LEN, "secretId")?;
    if let Some(id) = &selector.version_id {
        check(id, 64, "versionId")?;
    }
    if let Some(stage) = &selector.version_stage {
        check(stage, MAX_STAGE_LEN, "versionStage")?;
    }
    Ok(SecretRead {
        key: SecretKey {
            secret_id,
            selector,
        },
        refresh_now,
    })
}

/// A value is 1 to `max` bytes without control characters.
fn check(value: &str, max: usize, name: &'static str) -> Result<(), BadRead> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(BadRead::InvalidValue(name));
    }
    Ok(())
}

/// A parameter name as it may be echoed: at most 64 visible ASCII characters, else none.
fn echoable(name: &str) -> Option<String> {
    ((1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(q: &str) -> Result<SecretRead, BadRead> {
        read(Style::Query, "", Some(q))
    }

    #[test]
    fn the_query_style_reads_the_agents_four_parameters() {
        let read = query("secretId=prod%2Fdb&versionStage=AWSPREVIOUS&refreshNow=TRUE").unwrap();
        assert_eq!(read.key.secret_id, "prod/db");
        assert_eq!(
            read.key.selector.version_stage.as_deref(),
            Some("AWSPREVIOUS")
        );
        assert!(read.refresh_now);
        let read = query("secretId=a+b&versionId=v1&refreshNow=0").unwrap();
        assert_eq!(read.key.secret_id, "a b");
        assert_eq!(read.key.selector.version_id.as_deref(), Some("v1"));
        assert!(!read.refresh_now);
    }

    #[test]
    fn bad_parameters_are_answered_with_the_agents_texts() {
        assert_eq!(
            query("secretId=x&foo=1").unwrap_err().text(),
            "unknown parameter: foo"
        );
        assert_eq!(query("").unwrap_err().text(), "missing parameter secretId");
        assert_eq!(
            query("secretId=").unwrap_err().text(),
            "missing parameter secretId"
        );
        for bad in ["yes", "", "2", "truee"] {
            assert_eq!(
                query(&format!("secretId=x&refreshNow={bad}")).unwrap_err(),
                BadRead::InvalidRefreshNow
            );
        }
        // The path style takes its id from the path: secretId is unknown there.
        assert_eq!(
            read(Style::Path, "x", Some("secretId=y"))
                .unwrap_err()
                .text(),
            "unknown parameter: secretId"
        );
        assert_eq!(
            read(Style::Path, "", None).unwrap_err().text(),
            "missing secret ID"
        );
    }

    #[test]
    fn hostile_values_are_refused_and_never_echoed() {
        let long_name = "n".repeat(100);
        assert_eq!(
            query(&format!("secretId=x&{long_name}=1"))
                .unwrap_err()
                .text(),
            "unknown parameter"
        );
        assert_eq!(
            query("secretId=x&%0Aevil=1").unwrap_err().text(),
            "unknown parameter"
        );
        assert_eq!(
            query("secretId=a%0Ab").unwrap_err(),
            BadRead::InvalidValue("secretId")
        );
        let long_id = "a".repeat(MAX_SECRET_ID_LEN + 1);
        assert_eq!(
            query(&format!("secretId={long_id}")).unwrap_err(),
            BadRead::InvalidValue("secretId")
        );
        assert_eq!(
            query(&format!("secretId=x&versionId={}", "v".repeat(65))).unwrap_err(),
            BadRead::InvalidValue("versionId")
        );
    }

    #[test]
    fn the_path_style_takes_the_id_as_it_stands() {
        let read = read(Style::Path, "prod/a%2Fb", Some("versionStage=AWSPENDING")).unwrap();
        assert_eq!(read.key.secret_id, "prod/a%2Fb");
        assert_eq!(
            read.key.selector.version_stage.as_deref(),
            Some("AWSPENDING")
        );
    }
}
