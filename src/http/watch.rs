//! The event stream of the credentials API (`GET /credentials/{db}/events`): it holds one of the
//! `server.max_waiters` places while open, as the long poll of [`super::credentials`] does, and
//! ends at once when the broker stops. It tells version ids and times only, never credentials.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::audit::Action;
use super::auth::Caller;
use super::credentials::{audited, database};
use super::error::ApiError;
use super::hold::{Hold, Waiter};
use super::state::ApiState;
use crate::broker::{VersionEvent, VersionInfo, VersionWatch};

/// How often an idle event stream carries a comment line, so that clients and proxies see it
/// alive.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

pub(crate) async fn events(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(client)): Extension<Caller>,
    Extension(hold): Extension<Hold>,
    db: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let db = database(db).inspect_err(|e| {
        state.audit.record(Some(&client), "", Action::Watch, Err(e));
    })?;
    let result = async {
        if !client.scope.allows(&db) {
            return Err(ApiError::Forbidden);
        }
        let waiter = hold.begin(&state)?;
        let from_broker = |e| ApiError::from_broker(&db, e);
        // Watching before the first read, so that no change between the two is missed.
        let watch = state.broker.watch(&db).map_err(from_broker)?;
        let served = state.broker.get(&db).await.map_err(from_broker)?;
        let current = VersionInfo::of(&served.credentials);
        let stream = Stream {
            db: db.clone(),
            first: Some(version_event(&db, &current, served.stale)),
            last: Some(current.version_id),
            watch,
            _waiter: waiter,
        };
        let sse = Sse::new(futures_util::stream::unfold(stream, Stream::next))
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE));
        Ok((sse.into_response(), served, false))
    }
    .await;
    audited(&state, &client, &db, Action::Watch, result)
}

/// An event stream's state: what it sends first, the version last sent, its waiter place.
struct Stream {
    db: String,
    first: Option<Event>,
    last: Option<String>,
    watch: VersionWatch,
    _waiter: Waiter,
}

impl Stream {
    /// The next event, and the stream to go on with; `None` ends it (the broker stops).
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        if let Some(first) = self.first.take() {
            return Some((Ok(first), self));
        }
        loop {
            let event = match self.watch.next().await? {
                // The version just sent (the first read may have fetched it), or only a new
                // pending version: nothing new to the stream.
                VersionEvent::Version(info) if self.last.as_ref() == Some(&info.version_id) => {
                    continue;
                }
                VersionEvent::Version(info) => {
                    let event = version_event(&self.db, &info, false);
                    self.last = Some(info.version_id);
                    event
                }
                VersionEvent::Deleted => {
                    self.last = None;
                    Event::default()
                        .event("deleted")
                        .data(json!({ "db": self.db }).to_string())
                }
            };
            return Some((Ok(event), self));
        }
    }
}

/// The `version` event: the database, the version it serves, when that was fetched, and
/// whether it is served stale.
fn version_event(db: &str, version: &VersionInfo, stale: bool) -> Event {
    Event::default().event("version").data(
        json!({
            "db": db,
            "version_id": version.version_id,
            "fetched_at": rfc3339(version.fetched_at),
            "stale": stale,
        })
        .to_string(),
    )
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}
