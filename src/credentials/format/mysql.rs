//! `mysql`: a MySQL / MariaDB option file (`[client]` with `user`, `password`, `host`, `port`),
//! as `--defaults-extra-file` reads it; MySQL and MariaDB only. For an IAM token, with the
//! options that send it: TLS and the cleartext plugin.

use super::{Engine, RenderError, refuse_nul};
use crate::credentials::iam::Auth;
use crate::credentials::model::Credentials;

pub(in crate::credentials) fn render(
    c: &Credentials,
    engine: Engine,
) -> Result<String, RenderError> {
    if engine == Engine::Postgres {
        return Err(RenderError::Unsupported(
            "mysql is the MySQL option file, for MySQL and MariaDB only",
        ));
    }
    let port = c.endpoint.port.map(|p| p.to_string());
    let pairs = [
        ("user", Some(c.username.as_str())),
        ("password", Some(c.password())),
        ("host", c.endpoint.host.as_deref()),
        ("port", port.as_deref()),
    ];
    refuse_nul(pairs.iter().filter_map(|(_, value)| *value))?;
    let mut out = String::from("[client]\n");
    for (key, value) in pairs {
        if let Some(value) = value {
            out.push_str(key);
            out.push('=');
            quote(&mut out, value);
            out.push('\n');
        }
    }
    if c.auth == Auth::Iam {
        out.push_str(match engine {
            // MySQL 8's clients: TLS required, and the token sent as it is (the server's
            // AWSAuthenticationPlugin asks for mysql_clear_password).
            Engine::Mysql => "ssl-mode=REQUIRED\nenable-cleartext-plugin\n",
            // MariaDB's clients name TLS `ssl`, and send cleartext when the server asks.
            Engine::Mariadb | Engine::Postgres => "ssl\n",
        });
    }
    Ok(out)
}

/// Appends a double-quoted option value with the escapes the option-file reader undoes
/// (`\\`, `\"`, `\n`, `\r`, `\t`, `\b`); `#` and `'` inside the quotes are plain characters.
fn quote(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            c => out.push(c),
        }
    }
    out.push('"');
}
