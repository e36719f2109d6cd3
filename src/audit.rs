//! The audit trail's output: one JSON line per credentials request, written into a buffer
//! that goes out when it fills, every flush interval, and at shutdown, so a request costs a
//! short lock and no system call. The events come from `http::audit`; none holds a secret.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::warn;

use crate::config::AuditConfig;

/// How long an event may wait in the buffer before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// One credentials request as the audit trail records it.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub client: &'a str,
    pub db: &'a str,
    pub action: &'static str,
    pub result: &'a str,
    /// The version served or confirmed; empty when none was.
    pub version_id: &'a str,
}

/// Where audit lines go: stderr or a file of their own.
pub struct AuditSink {
    out: Mutex<Out>,
}

/// The buffered output and the timestamp text of the last second an event was written in, so
/// that a timestamp is formatted once per second rather than once per event.
struct Out {
    writer: BufWriter<Box<dyn Write + Send>>,
    second: u64,
    /// `YYYY-MM-DDTHH:MM:SS` of `second`.
    prefix: [u8; 19],
}

impl Out {
    /// Appends `event` at time `now` as one line: `{"timestamp":"<RFC 3339, ms, UTC>",
    /// "target":"audit","client":…,"db":…,"action":…,"result":…,"version_id":…}`.
    fn write_line(&mut self, now: SystemTime, event: &Event<'_>) -> std::io::Result<()> {
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let second = since_epoch.as_secs();
        if second != self.second || self.prefix[0] == 0 {
            let text = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(second))
                .to_string();
            self.prefix.copy_from_slice(&text.as_bytes()[..19]);
            self.second = second;
        }
        let millis = since_epoch.subsec_millis();
        let out = &mut self.writer;
        out.write_all(b"{\"timestamp\":\"")?;
        out.write_all(&self.prefix)?;
        out.write_all(&[
            b'.',
            b'0' + u8::try_from(millis / 100).expect("a digit"),
            b'0' + u8::try_from(millis / 10 % 10).expect("a digit"),
            b'0' + u8::try_from(millis % 10).expect("a digit"),
        ])?;
        out.write_all(b"Z\",\"target\":\"audit\",\"client\":")?;
        serde_json::to_writer(&mut *out, event.client)?;
        out.write_all(b",\"db\":")?;
        serde_json::to_writer(&mut *out, event.db)?;
        out.write_all(b",\"action\":")?;
        serde_json::to_writer(&mut *out, event.action)?;
        out.write_all(b",\"result\":")?;
        serde_json::to_writer(&mut *out, event.result)?;
        out.write_all(b",\"version_id\":")?;
        serde_json::to_writer(&mut *out, event.version_id)?;
        out.write_all(b"}\n")
    }
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
            out: Mutex::new(Out {
                writer: BufWriter::with_capacity(64 * 1024, out),
                second: 0,
                prefix: [0; 19],
            }),
        })))
    }

    /// Appends `event` as one line, stamped with the current time.
    pub fn write(&self, event: &Event<'_>) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        // Stamped under the lock, so that the lines of the trail are in time order.
        if let Err(err) = out.write_line(SystemTime::now(), event) {
            warn!(error = %err, "cannot write the audit trail");
        }
    }

    /// Writes out whatever is buffered.
    pub fn flush(&self) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(err) = out.writer.flush() {
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

    const EVENT: Event<'static> = Event {
        client: "billing",
        db: "orders",
        action: "read",
        result: "ok",
        version_id: "v-1",
    };

    #[test]
    fn lines_reach_the_file_on_flush_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = AuditSink::open(&AuditConfig::File(path.clone()))
            .unwrap()
            .unwrap();
        sink.write(&EVENT);
        sink.write(&Event {
            result: "forbidden",
            version_id: "",
            ..EVENT
        });
        sink.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["result"], "ok");
        assert_eq!(lines[1]["result"], "forbidden");
        assert_eq!(lines[1]["version_id"], "");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert!(AuditSink::open(&AuditConfig::Off).unwrap().is_none());
    }

    /// The lines written into memory at the given times.
    fn lines_at(times: &[SystemTime], event: &Event<'_>) -> Vec<serde_json::Value> {
        let (mut out, buffer) = memory_out();
        for time in times {
            out.write_line(*time, event).unwrap();
        }
        out.writer.flush().unwrap();
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    fn memory_out() -> (Out, Arc<Mutex<Vec<u8>>>) {
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let out = Out {
            writer: BufWriter::new(Box::new(Shared(Arc::clone(&buffer)))),
            second: 0,
            prefix: [0; 19],
        };
        (out, buffer)
    }

    #[test]
    fn timestamps_are_rfc3339_with_milliseconds_across_seconds() {
        let base = UNIX_EPOCH + Duration::from_millis(1_795_000_000_998);
        let times: Vec<SystemTime> = [0, 1, 2, 5, 1_000, 86_400_000, 31_000_000_007]
            .iter()
            .map(|ms| base + Duration::from_millis(*ms))
            .chain([UNIX_EPOCH, UNIX_EPOCH + Duration::from_millis(1)])
            .collect();
        let lines = lines_at(&times, &EVENT);
        for (time, line) in times.iter().zip(&lines) {
            assert_eq!(
                line["timestamp"],
                humantime::format_rfc3339_millis(*time).to_string()
            );
        }
    }

    #[test]
    fn every_field_is_json_escaped_and_in_order() {
        let event = Event {
            client: "a\"b",
            db: "(invalid)",
            action: "refresh",
            result: "not_modified",
            version_id: "v\n\\\u{1}é",
        };
        let (mut out, buffer) = memory_out();
        out.write_line(UNIX_EPOCH, &event).unwrap();
        out.writer.flush().unwrap();
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "one line: {text:?}");
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            line,
            serde_json::json!({
                "timestamp": "1970-01-01T00:00:00.000Z",
                "target": "audit",
                "client": "a\"b",
                "db": "(invalid)",
                "action": "refresh",
                "result": "not_modified",
                "version_id": "v\n\\\u{1}é",
            })
        );
        assert_eq!(
            text,
            concat!(
                r#"{"timestamp":"1970-01-01T00:00:00.000Z","target":"audit","client":"a\"b","#,
                r#""db":"(invalid)","action":"refresh","result":"not_modified","#,
                r#""version_id":"v\n\\\u0001é"}"#,
                "\n"
            )
        );
    }
}
