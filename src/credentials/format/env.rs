//! `env`: shell variable assignments (`PGPASSWORD='...'`, or MySQL's), single-quoted for a POSIX
//! shell to `source`; for an IAM token on PostgreSQL, with `PGSSLMODE='require'` (MySQL's
//! clients read no variable for TLS).

use super::{Engine, RenderError, refuse_nul};
use crate::credentials::iam::Auth;
use crate::credentials::model::Credentials;

pub(in crate::credentials) fn render(
    c: &Credentials,
    engine: Engine,
) -> Result<String, RenderError> {
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
    let port = c.endpoint.port.map(|p| p.to_string());
    let values = [
        c.endpoint.host.as_deref(),
        port.as_deref(),
        c.endpoint.dbname.as_deref(),
        Some(c.username.as_str()),
        Some(c.password()),
    ];
    refuse_nul(values.iter().flatten().copied())?;
    let tls =
        (c.auth == Auth::Iam && engine == Engine::Postgres).then_some(("PGSSLMODE", "require"));
    let mut out = String::with_capacity(256);
    let pairs = names.into_iter().zip(values);
    for (name, value) in pairs
        .filter_map(|(name, value)| Some((name, value?)))
        .chain(tls)
    {
        out.push_str(name);
        out.push('=');
        shell_quote(&mut out, value);
        out.push('\n');
    }
    Ok(out)
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
