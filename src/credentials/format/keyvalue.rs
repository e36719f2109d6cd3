//! `keyvalue`: a libpq connection string (`host=... password='...'`), PostgreSQL only; for an
//! IAM token, with `sslmode='require'`.

use super::{Engine, RenderError, refuse_nul};
use crate::credentials::iam::Auth;
use crate::credentials::model::Credentials;

pub(in crate::credentials) fn render(
    c: &Credentials,
    engine: Engine,
) -> Result<String, RenderError> {
    if engine != Engine::Postgres {
        return Err(RenderError::Unsupported(
            "keyvalue is the libpq format, for PostgreSQL only",
        ));
    }
    let port = c.endpoint.port.map(|p| p.to_string());
    let pairs = [
        ("host", c.endpoint.host.as_deref()),
        ("port", port.as_deref()),
        ("dbname", c.endpoint.dbname.as_deref()),
        ("user", Some(c.username.as_str())),
        ("password", Some(c.password())),
        ("sslmode", (c.auth == Auth::Iam).then_some("require")),
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
