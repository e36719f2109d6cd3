//! `service`: a libpq connection service file (`pg_service.conf`) with a section named after
//! the database (and `NAME-reader` for a cluster's reader host), PostgreSQL only; for an IAM
//! token, with `sslmode=require`.

use std::fmt::Write as _;

use super::{Engine, RenderError, refuse_nul};
use crate::credentials::iam::Auth;
use crate::credentials::model::Credentials;

pub(in crate::credentials) fn render(
    c: &Credentials,
    engine: Engine,
) -> Result<String, RenderError> {
    if engine != Engine::Postgres {
        return Err(RenderError::Unsupported(
            "service is libpq's service file, for PostgreSQL only",
        ));
    }
    let host = c.endpoint.host.as_deref().ok_or(RenderError::MissingHost)?;
    let port = c.endpoint.port.map(|p| p.to_string());
    let rest = [
        ("port", port.as_deref()),
        ("dbname", c.endpoint.dbname.as_deref()),
        ("user", Some(c.username.as_str())),
        ("password", Some(c.password())),
        ("sslmode", (c.auth == Auth::Iam).then_some("require")),
    ];
    let values = rest
        .iter()
        .filter_map(|(_, value)| *value)
        .chain([host])
        .chain(c.endpoint.reader_host.as_deref());
    refuse_nul(values.clone())?;
    // libpq takes a value as the rest of its line, with white space at the end trimmed: there
    // is no quoting, so such values cannot be written.
    if values.clone().any(|v| v.contains(['\n', '\r'])) || values.clone().any(ends_in_space) {
        return Err(RenderError::Unsupported(
            "service cannot hold a value with a line break or white space at its end",
        ));
    }
    let mut out = String::with_capacity(256);
    let sections = [
        ("", Some(host)),
        ("-reader", c.endpoint.reader_host.as_deref()),
    ];
    for (suffix, host) in sections {
        let Some(host) = host else { continue };
        if !out.is_empty() {
            out.push('\n');
        }
        writeln!(out, "[{}{suffix}]\nhost={host}", c.db).expect("writing to a String cannot fail");
        for (key, value) in rest {
            if let Some(value) = value {
                writeln!(out, "{key}={value}").expect("writing to a String cannot fail");
            }
        }
    }
    Ok(out)
}

/// Whether C's `isspace` holds for the value's last character (what libpq trims).
fn ends_in_space(value: &str) -> bool {
    value
        .bytes()
        .last()
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r'))
}
