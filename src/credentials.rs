//! Database names, credentials (the password held as a `SecretString` with a redacted `Debug`),
//! parsing of secret JSON in the shapes seen in the field, and the response bodies the API
//! returns, rendered once per fetched version and shared by every request that serves it.

use std::borrow::Borrow;
use std::fmt::{self, Write as _};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use zeroize::Zeroizing;

use secrecy::{ExposeSecret, SecretString};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde_json::{Map, Value};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::config::DatabaseConfig;
use crate::source::Topology;

/// Longest database name accepted, in bytes.
pub const MAX_DB_NAME_LEN: usize = 64;

/// A configured database's name: 1 to 64 ASCII letters, digits, `-`, `_` or `.`, not `.`/`..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DbName(String);

impl DbName {
    /// Checks `name` against the allowed shape and returns it as a `DbName`.
    pub fn parse(name: &str) -> Result<Self, &'static str> {
        Self::check(name)?;
        Ok(Self(name.to_owned()))
    }

    /// Checks `name` against the allowed shape without allocating.
    pub fn check(name: &str) -> Result<(), &'static str> {
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
        Ok(())
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

/// Values that fill what a secret lacks, and facts only RDS knows: the database's configuration,
/// completed by the RDS topology when the database is resolved through RDS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Defaults {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub dbname: Option<String>,
    pub engine: Option<String>,
    pub reader_host: Option<String>,
    pub secret_status: Option<String>,
}

impl Defaults {
    /// The configured values of a database.
    pub fn from_config(config: &DatabaseConfig) -> Self {
        Self {
            host: config.host.clone(),
            port: config.port,
            dbname: config.dbname.clone(),
            engine: config.engine.clone(),
            reader_host: None,
            secret_status: None,
        }
    }

    /// Configured values first (an operator may point clients at an RDS Proxy or a tunnel),
    /// RDS values where the configuration has none.
    #[must_use]
    pub fn with_topology(self, topology: &Topology) -> Self {
        Self {
            host: self.host.or_else(|| topology.host.clone()),
            port: self.port.or(topology.port),
            dbname: self.dbname.or_else(|| topology.dbname.clone()),
            engine: self.engine.or_else(|| topology.engine.clone()),
            reader_host: topology.reader_host.clone(),
            secret_status: topology.secret_status.clone(),
        }
    }
}

/// The credentials of a version a rotation is putting in place (`AWSPENDING`).
#[derive(Debug)]
pub struct Pending {
    pub username: String,
    password: SecretString,
    pub version_id: String,
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
    /// `MasterUserSecret.SecretStatus` for RDS databases.
    pub secret_status: Option<String>,
    /// A cluster's reader endpoint.
    pub reader_host: Option<String>,
    /// The pending version during a rotation, if one was seen.
    pub pending: Option<Pending>,
    /// Monotonic time of the fetch, for comparing with request arrival times.
    pub(crate) fetched: Instant,
    /// The `ETag` value: the version id in quotes.
    etag: Bytes,
    /// Response bodies, each rendered on first use; the value never changes once built.
    bodies: Bodies,
}

/// One lazily rendered body per format, plus the stale variant of the JSON body.
#[derive(Default)]
struct Bodies([OnceLock<Result<Bytes, RenderError>>; 6]);

impl Bodies {
    fn slot(&self, format: Format, stale: bool) -> &OnceLock<Result<Bytes, RenderError>> {
        let index = match (format, stale) {
            (Format::Json, false) => 0,
            (Format::Json, true) => 1,
            (Format::Uri, _) => 2,
            (Format::Jdbc, _) => 3,
            (Format::KeyValue, _) => 4,
            (Format::Env, _) => 5,
        };
        &self.0[index]
    }
}

/// Bytes that hold a password: wiped when the last reference to them is dropped.
fn secret_bytes(bytes: Vec<u8>) -> Bytes {
    Bytes::from_owner(Zeroizing::new(bytes))
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
            .field("secret_status", &self.secret_status)
            .field(
                "pending_version",
                &self.pending.as_ref().map(|p| &p.version_id),
            )
            .finish_non_exhaustive()
    }
}

/// Reads `username` and `password` (and the optional connection fields) from secret JSON.
fn parse_fields(secret: &SecretPayload) -> Result<Map<String, Value>, MalformedSecret> {
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

impl Credentials {
    /// Parses a fetched secret for `db`; `defaults` fill what the secret lacks.
    pub fn from_secret(
        db: DbName,
        defaults: Defaults,
        secret: SecretVersion,
    ) -> Result<Self, MalformedSecret> {
        let fields = parse_fields(&secret.payload)?;
        let username = required_string(&fields, "username")?;
        let password = SecretString::from(required_string(&fields, "password")?);
        Ok(Self {
            db,
            engine: optional_string(&fields, "engine")?.or(defaults.engine),
            host: optional_string(&fields, "host")?.or(defaults.host),
            port: optional_port(&fields)?.or(defaults.port),
            dbname: optional_string(&fields, "dbname")?.or(defaults.dbname),
            username,
            password,
            secret_arn: secret.arn,
            fetched_at: SystemTime::now(),
            secret_status: defaults.secret_status,
            reader_host: defaults.reader_host,
            pending: None,
            fetched: Instant::now(),
            etag: Bytes::from(format!("\"{}\"", secret.version_id)),
            version_id: secret.version_id,
            bodies: Bodies::default(),
        })
    }

    /// Adds the pending version of a rotation, unless it is the current version itself.
    pub fn with_pending(mut self, secret: SecretVersion) -> Result<Self, MalformedSecret> {
        if secret.version_id != self.version_id {
            let fields = parse_fields(&secret.payload)?;
            self.pending = Some(Pending {
                username: required_string(&fields, "username")?,
                password: SecretString::from(required_string(&fields, "password")?),
                version_id: secret.version_id,
            });
        }
        Ok(self)
    }

    /// The password; only response rendering should call this.
    pub(crate) fn password(&self) -> &str {
        self.password.expose_secret()
    }

    /// The `ETag` of these credentials: their version id, quoted.
    pub fn etag(&self) -> &Bytes {
        &self.etag
    }

    /// The JSON body of `GET /credentials/{db}`, the one place the password is serialized.
    fn to_json(&self, stale: bool) -> Vec<u8> {
        let mut body = Vec::with_capacity(1024);
        serde_json::to_writer(&mut body, &JsonBody(self, stale))
            .expect("credentials always serialize");
        body
    }

    /// The credentials in `format`, escaped exactly as that format's consumers parse it.
    ///
    /// Rendered the first time a format is asked for, then shared: serving cached credentials
    /// costs a reference count, not a serialization.
    pub fn render(&self, format: Format, stale: bool) -> Result<Rendered, RenderError> {
        let body = self
            .bodies
            .slot(format, stale)
            .get_or_init(|| self.render_now(format, stale).map(secret_bytes))
            .clone()?;
        Ok(Rendered {
            content_type: format.content_type(),
            body,
        })
    }

    fn render_now(&self, format: Format, stale: bool) -> Result<Vec<u8>, RenderError> {
        if format == Format::Json {
            return Ok(self.to_json(stale));
        }
        let engine = Engine::of(self.engine.as_deref())?;
        let body = match format {
            Format::Json => unreachable!("handled above"),
            Format::Uri => self.uri(engine)?,
            Format::Jdbc => self.jdbc(engine)?,
            Format::KeyValue => self.keyvalue(engine)?,
            Format::Env => self.env(engine)?,
        };
        Ok(body.into_bytes())
    }

    fn host_port(&self) -> Result<String, RenderError> {
        let host = self.host.as_deref().ok_or(RenderError::MissingHost)?;
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        Ok(match self.port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        })
    }

    fn uri(&self, engine: Engine) -> Result<String, RenderError> {
        let mut uri = String::with_capacity(256);
        write!(
            uri,
            "{}://{}:{}@{}",
            engine.uri_scheme(),
            encode(&self.username),
            encode(self.password()),
            self.host_port()?
        )
        .expect("writing to a String cannot fail");
        if let Some(dbname) = &self.dbname {
            write!(uri, "/{}", encode(dbname)).expect("writing to a String cannot fail");
        }
        Ok(uri)
    }

    fn jdbc(&self, engine: Engine) -> Result<String, RenderError> {
        let mut jdbc = String::with_capacity(256);
        write!(
            jdbc,
            "jdbc:{}://{}/{}?user={}&password={}",
            engine.jdbc_subprotocol(),
            self.host_port()?,
            encode(self.dbname.as_deref().unwrap_or_default()),
            encode(&self.username),
            encode(self.password())
        )
        .expect("writing to a String cannot fail");
        Ok(jdbc)
    }

    fn keyvalue(&self, engine: Engine) -> Result<String, RenderError> {
        if engine != Engine::Postgres {
            return Err(RenderError::Unsupported(
                "keyvalue is the libpq format, for PostgreSQL only",
            ));
        }
        let port = self.port.map(|p| p.to_string());
        let pairs = [
            ("host", self.host.as_deref()),
            ("port", port.as_deref()),
            ("dbname", self.dbname.as_deref()),
            ("user", Some(self.username.as_str())),
            ("password", Some(self.password())),
        ];
        refuse_nul(pairs.iter().filter_map(|(_, value)| *value))?;
        let mut out = String::with_capacity(256);
        for (key, value) in pairs {
            if let Some(value) = value {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(key);
                out.push('=');
                libpq_quote(&mut out, value);
            }
        }
        Ok(out)
    }

    fn env(&self, engine: Engine) -> Result<String, RenderError> {
        let names = match engine {
            Engine::Postgres => ["PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD"],
            Engine::Mysql | Engine::Mariadb => [
                "MYSQL_HOST",
                "MYSQL_TCP_PORT",
                "MYSQL_DATABASE",
                "MYSQL_USER",
                "MYSQL_PWD",
            ],
        };
        let port = self.port.map(|p| p.to_string());
        let values = [
            self.host.as_deref(),
            port.as_deref(),
            self.dbname.as_deref(),
            Some(self.username.as_str()),
            Some(self.password()),
        ];
        refuse_nul(values.iter().flatten().copied())?;
        let mut out = String::with_capacity(256);
        for (name, value) in names.iter().zip(values) {
            if let Some(value) = value {
                out.push_str(name);
                out.push('=');
                shell_quote(&mut out, value);
                out.push('\n');
            }
        }
        Ok(out)
    }
}

/// The output formats of `GET /credentials/{db}?format=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Uri,
    Jdbc,
    KeyValue,
    Env,
}

impl std::str::FromStr for Format {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "json" => Ok(Self::Json),
            "uri" => Ok(Self::Uri),
            "jdbc" => Ok(Self::Jdbc),
            "keyvalue" => Ok(Self::KeyValue),
            "env" => Ok(Self::Env),
            _ => Err(()),
        }
    }
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Uri | Self::Jdbc | Self::KeyValue | Self::Env => "text/plain; charset=utf-8",
        }
    }
}

/// A rendered response body (shared, wiped when the last copy is dropped) and its content type.
#[derive(Debug)]
pub struct Rendered {
    pub content_type: &'static str,
    pub body: Bytes,
}

/// Why credentials cannot be rendered in a format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(
        "the database engine is unknown or not supported by this format; set databases.NAME.engine (postgres, mysql, mariadb)"
    )]
    UnknownEngine,
    #[error("the host is unknown; set databases.NAME.host")]
    MissingHost,
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("a value holds a NUL character, which neither libpq nor a shell can take")]
    Nul,
}

/// Refuses values with a NUL character: a C string (libpq) or a shell variable ends there, so
/// the value could only be cut short.
fn refuse_nul<'a>(mut values: impl Iterator<Item = &'a str>) -> Result<(), RenderError> {
    if values.any(|value| value.contains('\0')) {
        return Err(RenderError::Nul);
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Postgres,
    Mysql,
    Mariadb,
}

impl Engine {
    fn of(engine: Option<&str>) -> Result<Self, RenderError> {
        match engine {
            Some("postgres" | "postgresql" | "aurora-postgresql") => Ok(Self::Postgres),
            Some("mysql" | "aurora-mysql" | "aurora") => Ok(Self::Mysql),
            Some("mariadb") => Ok(Self::Mariadb),
            _ => Err(RenderError::UnknownEngine),
        }
    }

    fn uri_scheme(self) -> &'static str {
        match self {
            Self::Postgres => "postgresql",
            Self::Mysql | Self::Mariadb => "mysql",
        }
    }

    fn jdbc_subprotocol(self) -> &'static str {
        match self {
            Self::Postgres => "postgresql",
            Self::Mysql => "mysql",
            Self::Mariadb => "mariadb",
        }
    }
}

/// Everything but RFC 3986 unreserved characters is percent-encoded, which is right for URI
/// userinfo and path segments and for query values read by either percent- or form-decoding.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode(value: &str) -> percent_encoding::PercentEncode<'_> {
    utf8_percent_encode(value, COMPONENT)
}

/// Appends a libpq connection-string value: single-quoted, `\` and `'` backslash-escaped.
fn libpq_quote(out: &mut String, value: &str) {
    out.push('\'');
    for c in value.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
}

/// Appends a POSIX shell word: single-quoted, each `'` written as `'\''`.
fn shell_quote(out: &mut String, value: &str) {
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
}

struct JsonBody<'a>(&'a Credentials, bool);

impl Serialize for JsonBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut s = serializer.serialize_struct("Credentials", 14)?;
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
        s.serialize_field("secret_status", &c.secret_status)?;
        s.serialize_field("reader_host", &c.reader_host)?;
        s.serialize_field("pending", &c.pending.as_ref().map(PendingBody))?;
        s.end()
    }
}

struct PendingBody<'a>(&'a Pending);

impl Serialize for PendingBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Pending", 3)?;
        s.serialize_field("username", &self.0.username)?;
        s.serialize_field("password", self.0.password.expose_secret())?;
        s.serialize_field("version_id", &self.0.version_id)?;
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

    fn config() -> Defaults {
        Defaults {
            host: Some("config-host".into()),
            port: Some(5433),
            dbname: Some("orders".into()),
            engine: Some("postgres".into()),
            ..Defaults::default()
        }
    }

    fn parse_string(text: &str) -> Result<Credentials, MalformedSecret> {
        Credentials::from_secret(
            DbName::parse("orders").unwrap(),
            config(),
            SecretVersion {
                payload: SecretPayload::String(text.into()),
                version_id: "v1".into(),
                arn: Some("arn:aws:secretsmanager:us-east-1:1:secret:x".into()),
            },
        )
    }

    #[test]
    fn bodies_are_rendered_once_per_format_and_shared() {
        let c = parse_string(&format!(
            r#"{{"username":"u","password":{}}}"#,
            serde_json::to_string(PASSWORD).unwrap()
        ))
        .unwrap();
        for format in [Format::Json, Format::Uri, Format::KeyValue] {
            let first = c.render(format, false).unwrap().body;
            let second = c.render(format, false).unwrap().body;
            assert_eq!(
                first.as_ptr(),
                second.as_ptr(),
                "{format:?} is not re-rendered"
            );
        }
        let fresh = c.render(Format::Json, false).unwrap().body;
        let stale = c.render(Format::Json, true).unwrap().body;
        assert_ne!(fresh, stale, "the stale flag has its own body");
        assert_eq!(
            serde_json::from_slice::<Value>(&stale).unwrap()["stale"],
            true
        );
        assert_eq!(c.etag().as_ref(), b"\"v1\"");
        assert!(!format!("{c:?}").contains(PASSWORD));
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
            config(),
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

    /// Every printable ASCII punctuation character, as RDS-generated passwords may contain.
    const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

    fn with_password(password: &str, engine: &str) -> Credentials {
        Credentials::from_secret(
            DbName::parse("orders").unwrap(),
            Defaults {
                host: Some("db.example.internal".into()),
                port: Some(5432),
                dbname: Some("or ders/%".into()),
                engine: Some(engine.into()),
                ..Defaults::default()
            },
            SecretVersion {
                payload: SecretPayload::String(
                    serde_json::json!({"username": "app user@x", "password": password})
                        .to_string()
                        .into(),
                ),
                version_id: "v1".into(),
                arn: None,
            },
        )
        .unwrap()
    }

    fn text(c: &Credentials, format: Format) -> String {
        String::from_utf8(c.render(format, false).unwrap().body.to_vec()).unwrap()
    }

    /// libpq's own parsers, as tokio-postgres implements them, read back URI and key/value.
    fn libpq_password(rendered: &str) -> (String, String) {
        let config: tokio_postgres::Config = rendered.parse().expect("libpq parses it");
        let password = String::from_utf8(config.get_password().unwrap().to_vec()).unwrap();
        (config.get_user().unwrap().to_owned(), password)
    }

    fn jdbc_password(rendered: &str) -> (String, String) {
        let url = url::Url::parse(rendered.strip_prefix("jdbc:").unwrap()).unwrap();
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        (query["user"].clone(), query["password"].clone())
    }

    fn shell_password(rendered: &str) -> String {
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{rendered}printf %s \"$PGPASSWORD\""))
            .output()
            .expect("sh runs");
        String::from_utf8(output.stdout).unwrap()
    }

    fn assert_round_trips(password: &str) {
        let c = with_password(password, "postgres");
        let (user, pass) = libpq_password(&text(&c, Format::Uri));
        assert_eq!(
            (user.as_str(), pass.as_str()),
            ("app user@x", password),
            "uri"
        );
        let uri = url::Url::parse(&text(&c, Format::Uri)).unwrap();
        assert_eq!(uri.host_str(), Some("db.example.internal"));
        assert_eq!(uri.port(), Some(5432));
        let (user, pass) = libpq_password(&text(&c, Format::KeyValue));
        assert_eq!(
            (user.as_str(), pass.as_str()),
            ("app user@x", password),
            "keyvalue"
        );
        let (user, pass) = jdbc_password(&text(&c, Format::Jdbc));
        assert_eq!(
            (user.as_str(), pass.as_str()),
            ("app user@x", password),
            "jdbc"
        );
        assert_eq!(shell_password(&text(&c, Format::Env)), password, "env");
        let mysql = with_password(password, "mysql");
        let uri = url::Url::parse(&text(&mysql, Format::Uri)).unwrap();
        let decoded = percent_encoding::percent_decode_str(uri.password().unwrap())
            .decode_utf8()
            .unwrap();
        assert_eq!(uri.scheme(), "mysql");
        assert_eq!(decoded, password, "mysql uri");
    }

    #[test]
    fn every_format_round_trips_all_printable_punctuation() {
        assert_round_trips(PUNCTUATION);
        assert_round_trips(&format!("a{PUNCTUATION}z 0 9"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn every_format_round_trips_random_printable_passwords(password in "[ -~]{1,40}") {
            assert_round_trips(&password);
        }
    }

    #[test]
    fn formats_name_the_engine_and_refuse_what_they_cannot_express() {
        let c = with_password("p", "postgres");
        assert!(
            text(&c, Format::Uri).starts_with(
                "postgresql://app%20user%40x:p@db.example.internal:5432/or%20ders%2F%25"
            )
        );
        assert!(text(&c, Format::Jdbc).starts_with("jdbc:postgresql://db.example.internal:5432/"));
        assert!(text(&c, Format::Env).starts_with("PGHOST='db.example.internal'\nPGPORT='5432'\n"));
        let m = with_password("p", "mariadb");
        assert!(text(&m, Format::Jdbc).starts_with("jdbc:mariadb://"));
        assert!(text(&m, Format::Env).contains("MYSQL_PWD='p'"));
        assert_eq!(
            m.render(Format::KeyValue, false).unwrap_err(),
            RenderError::Unsupported("keyvalue is the libpq format, for PostgreSQL only")
        );
        let unknown = with_password("p", "oracle-ee");
        assert_eq!(
            unknown.render(Format::Uri, false).unwrap_err(),
            RenderError::UnknownEngine
        );
        assert!(unknown.render(Format::Json, false).is_ok());
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let mut c = with_password("p", "postgres");
        c.host = Some("::1".into());
        assert!(text(&c, Format::Uri).contains("@[::1]:5432/"));
    }

    #[test]
    fn pending_version_is_exposed_only_when_it_differs() {
        let pending = |id: &str| SecretVersion {
            payload: SecretPayload::String(r#"{"username":"u","password":"next"}"#.into()),
            version_id: id.into(),
            arn: None,
        };
        let c = with_password("p", "postgres")
            .with_pending(pending("v1"))
            .unwrap();
        assert!(
            c.pending.is_none(),
            "the pending label on the current version is no rotation"
        );
        let c = with_password("p", "postgres")
            .with_pending(pending("v2"))
            .unwrap();
        let body: Value = serde_json::from_slice(&c.to_json(false)).unwrap();
        assert_eq!(body["pending"]["password"], "next");
        assert_eq!(body["pending"]["version_id"], "v2");
        assert!(
            !format!("{c:?}").contains("next"),
            "Debug hides the pending password"
        );
    }
}
