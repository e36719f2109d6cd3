//! Credential files (`[[sinks]]`): one task per file follows its database's version, rewrites
//! the file when the version changes (or the pending version, for formats that show it) and
//! runs the sink's command, retries what failed with a
//! growing delay, and tells readiness whether each file holds the version served.

mod command;
mod write;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::IntCounterVec;
use tracing::{info, warn};

pub use write::create_dirs;

use crate::broker::{Broker, Served, VersionEvent, VersionInfo};
use crate::config::SinkConfig;
use crate::metrics::Metrics;

/// The first delay before a failed write or command is tried again; it doubles up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_mins(5);

/// One credential file and what it holds.
#[derive(Debug)]
pub struct Sink {
    config: SinkConfig,
    /// The sink's name in logs and metric labels: its path.
    name: String,
    state: Mutex<Holds>,
    writes: IntCounterVec,
    commands: IntCounterVec,
}

/// What a sink's file holds, for readiness.
#[derive(Debug, Default)]
struct Holds {
    /// The versions last written.
    written: Option<Shown>,
    /// The file holds the version served: false before the first write, while a newer version
    /// waits to be written and after a failed write.
    current: bool,
}

impl Sink {
    pub fn new(config: SinkConfig, metrics: &Metrics) -> Arc<Self> {
        Arc::new(Self {
            name: config.path.display().to_string(),
            config,
            state: Mutex::default(),
            writes: metrics.sink_writes.clone(),
            commands: metrics.sink_commands.clone(),
        })
    }

    /// The sink's name (its path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the file holds the version the broker serves.
    pub fn is_current(&self) -> bool {
        self.holds().current
    }

    fn holds(&self) -> std::sync::MutexGuard<'_, Holds> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What a file of the sink's format shows of `info`.
    fn shown(&self, info: VersionInfo) -> Shown {
        Shown {
            version: info.version_id,
            pending: info
                .pending_version_id
                .filter(|_| self.config.format.shows_pending()),
        }
    }

    /// Keeps the file current until the broker stops: a write at start, one on each change of
    /// version, each failure tried again after a delay that doubles from 1 s to 5 min.
    pub async fn run(self: Arc<Self>, broker: Arc<Broker>) {
        let db = self.config.database.as_str();
        // Watching before the first read, so that no change between the two is missed.
        let Ok(mut watch) = broker.watch(db) else {
            return;
        };
        let mut command_due = None;
        let mut delay = RETRY_FIRST;
        loop {
            let retry = if self.sync(&broker, &mut command_due).await {
                let wait = delay;
                delay = (delay * 2).min(RETRY_MAX);
                Some(wait)
            } else {
                delay = RETRY_FIRST;
                None
            };
            tokio::select! {
                event = watch.next() => match event {
                    None => return,
                    Some(VersionEvent::Deleted) => {
                        warn!(sink = %self.name, db, "the database's secret is gone; the file keeps the last credentials written");
                        self.holds().current = false;
                    }
                    Some(VersionEvent::Version(info)) => {
                        let shown = self.shown(info);
                        let mut holds = self.holds();
                        if holds.written.as_ref() != Some(&shown) {
                            holds.current = false;
                        }
                    }
                },
                () = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => {}
            }
        }
    }

    /// Brings the file to the version served and runs the command still due; true when
    /// something failed and must be tried again.
    async fn sync(&self, broker: &Broker, command_due: &mut Option<String>) -> bool {
        let db = self.config.database.as_str();
        let served = match broker.get(db).await {
            Ok(served) => served,
            Err(e) => {
                warn!(sink = %self.name, db, error = %e, "cannot get the credentials; the file keeps what it holds");
                self.holds().current = false;
                return true;
            }
        };
        let shown = self.shown(VersionInfo::of(&served.credentials));
        if self.holds().written.as_ref() == Some(&shown) {
            self.holds().current = true;
        } else if !self.write(&served, shown, command_due).await {
            return true;
        }
        let Some(due) = command_due.as_deref() else {
            return false;
        };
        let outcome = command::run(&self.config, due).await;
        self.commands
            .with_label_values(&[&self.name, outcome.label()])
            .inc();
        match outcome {
            command::Outcome::Succeeded => {
                *command_due = None;
                false
            }
            failed => {
                warn!(sink = %self.name, db, outcome = %failed, "the sink's on_change failed; trying again");
                true
            }
        }
    }

    /// Writes the served version to the file and makes its command due; false when it failed.
    async fn write(&self, served: &Served, shown: Shown, command_due: &mut Option<String>) -> bool {
        let db = self.config.database.as_str();
        let version = &shown.version;
        // Files carry no staleness: a file outlives the moment it was written.
        let body = match served.credentials.render(self.config.format, false) {
            Ok(rendered) => rendered.body,
            Err(e) => {
                self.writes
                    .with_label_values(&[&self.name, "render_error"])
                    .inc();
                warn!(sink = %self.name, db, version = %version, error = %e, "cannot render the credentials in the sink's format; the file keeps what it holds");
                self.holds().current = false;
                return false;
            }
        };
        let config = self.config.clone();
        let written = tokio::task::spawn_blocking(move || write::replace(&config, &body))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = written {
            self.writes.with_label_values(&[&self.name, "error"]).inc();
            warn!(sink = %self.name, db, error = %e, "cannot write the credential file; trying again");
            self.holds().current = false;
            return false;
        }
        self.writes.with_label_values(&[&self.name, "ok"]).inc();
        info!(sink = %self.name, db, version = %version, pending_version = shown.pending.as_deref(), "credential file written");
        *command_due = self.config.tells_reader().then(|| version.clone());
        *self.holds() = Holds {
            written: Some(shown),
            current: true,
        };
        true
    }
}

/// The versions a file shows: the version, and the pending version for formats that hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    version: String,
    pending: Option<String>,
}
