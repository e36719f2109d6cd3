//! `jdbc`: a JDBC URL with the user and password as percent-encoded query parameters; for an
//! IAM token, with the driver's option that asks for TLS.

use std::fmt::Write as _;

use super::{Engine, RenderError, encode, host_port};
use crate::credentials::iam::Auth;
use crate::credentials::model::Credentials;

pub(in crate::credentials) fn render(
    c: &Credentials,
    engine: Engine,
) -> Result<String, RenderError> {
    let subprotocol = match engine {
        Engine::Postgres => "postgresql",
        Engine::Mysql => "mysql",
        Engine::Mariadb => "mariadb",
    };
    let mut jdbc = String::with_capacity(256);
    write!(
        jdbc,
        "jdbc:{subprotocol}://{}/{}?user={}&password={}",
        host_port(&c.endpoint)?,
        encode(c.endpoint.dbname.as_deref().unwrap_or_default()),
        encode(&c.username),
        encode(c.password())
    )
    .expect("writing to a String cannot fail");
    if c.auth == Auth::Iam {
        jdbc.push_str(match engine {
            Engine::Postgres => "&sslmode=require",
            // Connector/J sends the token with its cleartext plugin over TLS.
            Engine::Mysql => "&sslMode=REQUIRED",
            // MariaDB Connector/J: TLS without checking the server's certificate, as `require`.
            Engine::Mariadb => "&sslMode=trust",
        });
    }
    Ok(jdbc)
}
