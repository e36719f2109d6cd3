//! Rendering credentials in a format: each body is rendered the first time it is asked for,
//! then shared, so serving cached credentials costs a reference count, not a serialization.

use bytes::Bytes;
use zeroize::Zeroizing;

use super::format::{
    Engine, Format, RenderError, env, jdbc, json, keyvalue, mysql, pgbouncer, pgpass, service, uri,
};
use super::model::Credentials;

/// A rendered response body (shared, wiped when the last copy is dropped) and its content type.
#[derive(Debug)]
pub struct Rendered {
    pub content_type: &'static str,
    pub body: Bytes,
}

/// Bytes that hold a password: wiped when the last reference to them is dropped.
fn secret_bytes(bytes: Vec<u8>) -> Bytes {
    Bytes::from_owner(Zeroizing::new(bytes))
}

impl Credentials {
    /// The credentials in `format`, escaped exactly as that format's consumers parse it.
    pub fn render(&self, format: Format, stale: bool) -> Result<Rendered, RenderError> {
        let body = self
            .bodies
            .slot(format, stale)
            .get_or_init(|| render_now(self, format, stale).map(secret_bytes))
            .clone()?;
        Ok(Rendered {
            content_type: format.content_type(),
            body,
        })
    }
}

/// The one place a format is dispatched to its file under `format/`.
fn render_now(c: &Credentials, format: Format, stale: bool) -> Result<Vec<u8>, RenderError> {
    let engine = || Engine::of(c.endpoint.engine.as_deref());
    let body = match format {
        Format::Json => return Ok(json::render(c, stale)),
        Format::Uri => uri::render(c, engine()?)?,
        Format::Jdbc => jdbc::render(c, engine()?)?,
        Format::KeyValue => keyvalue::render(c, engine()?)?,
        Format::Env => env::render(c, engine()?)?,
        Format::Pgpass => pgpass::render(c, engine()?)?,
        Format::Pgbouncer => pgbouncer::render(c, engine()?)?,
        Format::Service => service::render(c, engine()?)?,
        Format::Mysql => mysql::render(c, engine()?)?,
    };
    Ok(body.into_bytes())
}
