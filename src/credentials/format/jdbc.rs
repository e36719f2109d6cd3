//! `jdbc`: a JDBC URL with the user and password as percent-encoded query parameters.

use std::fmt::Write as _;

use super::{Engine, RenderError, encode, host_port};
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
    Ok(jdbc)
}
