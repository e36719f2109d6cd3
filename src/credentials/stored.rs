//! A secret as its store keeps it, for the AWS agent's API: any version, by stage or id, with
//! its names, stages and creation time; and the store's own refusal of a read (its error code
//! and message), both bounded before they are kept.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use secrecy::ExposeSecret;
use serde::Serialize;

use super::secret::SecretPayload;

/// The staging label of the version in use.
pub const AWSCURRENT: &str = "AWSCURRENT";

/// Longest version stage or secret id a caller may ask for (Secrets Manager's own limits: 256
/// characters for a stage, 2048 for an id).
pub const MAX_STAGE_LEN: usize = 256;
pub const MAX_SECRET_ID_LEN: usize = 2048;

/// Which version of a secret a caller asks for: by id, by stage, both, or neither (the
/// current one). Part of the cache key, as the caller spelled it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct VersionSelector {
    pub version_id: Option<String>,
    pub version_stage: Option<String>,
}

impl VersionSelector {
    /// Whether this names the current version and nothing else.
    pub fn is_current(&self) -> bool {
        self.version_id.is_none()
            && self
                .version_stage
                .as_deref()
                .is_none_or(|stage| stage == AWSCURRENT)
    }
}

/// One version of a secret with what the store says about it.
#[derive(Debug)]
pub struct StoredSecret {
    pub arn: Option<String>,
    pub name: Option<String>,
    pub version_id: String,
    pub payload: SecretPayload,
    pub stages: Vec<String>,
    pub created: Option<SystemTime>,
}

/// A definite answer of the store that refuses a read (no such secret, access denied, a bad
/// parameter): its error code and message, checked for shape, never holding secret content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRefusal {
    code: String,
    message: String,
}

/// Whether `code` has the shape of a service error code: 1 to 64 letters, digits and `.:#_-`.
/// Codes come from responses: anything else is not kept, logged or echoed.
pub fn is_error_code(code: &str) -> bool {
    (1..=64).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:#_-".contains(&b))
}

/// Longest refusal message kept; a longer one is cut at a character boundary.
const MAX_MESSAGE_LEN: usize = 512;

impl ServiceRefusal {
    /// A refusal with `code` (kept when it has the shape of an error code: 1 to 64 letters,
    /// digits and `.:#_-`; else a placeholder) and `message` (control characters dropped, at
    /// most 512 bytes).
    pub fn new(code: Option<&str>, message: Option<&str>) -> Self {
        let code = match code {
            Some(code) if is_error_code(code) => code.to_owned(),
            _ => "UnknownError".to_owned(),
        };
        let mut message: String = message
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        if message.len() > MAX_MESSAGE_LEN {
            let mut end = MAX_MESSAGE_LEN;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Self { code, message }
    }

    /// The store's error code (`ResourceNotFoundException`, `AccessDeniedException`, ...).
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The store's message, bounded.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for ServiceRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the service answered {}", self.code)
    }
}

/// A fetched secret version and its body in the agent's `GetSecretValue` JSON, rendered once,
/// on first use, and shared by every request.
#[derive(Debug)]
pub struct StoredVersion {
    pub secret: StoredSecret,
    body: OnceLock<Bytes>,
}

impl From<StoredSecret> for StoredVersion {
    fn from(secret: StoredSecret) -> Self {
        Self {
            secret,
            body: OnceLock::new(),
        }
    }
}

/// The agent's answer: `GetSecretValue`'s fields, in its order. `CreatedDate` is epoch seconds
/// with milliseconds, as a string.
#[derive(Serialize)]
struct AgentBody<'a> {
    #[serde(rename = "ARN")]
    arn: Option<&'a str>,
    #[serde(rename = "Name")]
    name: Option<&'a str>,
    #[serde(rename = "VersionId")]
    version_id: &'a str,
    #[serde(rename = "SecretString", skip_serializing_if = "Option::is_none")]
    secret_string: Option<&'a str>,
    #[serde(rename = "SecretBinary", skip_serializing_if = "Option::is_none")]
    secret_binary: Option<String>,
    #[serde(rename = "VersionStages")]
    version_stages: &'a [String],
    #[serde(rename = "CreatedDate")]
    created_date: Option<String>,
}

impl StoredVersion {
    /// The body of the agent's answer for this version.
    pub fn agent_json(&self) -> &Bytes {
        self.body.get_or_init(|| {
            let secret = &self.secret;
            let (secret_string, secret_binary) = match &secret.payload {
                SecretPayload::String(text) => (Some(text.expose_secret()), None),
                SecretPayload::Binary(bytes) => (None, Some(BASE64.encode(bytes.expose_secret()))),
            };
            let created_date = secret.created.map(|created| {
                let millis = created
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                #[allow(clippy::cast_precision_loss)] // epoch milliseconds fit an f64 exactly
                let seconds = millis as f64 / 1000.0;
                seconds.to_string()
            });
            let body = AgentBody {
                arn: secret.arn.as_deref(),
                name: secret.name.as_deref(),
                version_id: &secret.version_id,
                secret_string,
                secret_binary,
                version_stages: &secret.stages,
                created_date,
            };
            Bytes::from(serde_json::to_vec(&body).expect("strings always serialize"))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_refusal_keeps_only_a_code_shaped_code_and_a_bounded_message_without_control_characters() {
        let refusal =
            ServiceRefusal::new(Some("AccessDeniedException"), Some("no\naccess\u{1b}[31m"));
        assert_eq!(refusal.code(), "AccessDeniedException");
        assert_eq!(refusal.message(), "noaccess[31m");
        for bad in ["", "has space", "new\nline", &"x".repeat(65)] {
            assert_eq!(
                ServiceRefusal::new(Some(bad), None).code(),
                "UnknownError",
                "{bad:?}"
            );
        }
        let long = ServiceRefusal::new(None, Some(&"é".repeat(400)));
        assert!(long.message().len() <= 512);
        assert!(long.message().chars().all(|c| c == 'é'));
    }

    #[test]
    fn the_agent_body_has_the_fields_in_order_binary_as_base64_and_the_date_as_a_string() {
        let version = StoredVersion::from(StoredSecret {
            arn: Some("arn:x".into()),
            name: Some("n".into()),
            version_id: "v1".into(),
            payload: SecretPayload::Binary(vec![0u8, 255, 1].into()),
            stages: vec![AWSCURRENT.into()],
            created: Some(UNIX_EPOCH + Duration::from_millis(1_569_534_789_046)),
        });
        assert_eq!(
            std::str::from_utf8(version.agent_json()).unwrap(),
            r#"{"ARN":"arn:x","Name":"n","VersionId":"v1","SecretBinary":"AP8B","VersionStages":["AWSCURRENT"],"CreatedDate":"1569534789.046"}"#
        );
        let whole = StoredVersion::from(StoredSecret {
            arn: None,
            name: None,
            version_id: "v2".into(),
            payload: SecretPayload::String("{\"a\":1}".to_owned().into()),
            stages: Vec::new(),
            created: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        });
        assert_eq!(
            std::str::from_utf8(whole.agent_json()).unwrap(),
            r#"{"ARN":null,"Name":null,"VersionId":"v2","SecretString":"{\"a\":1}","VersionStages":[],"CreatedDate":"1700000000"}"#
        );
    }
}
