//! Secret values as a source returns them, and their parsing as database credentials in the
//! shapes seen in the field (RDS-managed `username`/`password`, or the classic shape with the
//! connection fields). Nothing of a secret's content reaches an error.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use super::endpoint::Endpoint;

/// A secret value as a source returned it, before parsing.
pub enum SecretPayload {
    String(SecretString),
    Binary(secrecy::SecretSlice<u8>),
}

impl fmt::Debug for SecretPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::String(_) => f.write_str("SecretPayload::String([REDACTED])"),
            Self::Binary(_) => f.write_str("SecretPayload::Binary([REDACTED])"),
        }
    }
}

/// One version of a secret fetched from a source.
#[derive(Debug)]
pub struct SecretVersion {
    pub payload: SecretPayload,
    pub version_id: String,
    /// The secret's ARN; `None` for sources that have none (the file source).
    pub arn: Option<String>,
}

/// Why a secret could not be read as database credentials. Never carries secret content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedSecret {
    #[error("SecretBinary is not UTF-8")]
    BinaryNotUtf8,
    #[error("the secret is not valid JSON (line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    #[error("the secret JSON is not an object")]
    NotAnObject,
    #[error("field `{0}` is missing")]
    MissingField(&'static str),
    #[error("field `{0}` has the wrong type or an invalid value")]
    InvalidField(&'static str),
}

/// A user name and its password, as a secret holds them.
pub(crate) struct Login {
    pub(crate) username: String,
    pub(crate) password: SecretString,
}

/// Reads the login (`username`, `password`) of a secret.
pub(crate) fn login(secret: &SecretPayload) -> Result<Login, MalformedSecret> {
    login_of(&fields(secret)?)
}

/// Reads the login and the optional connection fields (`host`, `port`, `dbname`, `engine`).
pub(crate) fn login_and_endpoint(
    secret: &SecretPayload,
) -> Result<(Login, Endpoint), MalformedSecret> {
    let fields = fields(secret)?;
    let login = login_of(&fields)?;
    let endpoint = Endpoint {
        engine: optional_string(&fields, "engine")?,
        host: optional_string(&fields, "host")?,
        port: optional_port(&fields)?,
        dbname: optional_string(&fields, "dbname")?,
        reader_host: None,
    };
    Ok((login, endpoint))
}

fn login_of(fields: &Map<String, Value>) -> Result<Login, MalformedSecret> {
    Ok(Login {
        username: required_string(fields, "username")?,
        password: SecretString::from(required_string(fields, "password")?),
    })
}

/// The secret's JSON object.
fn fields(secret: &SecretPayload) -> Result<Map<String, Value>, MalformedSecret> {
    let text = match secret {
        SecretPayload::String(s) => s.expose_secret(),
        SecretPayload::Binary(bytes) => std::str::from_utf8(bytes.expose_secret())
            .map_err(|_| MalformedSecret::BinaryNotUtf8)?,
    };
    let value: Value = serde_json::from_str(text).map_err(|e| MalformedSecret::NotJson {
        line: e.line(),
        column: e.column(),
    })?;
    match value {
        Value::Object(fields) => Ok(fields),
        _ => Err(MalformedSecret::NotAnObject),
    }
}

fn required_string(
    fields: &Map<String, Value>,
    name: &'static str,
) -> Result<String, MalformedSecret> {
    match fields.get(name) {
        None | Some(Value::Null) => Err(MalformedSecret::MissingField(name)),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(MalformedSecret::InvalidField(name)),
    }
}

fn optional_string(
    fields: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, MalformedSecret> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(MalformedSecret::InvalidField(name)),
    }
}

fn optional_port(fields: &Map<String, Value>) -> Result<Option<u16>, MalformedSecret> {
    let port = match fields.get("port") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Some(Value::String(s)) => s.trim().parse::<u16>().ok(),
        Some(_) => None,
    };
    match port {
        Some(p) if p > 0 => Ok(Some(p)),
        _ => Err(MalformedSecret::InvalidField("port")),
    }
}
