//! Watching a database's version: what each database publishes when the version it serves
//! changes or its secret is gone, the long poll (wait for a version the caller does not have)
//! and the event stream built on it, and the release of every waiter when the broker stops.
//! Watchers are told version ids and times, never credentials.

use std::time::Duration;

use tokio::sync::watch;

use super::error::BrokerError;
use super::serve::{Broker, Served};
use super::state::{Published, VersionInfo};

/// One change a watcher is told of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionEvent {
    /// The database now serves this version, or it read a new pending version of a rotation.
    Version(VersionInfo),
    /// The secret or the RDS database is gone.
    Deleted,
}

/// How a long poll ended.
#[derive(Debug)]
pub enum Waited {
    /// The database serves a version the caller does not have.
    Changed(Served),
    /// The wait ran out, or the broker is stopping: still the version the caller has.
    Unchanged(Served),
}

/// A database's changes as they happen, until the broker stops.
#[derive(Debug)]
pub struct VersionWatch {
    versions: watch::Receiver<Published>,
    closing: watch::Receiver<bool>,
}

impl VersionWatch {
    /// The next change; `None` once the broker stops.
    pub async fn next(&mut self) -> Option<VersionEvent> {
        loop {
            tokio::select! {
                biased;
                () = closed(&mut self.closing) => return None,
                changed = self.versions.changed() => {
                    changed.ok()?;
                    let event = match &*self.versions.borrow_and_update() {
                        Published::Nothing => None,
                        Published::Version(info) => Some(VersionEvent::Version(info.clone())),
                        Published::Deleted => Some(VersionEvent::Deleted),
                    };
                    if event.is_some() {
                        return event;
                    }
                }
            }
        }
    }
}

/// Completes once the broker is closing (the guard `wait_for` returns is not `Send`; it is
/// dropped here, before any other await).
async fn closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await;
}

impl Broker {
    /// Waits up to `wait` for `db` to serve a version for which `known` (the versions the
    /// caller has) is false: at once when it already does, else when a fetch brings one (the
    /// caller shares the broker's fetches; a wait makes no upstream call of its own). Answers
    /// the version the caller has when the wait runs out or the broker stops, and the error
    /// when the secret is gone meanwhile.
    pub async fn wait_for_change(
        &self,
        db: &str,
        known: impl Fn(&str) -> bool,
        wait: Duration,
    ) -> Result<Waited, BrokerError> {
        let state = self.lookup(db)?;
        // Subscribed before the first look, so that no change between the two is missed.
        let mut versions = state.published.subscribe();
        let mut closing = self.closing.subscribe();
        let served = self.get(db).await?;
        if !known(&served.credentials.version_id) {
            return Ok(Waited::Changed(served));
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                biased;
                () = closed(&mut closing) => break,
                () = tokio::time::sleep_until(deadline) => break,
                changed = versions.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let new = match &*versions.borrow_and_update() {
                        Published::Nothing => false,
                        Published::Version(info) => !known(&info.version_id),
                        Published::Deleted => true,
                    };
                    if new {
                        let now = self.get(db).await?;
                        if !known(&now.credentials.version_id) {
                            return Ok(Waited::Changed(now));
                        }
                    }
                }
            }
        }
        Ok(Waited::Unchanged(self.cached(db)?.unwrap_or(served)))
    }

    /// The changes of `db` from now on, until the broker stops.
    pub fn watch(&self, db: &str) -> Result<VersionWatch, BrokerError> {
        let state = self.lookup(db)?;
        Ok(VersionWatch {
            versions: state.published.subscribe(),
            closing: self.closing.subscribe(),
        })
    }

    /// Ends every wait and watch now and any begun later: the broker is stopping, and held
    /// requests must not hold up the drain.
    pub fn release_waiters(&self) {
        self.closing.send_replace(true);
    }
}
