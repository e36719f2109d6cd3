//! `pgpass`: libpq's password file (`host:port:dbname:user:password`), one line per endpoint (a
//! cluster's writer and reader hosts), PostgreSQL only.

use super::{Engine, RenderError, refuse_line_breaks, refuse_nul};
use crate::credentials::model::Credentials;

pub(in crate::credentials) fn render(
    c: &Credentials,
    engine: Engine,
) -> Result<String, RenderError> {
    if engine != Engine::Postgres {
        return Err(RenderError::Unsupported(
            "pgpass is libpq's password file, for PostgreSQL only",
        ));
    }
    let host = c.endpoint.host.as_deref().ok_or(RenderError::MissingHost)?;
    let port = c.endpoint.port.map(|p| p.to_string());
    let values = [
        Some(host),
        c.endpoint.reader_host.as_deref(),
        c.endpoint.dbname.as_deref(),
        Some(c.username.as_str()),
        Some(c.password()),
    ];
    refuse_nul(values.iter().flatten().copied())?;
    refuse_line_breaks(values.iter().flatten().copied(), "pgpass")?;
    let mut out = String::with_capacity(256);
    let hosts = std::iter::once(host).chain(c.endpoint.reader_host.as_deref());
    for host in hosts {
        for (i, field) in [
            Some(host),
            port.as_deref(),
            c.endpoint.dbname.as_deref(),
            Some(c.username.as_str()),
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                out.push(':');
            }
            // An unknown port or database matches any (`*`).
            match field {
                Some(field) => escape(&mut out, field),
                None => out.push('*'),
            }
        }
        out.push(':');
        escape(&mut out, c.password());
        out.push('\n');
    }
    Ok(out)
}

/// Appends a pgpass field: libpq takes the character after a `\` as it is, so `:` and `\` are
/// escaped, and `*` and `#` too (a field of `*` alone is a wildcard, a line that starts with `#`
/// a comment).
fn escape(out: &mut String, field: &str) {
    for c in field.chars() {
        if matches!(c, ':' | '\\' | '*' | '#') {
            out.push('\\');
        }
        out.push(c);
    }
}
