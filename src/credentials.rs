//! Database names, credentials (the password held as a `SecretString` with a redacted `Debug`),
//! parsing of secret JSON in the shapes seen in the field, and the JSON body the API returns.

use std::borrow::Borrow;
use std::fmt;
use std::time::{Instant, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde_json::{Map, Value};

use crate::config::DatabaseConfig;

/// Longest database name accepted, in bytes.
pub const MAX_DB_NAME_LEN: usize = 64;

/// A configured database's name: 1 to 64 ASCII letters, digits, `-`, `_` or `.`, not `.`/`..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DbName(String);

impl DbName {
    /// Checks `name` against the allowed shape and returns it as a `DbName`.
    pub fn parse(name: &str) -> Result<Self, &'static str> {
        if name.is_empty() || name.len() > MAX_DB_NAME_LEN {
            return Err("database names are 1 to 64 characters long");
        }
        if name == "." || name == ".." {
            return Err("database names cannot be `.` or `..`");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err("database names may contain only ASCII letters, digits, '-', '_' and '.'");
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for DbName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DbName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

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

/// Credentials for one database, ready to hand to a client.
pub struct Credentials {
    pub db: DbName,
    pub engine: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub dbname: Option<String>,
    pub username: String,
    password: SecretString,
    pub version_id: String,
    pub secret_arn: Option<String>,
    pub fetched_at: SystemTime,
    /// Monotonic time of the fetch, for comparing with request arrival times.
    pub(crate) fetched: Instant,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("db", &self.db)
            .field("engine", &self.engine)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("version_id", &self.version_id)
            .field("secret_arn", &self.secret_arn)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Parses a fetched secret for `db`; values in `config` fill what the secret lacks.
    pub fn from_secret(
        db: DbName,
        config: &DatabaseConfig,
        secret: SecretVersion,
    ) -> Result<Self, MalformedSecret> {
        let text = match &secret.payload {
            SecretPayload::String(s) => s.expose_secret(),
            SecretPayload::Binary(bytes) => std::str::from_utf8(bytes.expose_secret())
                .map_err(|_| MalformedSecret::BinaryNotUtf8)?,
        };
        let value: Value = serde_json::from_str(text).map_err(|e| MalformedSecret::NotJson {
            line: e.line(),
            column: e.column(),
        })?;
        let Value::Object(fields) = value else {
            return Err(MalformedSecret::NotAnObject);
        };
        let username = required_string(&fields, "username")?;
        let password = SecretString::from(required_string(&fields, "password")?);
        Ok(Self {
            db,
            engine: optional_string(&fields, "engine")?.or_else(|| config.engine.clone()),
            host: optional_string(&fields, "host")?.or_else(|| config.host.clone()),
            port: optional_port(&fields)?.or(config.port),
            dbname: optional_string(&fields, "dbname")?.or_else(|| config.dbname.clone()),
            username,
            password,
            version_id: secret.version_id,
            secret_arn: secret.arn,
            fetched_at: SystemTime::now(),
            fetched: Instant::now(),
        })
    }

    /// The password; only response rendering should call this.
    pub(crate) fn password(&self) -> &str {
        self.password.expose_secret()
    }

    /// The JSON body of `GET /credentials/{db}`, the one place the password is serialized.
    pub fn to_json(&self, stale: bool) -> Vec<u8> {
        serde_json::to_vec(&JsonBody(self, stale)).expect("credentials always serialize")
    }
}

struct JsonBody<'a>(&'a Credentials, bool);

impl Serialize for JsonBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut s = serializer.serialize_struct("Credentials", 11)?;
        s.serialize_field("db", c.db.as_str())?;
        s.serialize_field("engine", &c.engine)?;
        s.serialize_field("host", &c.host)?;
        s.serialize_field("port", &c.port)?;
        s.serialize_field("dbname", &c.dbname)?;
        s.serialize_field("username", &c.username)?;
        s.serialize_field("password", c.password())?;
        s.serialize_field("version_id", &c.version_id)?;
        s.serialize_field("secret_arn", &c.secret_arn)?;
        s.serialize_field(
            "fetched_at",
            &humantime::format_rfc3339_millis(c.fetched_at).to_string(),
        )?;
        s.serialize_field("stale", &self.1)?;
        s.end()
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

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "pa:ss@w/o\"rd!#%";

    fn config() -> DatabaseConfig {
        DatabaseConfig {
            secret_id: "rds!db-1".into(),
            host: Some("config-host".into()),
            port: Some(5433),
            dbname: Some("orders".into()),
            engine: Some("postgres".into()),
        }
    }

    fn parse_string(text: &str) -> Result<Credentials, MalformedSecret> {
        Credentials::from_secret(
            DbName::parse("orders").unwrap(),
            &config(),
            SecretVersion {
                payload: SecretPayload::String(text.into()),
                version_id: "v1".into(),
                arn: Some("arn:aws:secretsmanager:us-east-1:1:secret:x".into()),
            },
        )
    }

    #[test]
    fn rds_managed_shape_takes_the_rest_from_config() {
        let c = parse_string(
            &serde_json::json!({"username": "admin", "password": PASSWORD}).to_string(),
        )
        .unwrap();
        assert_eq!(c.username, "admin");
        assert_eq!(c.password(), PASSWORD);
        assert_eq!(c.host.as_deref(), Some("config-host"));
        assert_eq!(c.port, Some(5433));
        assert_eq!(c.dbname.as_deref(), Some("orders"));
        assert_eq!(c.engine.as_deref(), Some("postgres"));
    }

    #[test]
    fn classic_shape_values_win_over_config_and_port_may_be_a_string() {
        let c = parse_string(
            r#"{"username":"u","password":"p","host":"secret-host","port":"6432","dbname":"d","engine":"mysql","dbInstanceIdentifier":"x"}"#,
        )
        .unwrap();
        assert_eq!(c.host.as_deref(), Some("secret-host"));
        assert_eq!(c.port, Some(6432));
        assert_eq!(c.dbname.as_deref(), Some("d"));
        assert_eq!(c.engine.as_deref(), Some("mysql"));
        let c = parse_string(r#"{"username":"u","password":"p","port":3306}"#).unwrap();
        assert_eq!(c.port, Some(3306));
    }

    #[test]
    fn secret_binary_holding_json_parses() {
        let c = Credentials::from_secret(
            DbName::parse("orders").unwrap(),
            &config(),
            SecretVersion {
                payload: SecretPayload::Binary(
                    br#"{"username":"u","password":"p"}"#.to_vec().into(),
                ),
                version_id: "v1".into(),
                arn: None,
            },
        )
        .unwrap();
        assert_eq!(c.password(), "p");
    }

    #[test]
    fn malformed_secrets_are_classified_without_their_content() {
        let cases = [
            (
                format!("not json {PASSWORD}"),
                MalformedSecret::NotJson { line: 1, column: 2 },
            ),
            (
                serde_json::json!([PASSWORD]).to_string(),
                MalformedSecret::NotAnObject,
            ),
            (
                serde_json::json!({"password": PASSWORD}).to_string(),
                MalformedSecret::MissingField("username"),
            ),
            (
                r#"{"username":"u"}"#.to_owned(),
                MalformedSecret::MissingField("password"),
            ),
            (
                serde_json::json!({"username": "u", "password": PASSWORD, "port": PASSWORD})
                    .to_string(),
                MalformedSecret::InvalidField("port"),
            ),
            (
                r#"{"username":"u","password":"p","port":70000}"#.to_owned(),
                MalformedSecret::InvalidField("port"),
            ),
            (
                r#"{"username":7,"password":"p"}"#.to_owned(),
                MalformedSecret::InvalidField("username"),
            ),
        ];
        for (text, expected) in cases {
            let err = parse_string(&text).unwrap_err();
            if let MalformedSecret::NotJson { .. } = expected {
                assert!(matches!(err, MalformedSecret::NotJson { .. }), "{err:?}");
            } else {
                assert_eq!(err, expected);
            }
            assert!(!err.to_string().contains(PASSWORD));
            assert!(!format!("{err:?}").contains(PASSWORD));
        }
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let c =
            parse_string(&serde_json::json!({"username": "u", "password": PASSWORD}).to_string())
                .unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains(PASSWORD), "{debug}");
        assert!(debug.contains("[REDACTED]"));
        let payload = SecretPayload::String(PASSWORD.into());
        assert!(!format!("{payload:?}").contains(PASSWORD));
    }

    #[test]
    fn json_body_has_every_documented_field() {
        let c =
            parse_string(&serde_json::json!({"username": "u", "password": PASSWORD}).to_string())
                .unwrap();
        let body: Value = serde_json::from_slice(&c.to_json(false)).unwrap();
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for key in [
            "db",
            "engine",
            "host",
            "port",
            "dbname",
            "username",
            "password",
            "version_id",
            "secret_arn",
            "fetched_at",
            "stale",
        ] {
            assert!(keys.contains(&key), "missing {key}");
        }
        assert_eq!(body["password"], PASSWORD);
        assert_eq!(body["port"], 5433);
        let fetched_at = body["fetched_at"].as_str().unwrap();
        humantime::parse_rfc3339(fetched_at).expect("fetched_at is RFC 3339");
    }

    #[test]
    fn db_names_are_validated() {
        for good in ["orders", "a", "db-1_x.y", &"a".repeat(64)] {
            assert!(DbName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", "%2e", &"a".repeat(65)] {
            assert!(DbName::parse(bad).is_err(), "{bad}");
        }
    }
}
