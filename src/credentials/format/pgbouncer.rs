//! `pgbouncer`: a line of PgBouncer's `auth_file` (`"user" "password"`, each `"` doubled),
//! PostgreSQL only.

use super::{Engine, RenderError, refuse_line_breaks, refuse_nul};
use crate::credentials::model::Credentials;

pub(in crate::credentials) fn render(
    c: &Credentials,
    engine: Engine,
) -> Result<String, RenderError> {
    if engine != Engine::Postgres {
        return Err(RenderError::Unsupported(
            "pgbouncer is PgBouncer's auth_file, for PostgreSQL only",
        ));
    }
    let values = [c.username.as_str(), c.password()];
    refuse_nul(values.into_iter())?;
    refuse_line_breaks(values.into_iter(), "pgbouncer")?;
    let mut out = String::with_capacity(128);
    quote(&mut out, &c.username);
    out.push(' ');
    quote(&mut out, c.password());
    out.push('\n');
    Ok(out)
}

/// Appends a double-quoted `auth_file` value, each `"` doubled.
fn quote(out: &mut String, value: &str) {
    out.push('"');
    out.push_str(&value.replace('"', "\"\""));
    out.push('"');
}
