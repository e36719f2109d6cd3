//! The output formats of `GET /credentials/{db}?format=`: the [`Format`] enum, what every
//! format shares (engines, escaping, errors), and one file per format.
//!
//! To add a format: a file here with its `render`, a [`Format`] variant; the compiler then
//! points at its name, content type and the dispatch in `credentials/render.rs`.

use enum_map::{Enum, EnumMap};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::endpoint::Endpoint;

pub(super) mod env;
pub(super) mod jdbc;
pub(super) mod json;
pub(super) mod keyvalue;
pub(super) mod mysql;
pub(super) mod pgbouncer;
pub(super) mod pgpass;
pub(super) mod service;
pub(super) mod uri;

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum Format {
    Json,
    Uri,
    Jdbc,
    KeyValue,
    Env,
    Pgpass,
    Pgbouncer,
    Service,
    Mysql,
}

impl Format {
    /// Every format, in the order the API documents them.
    pub fn all() -> impl Iterator<Item = Self> {
        EnumMap::from_fn(|format: Self| format).into_values()
    }

    /// The format's name in `?format=`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Uri => "uri",
            Self::Jdbc => "jdbc",
            Self::KeyValue => "keyvalue",
            Self::Env => "env",
            Self::Pgpass => "pgpass",
            Self::Pgbouncer => "pgbouncer",
            Self::Service => "service",
            Self::Mysql => "mysql",
        }
    }

    /// Whether the format holds the pending version of a rotation (a file of it is rewritten
    /// when only that changes).
    pub fn shows_pending(self) -> bool {
        match self {
            Self::Json => true,
            Self::Uri
            | Self::Jdbc
            | Self::KeyValue
            | Self::Env
            | Self::Pgpass
            | Self::Pgbouncer
            | Self::Service
            | Self::Mysql => false,
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Uri
            | Self::Jdbc
            | Self::KeyValue
            | Self::Env
            | Self::Pgpass
            | Self::Pgbouncer
            | Self::Service
            | Self::Mysql => "text/plain; charset=utf-8",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = ();

    /// A match rather than a search of [`Format::all`]: this runs for every `?format=` read
    /// (callgrind: about 200 instructions less per request). The round-trip test in
    /// `credentials/tests.rs` keeps it in step with [`Format::name`].
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "json" => Ok(Self::Json),
            "uri" => Ok(Self::Uri),
            "jdbc" => Ok(Self::Jdbc),
            "keyvalue" => Ok(Self::KeyValue),
            "env" => Ok(Self::Env),
            "pgpass" => Ok(Self::Pgpass),
            "pgbouncer" => Ok(Self::Pgbouncer),
            "service" => Ok(Self::Service),
            "mysql" => Ok(Self::Mysql),
            _ => Err(()),
        }
    }
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
    #[error("a value holds a line break, which the {0} format cannot hold")]
    LineBreak(&'static str),
}

/// The database engines the text formats know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Engine {
    Postgres,
    Mysql,
    Mariadb,
}

impl Engine {
    pub(super) fn of(engine: Option<&str>) -> Result<Self, RenderError> {
        match engine {
            Some("postgres" | "postgresql" | "aurora-postgresql") => Ok(Self::Postgres),
            Some("mysql" | "aurora-mysql" | "aurora") => Ok(Self::Mysql),
            Some("mariadb") => Ok(Self::Mariadb),
            _ => Err(RenderError::UnknownEngine),
        }
    }
}

/// Refuses values with a NUL character: a C string (libpq) or a shell variable ends there, so
/// the value could only be cut short.
fn refuse_nul<'a>(mut values: impl Iterator<Item = &'a str>) -> Result<(), RenderError> {
    if values.any(|value| value.contains('\0')) {
        return Err(RenderError::Nul);
    }
    Ok(())
}

/// Refuses values with a line break, for formats of one record per line with no quoting that
/// can hold one.
fn refuse_line_breaks<'a>(
    mut values: impl Iterator<Item = &'a str>,
    format: &'static str,
) -> Result<(), RenderError> {
    if values.any(|value| value.contains(['\n', '\r'])) {
        return Err(RenderError::LineBreak(format));
    }
    Ok(())
}

/// `host:port` of an endpoint, an IPv6 host in brackets.
fn host_port(endpoint: &Endpoint) -> Result<String, RenderError> {
    let host = endpoint.host.as_deref().ok_or(RenderError::MissingHost)?;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    Ok(match endpoint.port {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
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
