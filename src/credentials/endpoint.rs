//! Where a database listens and what it is (host, port, database, engine, reader host): one
//! struct for the configuration, the RDS topology and the credentials, merged in one place.

/// A database's endpoint; each field is known or not, depending on who tells it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub dbname: Option<String>,
    pub engine: Option<String>,
    /// A cluster's reader endpoint.
    pub reader_host: Option<String>,
}

impl Endpoint {
    /// Each field of `self`, or of `fallback` where `self` has none: the one rule by which the
    /// secret's values win over the configuration's, and the configuration's over RDS's (an
    /// operator may point clients at an RDS Proxy or a tunnel).
    #[must_use]
    pub fn or(self, fallback: Self) -> Self {
        Self {
            host: self.host.or(fallback.host),
            port: self.port.or(fallback.port),
            dbname: self.dbname.or(fallback.dbname),
            engine: self.engine.or(fallback.engine),
            reader_host: self.reader_host.or(fallback.reader_host),
        }
    }
}
