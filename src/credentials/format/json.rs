//! `json` (the default): every field of the credentials, the one place the password is
//! serialized as JSON.

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::credentials::model::{Credentials, Pending};

/// The JSON body of `GET /credentials/{db}`.
pub(in crate::credentials) fn render(c: &Credentials, stale: bool) -> Vec<u8> {
    let mut body = Vec::with_capacity(1024);
    serde_json::to_writer(&mut body, &JsonBody(c, stale)).expect("credentials always serialize");
    body
}

struct JsonBody<'a>(&'a Credentials, bool);

impl Serialize for JsonBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut s = serializer.serialize_struct("Credentials", 17)?;
        s.serialize_field("db", c.db.as_str())?;
        s.serialize_field("auth", c.auth.name())?;
        s.serialize_field("engine", &c.endpoint.engine)?;
        s.serialize_field("host", &c.endpoint.host)?;
        s.serialize_field("port", &c.endpoint.port)?;
        s.serialize_field("dbname", &c.endpoint.dbname)?;
        s.serialize_field("username", &c.username)?;
        s.serialize_field("password", c.password())?;
        s.serialize_field("version_id", &c.version_id)?;
        s.serialize_field("secret_arn", &c.secret_arn)?;
        s.serialize_field("region", &c.region)?;
        s.serialize_field(
            "fetched_at",
            &humantime::format_rfc3339_millis(c.fetched_at).to_string(),
        )?;
        s.serialize_field(
            "expires_at",
            &c.expires_at
                .map(|at| humantime::format_rfc3339_seconds(at).to_string()),
        )?;
        s.serialize_field("stale", &self.1)?;
        s.serialize_field("secret_status", &c.secret_status)?;
        s.serialize_field("reader_host", &c.endpoint.reader_host)?;
        s.serialize_field("pending", &c.pending.as_ref().map(PendingBody))?;
        s.end()
    }
}

struct PendingBody<'a>(&'a Pending);

impl Serialize for PendingBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Pending", 3)?;
        s.serialize_field("username", &self.0.username)?;
        s.serialize_field("password", self.0.password())?;
        s.serialize_field("version_id", &self.0.version_id)?;
        s.end()
    }
}
