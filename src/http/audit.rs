//! The audit trail: one JSON event per credentials request, written to the audit sink, and
//! `credential_broker_access_total{client,db,result}`. Events carry the time, client, database,
//! action, result and version id; never a secret.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{IntCounter, IntCounterVec};

use super::error::ApiError;
use crate::audit::{AuditSink, Event};
use crate::broker::Broker;
use crate::clients::Client;
use crate::credentials::DbName;
use crate::metrics::Metrics;

/// Label for requests no client could be attributed to.
const UNAUTHENTICATED: &str = "unauthenticated";
/// Label for database names that are not configured (bounded labels).
const OTHER_DB: &str = "other";

#[derive(Debug, Clone, Copy)]
pub(crate) enum Action {
    Read,
    Refresh,
    /// An event stream opened.
    Watch,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Refresh => "refresh",
            Self::Watch => "watch",
        }
    }
}

/// What a request turned into: a version served (or confirmed by a 304), or an error.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome<'a> {
    Served(&'a str),
    NotModified(&'a str),
}

/// Unauthenticated events written per second at most; the others are counted, and summed up
/// in one `"action":"suppressed"` event when a later second writes one again.
const UNAUTHENTICATED_EVENTS_PER_SECOND: u32 = 10;

/// Records accesses; events are written only when there is a sink, the counter always counts.
#[derive(Debug)]
pub(crate) struct Audit {
    pub(crate) sink: Option<Arc<AuditSink>>,
    access: AccessCounter,
    /// Anyone can send unauthenticated requests: their events are rate-limited.
    unauthenticated: Mutex<Window>,
    suppressed: IntCounter,
}

/// The second unauthenticated events are being counted in.
#[derive(Debug, Default)]
struct Window {
    second: u64,
    written: u32,
    /// Events not written since the last one that was.
    suppressed: u64,
}

impl Audit {
    /// An audit trail for `broker`'s databases and `clients` callers (0 when authentication is
    /// disabled: the anonymous caller alone).
    pub(crate) fn new(
        sink: Option<Arc<AuditSink>>,
        metrics: &Metrics,
        broker: &Broker,
        clients: usize,
    ) -> Self {
        let slots = clients.max(1);
        let served = broker
            .databases()
            .map(|db| {
                let per_client = (0..slots).map(|_| Default::default()).collect();
                (db.clone(), per_client)
            })
            .collect();
        Self {
            sink,
            access: AccessCounter {
                vec: metrics.access.clone(),
                served,
            },
            unauthenticated: Mutex::default(),
            suppressed: metrics.audit_suppressed.clone(),
        }
    }

    /// Records one request by `client` (None: unauthenticated) for database `db`.
    pub(crate) fn record(
        &self,
        client: Option<&Client>,
        db: &str,
        action: Action,
        outcome: Result<Outcome<'_>, &ApiError>,
    ) {
        // The access counter keeps the series of answered requests at hand: `slot` is theirs.
        let (result, version, slot) = match outcome {
            Ok(Outcome::Served(version)) => ("ok", version, Some(0)),
            Ok(Outcome::NotModified(version)) => ("not_modified", version, Some(1)),
            Err(err) => (err.code(), "", None),
        };
        let configured = self.access.inc(client, db, result, slot);
        if client.is_none() && self.sink.is_some() && !self.admit_unauthenticated() {
            return;
        }
        let client = client.map_or(UNAUTHENTICATED, |c| c.name.as_str());
        if let Some(sink) = &self.sink {
            // A name that is not a valid database name is not echoed: it is caller input. A
            // configured one was checked when the configuration was loaded.
            let db = if configured || DbName::check(db).is_ok() {
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
                secret_id: None,
            });
        }
    }

    /// Whether an unauthenticated event may be written now (at most
    /// [`UNAUTHENTICATED_EVENTS_PER_SECOND`]); one that may not is counted. The first one written
    /// after some were suppressed is preceded by an event that says how many.
    fn admit_unauthenticated(&self) -> bool {
        let second = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut window = self
            .unauthenticated
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if window.second != second {
            window.second = second;
            window.written = 0;
        }
        if window.written >= UNAUTHENTICATED_EVENTS_PER_SECOND {
            window.suppressed += 1;
            self.suppressed.inc();
            return false;
        }
        window.written += 1;
        let suppressed = std::mem::take(&mut window.suppressed);
        drop(window);
        if suppressed > 0
            && let Some(sink) = &self.sink
        {
            sink.write(&Event {
                client: UNAUTHENTICATED,
                db: "",
                action: "suppressed",
                result: &suppressed.to_string(),
                version_id: "",
                secret_id: None,
            });
        }
        true
    }
}

/// `credential_broker_access_total{client,db,result}`. The series of answered requests (`ok`,
/// `not_modified`) of each configured database and client are resolved on first use and kept,
/// so that a served request costs one map lookup and an atomic add instead of hashing three
/// labels under the vector's lock.
#[derive(Debug)]
struct AccessCounter {
    vec: IntCounterVec,
    /// Per configured database, per client index: the `ok` and `not_modified` series.
    served: foldhash::HashMap<DbName, Box<[[OnceLock<IntCounter>; 2]]>>,
}

impl AccessCounter {
    /// Counts one request with `result`; `slot` (0: `ok`, 1: `not_modified`) for answered ones.
    /// Says whether `db` is a configured database.
    fn inc(&self, client: Option<&Client>, db: &str, result: &str, slot: Option<usize>) -> bool {
        let per_client = self.served.get(db);
        if let (Some(per_client), Some(client), Some(slot)) = (per_client, client, slot)
            && let Some(slots) = per_client.get(client.index)
        {
            slots[slot]
                .get_or_init(|| self.vec.with_label_values(&[&client.name, db, result]))
                .inc();
            return true;
        }
        let client = client.map_or(UNAUTHENTICATED, |c| c.name.as_str());
        let db = if per_client.is_some() { db } else { OTHER_DB };
        self.vec.with_label_values(&[client, db, result]).inc();
        per_client.is_some()
    }
}
