//! The audit trail's output: one JSON line per credentials request, serialized into a buffer
//! that is written out when it fills, every flush interval, and at shutdown, so a request costs a
//! short lock and no system call. The events are built by `http::audit`; none holds a secret.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tracing::warn;

use crate::config::AuditConfig;

/// How long an event may wait in the buffer before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Where audit lines go: stderr or a file of their own.
pub struct AuditSink {
    out: Mutex<BufWriter<Box<dyn Write + Send>>>,
}

impl std::fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditSink")
    }
}

impl AuditSink {
    /// The sink `config` names; `None` when auditing is off. Opens (creating with mode 0600, and
    /// appending to) the audit file.
    pub fn open(config: &AuditConfig) -> std::io::Result<Option<Arc<Self>>> {
        let out: Box<dyn Write + Send> = match config {
            AuditConfig::Off => return Ok(None),
            AuditConfig::Stderr => Box::new(std::io::stderr()),
            AuditConfig::File(path) => Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(path)?,
            ),
        };
        Ok(Some(Arc::new(Self {
            out: Mutex::new(BufWriter::with_capacity(64 * 1024, out)),
        })))
    }

    /// Appends `event` as one JSON line, serialized straight into the buffer.
    pub fn write_event(&self, event: &impl Serialize) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let written = serde_json::to_writer(&mut *out, event)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"));
        if let Err(err) = written {
            warn!(error = %err, "cannot write the audit trail");
        }
    }

    /// Writes out whatever is buffered.
    pub fn flush(&self) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(err) = out.flush() {
            warn!(error = %err, "cannot write the audit trail");
        }
    }

    /// Flushes every [`FLUSH_INTERVAL`] until the task is dropped.
    pub async fn run_flush(self: Arc<Self>) {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let sink = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || sink.flush()).await;
        }
    }
}

impl Drop for AuditSink {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_file_on_flush_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = AuditSink::open(&AuditConfig::File(path.clone()))
            .unwrap()
            .unwrap();
        sink.write_event(&serde_json::json!({"n": 1}));
        sink.write_event(&serde_json::json!({"n": 2}));
        sink.flush();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"n\":1}\n{\"n\":2}\n"
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert!(AuditSink::open(&AuditConfig::Off).unwrap().is_none());
    }
}
