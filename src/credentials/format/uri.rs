//! `uri`: a connection URI (`postgresql://` or `mysql://`), every component percent-encoded;
//! for an IAM token, with the option that asks for TLS.

use std::fmt::Write as _;

use super::{Engine, RenderError, encode, host_port};
use crate::credentials::iam::Auth;
use crate::credentials::model::Credentials;

pub(in crate::credentials) fn render(
    c: &Credentials,
    engine: Engine,
) -> Result<String, RenderError> {
    let scheme = match engine {
        Engine::Postgres => "postgresql",
        Engine::Mysql | Engine::Mariadb => "mysql",
    };
    let mut uri = String::with_capacity(256);
    write!(
        uri,
        "{scheme}://{}:{}@{}",
        encode(&c.username),
        encode(c.password()),
        host_port(&c.endpoint)?
    )
    .expect("writing to a String cannot fail");
    if let Some(dbname) = &c.endpoint.dbname {
        write!(uri, "/{}", encode(dbname)).expect("writing to a String cannot fail");
    }
    if c.auth == Auth::Iam {
        uri.push_str(match engine {
            Engine::Postgres => "?sslmode=require",
            // MySQL Shell's and Connector/Python's URI option.
            Engine::Mysql | Engine::Mariadb => "?ssl-mode=REQUIRED",
        });
    }
    Ok(uri)
}
