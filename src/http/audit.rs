//! The audit trail: one JSON event per credentials request, written to the audit sink, and
//! `credential_broker_access_total{client,db,result}`. Events carry the time, client, database,
//! action, result and version id; never a secret.

use std::sync::Arc;

use prometheus::IntCounterVec;

use super::error::ApiError;
use crate::audit::{AuditSink, Event};
use crate::broker::Broker;
use crate::clients::Client;
use crate::credentials::DbName;

/// Label for requests no client could be attributed to.
const UNAUTHENTICATED: &str = "unauthenticated";
/// Label for database names that are not configured (bounded labels).
const OTHER_DB: &str = "other";

#[derive(Debug, Clone, Copy)]
pub(crate) enum Action {
    Read,
    Refresh,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Refresh => "refresh",
        }
    }
}

/// What a request turned into: a version served (or confirmed by a 304), or an error.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome<'a> {
    Served(&'a str),
    NotModified(&'a str),
}

/// Records accesses; events are written only when there is a sink, the counter always counts.
#[derive(Debug)]
pub(crate) struct Audit {
    pub(crate) sink: Option<Arc<AuditSink>>,
    pub(crate) access: IntCounterVec,
    pub(crate) broker: Arc<Broker>,
}

impl Audit {
    /// Records one request by `client` (None: unauthenticated) for database `db`.
    pub(crate) fn record(
        &self,
        client: Option<&Client>,
        db: &str,
        action: Action,
        outcome: Result<Outcome<'_>, &ApiError>,
    ) {
        let client = client.map_or(UNAUTHENTICATED, |c| c.name.as_str());
        let (result, version) = match outcome {
            Ok(Outcome::Served(version)) => ("ok", version),
            Ok(Outcome::NotModified(version)) => ("not_modified", version),
            Err(err) => (err.code(), ""),
        };
        let label = if self.broker.knows(db) { db } else { OTHER_DB };
        self.access
            .with_label_values(&[client, label, result])
            .inc();
        if let Some(sink) = &self.sink {
            // A name that is not a valid database name is not echoed: it is caller input.
            let db = if DbName::check(db).is_ok() {
                db
            } else {
                "(invalid)"
            };
            sink.write(&Event {
                client,
                db,
                action: action.as_str(),
                result,
                version_id: version,
            });
        }
    }
}
