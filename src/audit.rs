//! The audit trail's output: JSON lines, one per credentials request or, for identical requests
//! served by one thread within one millisecond, one with their count (the line they would each
//! have written, which the millisecond timestamp cannot tell apart, and `"count"`). Lines go to a
//! buffer of the calling thread's own, and are written out (the threads' lines merged in time
//! order) by a flusher on the blocking pool every flush interval and at shutdown, and under load
//! by the request that brings a buffer to 32 KiB. Most requests cost an uncontended lock, a
//! comparison with the millisecond's open events and no system call. Under load, one write of
//! some 32 KiB every few hundred lines, on the request's own thread, costs less than waking
//! another thread to do it: on a busy machine that thread takes a core from the workers
//! hundreds of times a second. The buffers have a fixed size: when the output falls behind and
//! one fills, the request that finds it full waits for the output, so a burst costs time, never
//! memory kept after it. The events come from `http::audit`; none holds a secret.

use std::io::{BufWriter, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tracing::warn;

use crate::config::AuditConfig;
use crate::metrics::{SHARDS, shard_index};

/// How long an event may wait in the buffer before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// The size of one thread's buffer, and of the spare that takes its place at a flush.
const BUFFER_BYTES: usize = 64 * 1024;
/// Bytes in one thread's buffer at which the request that brings it there writes the buffers
/// out (or, when they are being written already, wakes the flusher to go again).
const EARLY_FLUSH_BYTES: usize = BUFFER_BYTES / 2;
/// Room a line may need (its fields are bounded before they get here).
const LINE_ROOM_BYTES: usize = 4 * 1024;
/// Distinct events of one millisecond a thread counts at once; one more writes them out first.
const MAX_RUNS: usize = 4;
/// Room a buffer must have for an event to be recorded: recording one may write out every open
/// run, and the run it opens is written out later. A buffer with less left is written out
/// first, by the request that finds it so.
const EVENT_ROOM_BYTES: usize = LINE_ROOM_BYTES * (MAX_RUNS + 1);
/// Every line starts with its timestamp, `{"timestamp":"YYYY-MM-DDTHH:MM:SS.mmmZ"`, so the
/// first bytes of two lines compare as their times do.
const TIMESTAMP_BYTES: usize = 39;

/// One credentials request as the audit trail records it.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub client: &'a str,
    pub db: &'a str,
    pub action: &'static str,
    pub result: &'a str,
    /// The version served or confirmed; empty when none was.
    pub version_id: &'a str,
    /// The secret a request of the AWS agent's API named (`db` is empty then): bounded and
    /// free of control characters before it gets here.
    pub secret_id: Option<&'a str>,
}

/// Where audit lines go: stderr or a file of their own.
pub struct AuditSink {
    /// The lines waiting to be written, by thread (see [`shard_index`]).
    shards: Box<[Shard]>,
    /// Held while writing, so that buffers go out in the order they were filled.
    output: Mutex<Output>,
    wake: Notify,
}

/// One thread's buffer, on cache lines of its own.
#[repr(align(128))]
struct Shard(Mutex<Lines>);

/// The lines waiting to be written; the events of the current millisecond, counted and not yet
/// written as lines; and the timestamp text of the last second a line was written in, so that a
/// timestamp is formatted once per second rather than once per line.
struct Lines {
    pending: Vec<u8>,
    /// Milliseconds since the epoch of the open runs.
    millisecond: u64,
    /// The first `open` are the events of `millisecond` so far; the others are closed ones kept
    /// for their allocations.
    runs: Vec<Run>,
    open: usize,
    second: u64,
    /// `YYYY-MM-DDTHH:MM:SS` of `second`.
    prefix: [u8; 19],
}

/// The writer, and the buffers that trade places with the shards' [`Lines::pending`] at each
/// flush.
struct Output {
    /// Buffered, so that lines merged from several shards go out [`BUFFER_BYTES`] at a time.
    writer: BufWriter<Box<dyn Write + Send>>,
    /// Empty buffers, to swap in for the shards' full ones.
    spares: Vec<Vec<u8>>,
    /// The shards' buffers taken by the flush in progress.
    taken: Vec<Vec<u8>>,
}

/// Identical events of one millisecond: the event, owned, and how many there were.
#[derive(Default)]
struct Run {
    client: String,
    db: String,
    action: &'static str,
    result: String,
    version_id: String,
    secret_id: Option<String>,
    count: u64,
}

impl Run {
    fn is(&self, event: &Event<'_>) -> bool {
        self.version_id == event.version_id
            && self.db == event.db
            && self.client == event.client
            && self.result == event.result
            && self.action == event.action
            && self.secret_id.as_deref() == event.secret_id
    }

    /// Makes this the run of `event`, counted once, reusing the fields' allocations.
    fn start(&mut self, event: &Event<'_>) {
        fn set(field: &mut String, value: &str) {
            field.clear();
            field.push_str(value);
        }
        set(&mut self.client, event.client);
        set(&mut self.db, event.db);
        self.action = event.action;
        set(&mut self.result, event.result);
        set(&mut self.version_id, event.version_id);
        match event.secret_id {
            Some(secret_id) => set(self.secret_id.get_or_insert_default(), secret_id),
            None => self.secret_id = None,
        }
        self.count = 1;
    }

    /// Appends this run as one line stamped `timestamp` (`YYYY-MM-DDTHH:MM:SS.mmm`):
    /// `{"timestamp":"<RFC 3339, ms, UTC>","target":"audit","client":…,"db":…,"action":…,
    /// "result":…,"version_id":…[,"secret_id":…],"count":…}`.
    fn write_line(&self, timestamp: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        out.extend_from_slice(b"{\"timestamp\":\"");
        out.extend_from_slice(timestamp);
        out.extend_from_slice(b"Z\",\"target\":\"audit\",\"client\":");
        serde_json::to_writer(&mut *out, &self.client)?;
        out.extend_from_slice(b",\"db\":");
        serde_json::to_writer(&mut *out, &self.db)?;
        out.extend_from_slice(b",\"action\":");
        serde_json::to_writer(&mut *out, self.action)?;
        out.extend_from_slice(b",\"result\":");
        serde_json::to_writer(&mut *out, &self.result)?;
        out.extend_from_slice(b",\"version_id\":");
        serde_json::to_writer(&mut *out, &self.version_id)?;
        if let Some(secret_id) = &self.secret_id {
            out.extend_from_slice(b",\"secret_id\":");
            serde_json::to_writer(&mut *out, secret_id)?;
        }
        out.extend_from_slice(b",\"count\":");
        serde_json::to_writer(&mut *out, &self.count)?;
        out.extend_from_slice(b"}\n");
        Ok(())
    }
}

impl Lines {
    fn new() -> Self {
        Self {
            pending: Vec::new(),
            millisecond: 0,
            runs: Vec::new(),
            open: 0,
            second: 0,
            prefix: [0; 19],
        }
    }

    /// Records `event` at time `now`: counted on the open run of identical events when there is
    /// one, else on a new run, after writing out the open ones when `now` is another millisecond
    /// or [`MAX_RUNS`] are open.
    fn record(&mut self, now: SystemTime, event: &Event<'_>) -> std::io::Result<()> {
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let millisecond = since_epoch.as_secs() * 1000 + u64::from(since_epoch.subsec_millis());
        if millisecond != self.millisecond {
            self.write_runs()?;
            self.millisecond = millisecond;
        } else if let Some(run) = self.runs[..self.open].iter_mut().find(|run| run.is(event)) {
            run.count += 1;
            return Ok(());
        } else if self.open == MAX_RUNS {
            self.write_runs()?;
        }
        if self.open == self.runs.len() {
            self.runs.push(Run::default());
        }
        self.runs[self.open].start(event);
        self.open += 1;
        Ok(())
    }

    /// Writes the open runs to `pending`, a line each, in the order they were opened.
    fn write_runs(&mut self) -> std::io::Result<()> {
        let open = std::mem::take(&mut self.open);
        if open == 0 {
            return Ok(());
        }
        let second = self.millisecond / 1000;
        if second != self.second || self.prefix[0] == 0 {
            let text = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(second))
                .to_string();
            self.prefix.copy_from_slice(&text.as_bytes()[..19]);
            self.second = second;
        }
        let millis = self.millisecond % 1000;
        let mut timestamp = [0; 23];
        timestamp[..19].copy_from_slice(&self.prefix);
        timestamp[19..].copy_from_slice(&[
            b'.',
            b'0' + u8::try_from(millis / 100).expect("a digit"),
            b'0' + u8::try_from(millis / 10 % 10).expect("a digit"),
            b'0' + u8::try_from(millis % 10).expect("a digit"),
        ]);
        for run in &self.runs[..open] {
            run.write_line(&timestamp, &mut self.pending)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditSink")
    }
}

impl AuditSink {
    /// The sink `config` names; `None` when auditing is off. Opens (creating with mode 0600, and
    /// appending to) the audit file, which must be a regular file.
    pub fn open(config: &AuditConfig) -> std::io::Result<Option<Arc<Self>>> {
        let out: Box<dyn Write + Send> = match config {
            AuditConfig::Off => return Ok(None),
            AuditConfig::Stderr => Box::new(std::io::stderr()),
            AuditConfig::File(path) => Box::new(crate::files::open_append_regular(path)?),
        };
        Ok(Some(Arc::new(Self {
            shards: (0..SHARDS)
                .map(|_| Shard(Mutex::new(Lines::new())))
                .collect(),
            output: Mutex::new(Output {
                writer: BufWriter::with_capacity(BUFFER_BYTES, out),
                spares: Vec::new(),
                taken: Vec::new(),
            }),
            wake: Notify::new(),
        })))
    }

    /// Appends `event` as one line, stamped with the current time.
    pub fn write(&self, event: &Event<'_>) {
        let shard = &self.shards[shard_index()];
        let mut lines = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.pending.capacity() == 0 {
            lines.pending.reserve_exact(BUFFER_BYTES);
        } else if lines.pending.capacity() - lines.pending.len() < EVENT_ROOM_BYTES {
            // Full: the output cannot keep up, and this request waits for it rather than the
            // buffer growing.
            drop(lines);
            self.flush();
            lines = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
        }
        let before = lines.pending.len();
        // Stamped under the lock, so that each buffer's lines are in time order.
        if let Err(err) = lines.record(SystemTime::now(), event) {
            warn!(error = %err, "cannot write the audit trail");
        }
        let after = lines.pending.len();
        drop(lines);
        if before < EARLY_FLUSH_BYTES && after >= EARLY_FLUSH_BYTES {
            match self.output.try_lock() {
                Ok(output) => self.flush_into(output),
                Err(TryLockError::Poisoned(poisoned)) => self.flush_into(poisoned.into_inner()),
                Err(TryLockError::WouldBlock) => self.wake.notify_one(),
            }
        }
    }

    /// Writes out whatever is buffered, the lines of all threads in time order.
    pub fn flush(&self) {
        self.flush_into(self.output.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// [`Self::flush`] with the output held.
    fn flush_into(&self, mut output: MutexGuard<'_, Output>) {
        let Output {
            writer,
            spares,
            taken,
        } = &mut *output;
        for shard in &self.shards {
            let mut lines = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(err) = lines.write_runs() {
                warn!(error = %err, "cannot write the audit trail");
            }
            if !lines.pending.is_empty() {
                let spare = spares
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(BUFFER_BYTES));
                taken.push(std::mem::replace(&mut lines.pending, spare));
            }
        }
        let written = match taken.as_slice() {
            [] => return,
            [only] => writer.write_all(only),
            several => merge_in_time_order(several, writer),
        };
        if let Err(err) = written.and_then(|()| writer.flush()) {
            warn!(error = %err, "cannot write the audit trail");
        }
        for mut buffer in taken.drain(..) {
            buffer.clear();
            // One that had to grow for an outsized line is not kept.
            if buffer.capacity() == BUFFER_BYTES {
                spares.push(buffer);
            }
        }
    }

    /// Flushes every [`FLUSH_INTERVAL`], or sooner when lines pile up, until the task is
    /// dropped.
    pub async fn run_flush(self: Arc<Self>) {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.wake.notified() => {}
            }
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

/// Writes the lines of `buffers` (each in time order) to `out`, all in time order; lines with
/// the same timestamp keep the order of `buffers`.
fn merge_in_time_order(buffers: &[Vec<u8>], out: &mut impl Write) -> std::io::Result<()> {
    let mut rest: Vec<&[u8]> = buffers.iter().map(Vec::as_slice).collect();
    loop {
        let earliest = rest
            .iter()
            .enumerate()
            .filter(|(_, lines)| !lines.is_empty())
            .min_by_key(|(_, lines)| &lines[..lines.len().min(TIMESTAMP_BYTES)])
            .map(|(index, _)| index);
        let Some(next) = earliest else {
            return Ok(());
        };
        let buffer = rest[next];
        let end = memchr::memchr(b'\n', buffer).map_or(buffer.len(), |newline| newline + 1);
        out.write_all(&buffer[..end])?;
        rest[next] = &buffer[end..];
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
        secret_id: None,
    };

    #[test]
    fn lines_reach_the_file_on_flush_and_the_file_is_private() {
        let (_dir, path, sink) = file_sink();
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

    /// The lines written at the given times.
    fn lines_at(times: &[SystemTime], event: &Event<'_>) -> Vec<serde_json::Value> {
        let mut lines = Lines::new();
        for time in times {
            lines.record(*time, event).unwrap();
        }
        lines.write_runs().unwrap();
        parsed(&lines.pending)
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
            secret_id: None,
        };
        let mut lines = Lines::new();
        lines.record(UNIX_EPOCH, &event).unwrap();
        lines.record(UNIX_EPOCH, &event).unwrap();
        lines.write_runs().unwrap();
        let text = String::from_utf8(lines.pending).unwrap();
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
                "count": 2,
            })
        );
        assert_eq!(
            text,
            concat!(
                r#"{"timestamp":"1970-01-01T00:00:00.000Z","target":"audit","client":"a\"b","#,
                r#""db":"(invalid)","action":"refresh","result":"not_modified","#,
                r#""version_id":"v\n\\\u0001é","count":2}"#,
                "\n"
            )
        );
    }

    /// The lines of `text`, parsed.
    fn parsed(text: &[u8]) -> Vec<serde_json::Value> {
        std::str::from_utf8(text)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn identical_events_of_one_millisecond_are_one_line_with_their_count() {
        let refused = Event {
            result: "forbidden",
            version_id: "",
            ..EVENT
        };
        let named = Event {
            db: "",
            secret_id: Some("prod/orders"),
            ..EVENT
        };
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(1_795_000_000_000 + ms);
        let mut lines = Lines::new();
        for (ms, event) in [
            (0, EVENT),
            (0, refused),
            (0, EVENT),
            (0, named),
            (0, EVENT),
            (0, refused),
            (1, EVENT),
            (3, EVENT),
            (3, EVENT),
        ] {
            lines.record(at(ms), &event).unwrap();
        }
        assert_eq!(
            parsed(&lines.pending).len(),
            4,
            "the last millisecond is still open"
        );
        lines.write_runs().unwrap();
        let got: Vec<(String, String, String, u64)> = parsed(&lines.pending)
            .iter()
            .map(|line| {
                (
                    line["timestamp"].as_str().unwrap()[20..23].to_owned(),
                    line["result"].as_str().unwrap().to_owned(),
                    line["secret_id"].as_str().unwrap_or("-").to_owned(),
                    line["count"].as_u64().unwrap(),
                )
            })
            .collect();
        let expected = [
            ("000", "ok", "-", 3),
            ("000", "forbidden", "-", 2),
            ("000", "ok", "prod/orders", 1),
            ("001", "ok", "-", 1),
            ("003", "ok", "-", 2),
        ]
        .map(|(ms, result, secret, count)| (ms.into(), result.into(), secret.into(), count));
        assert_eq!(got, expected);
    }

    #[test]
    fn more_distinct_events_than_runs_are_all_counted() {
        let versions: Vec<String> = (0..10).map(|i| format!("v-{i}")).collect();
        let mut lines = Lines::new();
        for _ in 0..3 {
            for version in &versions {
                let event = Event {
                    version_id: version,
                    ..EVENT
                };
                lines.record(UNIX_EPOCH, &event).unwrap();
                assert!(lines.open <= MAX_RUNS);
            }
        }
        lines.write_runs().unwrap();
        let written = parsed(&lines.pending);
        for version in &versions {
            let count: u64 = written
                .iter()
                .filter(|line| line["version_id"] == version.as_str())
                .map(|line| line["count"].as_u64().unwrap())
                .sum();
            assert_eq!(count, 3, "{version}");
        }
    }

    #[test]
    fn concurrent_identical_events_are_all_counted_on_fewer_lines() {
        let (_dir, path, sink) = file_sink();
        let writers = 4;
        let each = 20_000;
        write_from_threads(&sink, writers, each, |_, _| sink.write(&EVENT));
        let written = parsed(&std::fs::read(&path).unwrap());
        let counted: u64 = written
            .iter()
            .map(|line| line["count"].as_u64().unwrap())
            .sum();
        assert_eq!(counted, u64::try_from(writers * each).unwrap());
        assert!(
            written.len() < writers * each / 2,
            "{} lines for {} events",
            written.len(),
            writers * each
        );
    }

    /// A sink writing to a new audit file in a temporary directory (removed when dropped).
    fn file_sink() -> (tempfile::TempDir, std::path::PathBuf, Arc<AuditSink>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = AuditSink::open(&AuditConfig::File(path.clone()))
            .unwrap()
            .unwrap();
        (dir, path, sink)
    }

    /// Calls `write(thread, i)` for `i` below `each` on `writers` threads while another thread
    /// flushes `sink` 50 times, then flushes it once more.
    fn write_from_threads(
        sink: &AuditSink,
        writers: usize,
        each: usize,
        write: impl Fn(usize, usize) + Sync,
    ) {
        std::thread::scope(|scope| {
            for thread in 0..writers {
                let write = &write;
                scope.spawn(move || (0..each).for_each(|i| write(thread, i)));
            }
            scope.spawn(|| {
                for _ in 0..50 {
                    sink.flush();
                }
            });
        });
        sink.flush();
    }

    /// `field` of every line in the audit file at `path`, in file order.
    fn written(path: &std::path::Path, field: &str) -> Vec<String> {
        parsed(&std::fs::read(path).unwrap())
            .iter()
            .map(|line| line[field].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn buffers_are_merged_in_time_order_and_ties_keep_buffer_order() {
        let line = |time: &str, tag: &str| {
            format!("{{\"timestamp\":\"2026-11-22T03:01:{time}Z\",\"version_id\":\"{tag}\"}}\n")
        };
        let a = [
            line("01.000", "a1"),
            line("01.005", "a2"),
            line("02.000", "a3"),
        ]
        .concat();
        let b = [line("01.001", "b1"), line("01.005", "b2")].concat();
        let c = [line("00.999", "c1"), line("03.000", "c2")].concat();
        let mut out = Vec::new();
        merge_in_time_order(&[a.into_bytes(), b.into_bytes(), c.into_bytes()], &mut out).unwrap();
        let tags: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["version_id"].to_string()
            })
            .collect();
        assert_eq!(
            tags,
            ["c1", "a1", "b1", "a2", "b2", "a3", "c2"].map(|t| format!("\"{t}\""))
        );
    }

    #[test]
    fn lines_of_several_threads_are_written_in_time_order() {
        let (_dir, path, sink) = file_sink();
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let sink = &sink;
                scope.spawn(move || {
                    // Spread over some 20 ms, so that the threads' lines interleave in time.
                    for i in 0..100 {
                        let version = format!("t{thread}-{i}");
                        sink.write(&Event {
                            version_id: &version,
                            ..EVENT
                        });
                        std::thread::sleep(Duration::from_micros(200));
                    }
                });
            }
        });
        sink.flush();
        let times = written(&path, "timestamp");
        assert_eq!(times.len(), 400);
        assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{times:?}");
    }

    #[test]
    fn concurrent_lines_all_reach_the_file_in_order() {
        let (_dir, path, sink) = file_sink();
        let writers = 4;
        let each = 1000;
        write_from_threads(&sink, writers, each, |thread, i| {
            let version = format!("t{thread}-{i:05}");
            sink.write(&Event {
                version_id: &version,
                ..EVENT
            });
        });
        let versions = written(&path, "version_id");
        assert_eq!(versions.len(), writers * each);
        for thread in 0..writers {
            let prefix = format!("t{thread}-");
            let own: Vec<&String> = versions.iter().filter(|v| v.starts_with(&prefix)).collect();
            assert_eq!(own.len(), each);
            assert!(
                own.windows(2).all(|pair| pair[0] < pair[1]),
                "thread {thread} in order"
            );
        }
    }

    #[test]
    fn a_buffer_half_full_is_written_out_by_the_request_that_fills_it() {
        let (_dir, path, sink) = file_sink();
        let woken = |sink: &AuditSink| {
            // A stored wake-up completes at once; none leaves the future pending.
            let notified = sink.wake.notified();
            tokio::pin!(notified);
            notified
                .as_mut()
                .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
                .is_ready()
        };
        let pending = |sink: &AuditSink| sink.shards[shard_index()].0.lock().unwrap().pending.len();
        let mut count = 0;
        // Each event is another version: one line each, written once four are open.
        let write = |sink: &AuditSink, count: &mut usize| {
            let version = format!("v-{count:06}");
            sink.write(&Event {
                version_id: &version,
                ..EVENT
            });
            *count += 1;
        };
        while pending(&sink) + 1000 < EARLY_FLUSH_BYTES {
            write(&sink, &mut count);
        }
        assert!(
            written(&path, "result").is_empty(),
            "written below half full"
        );
        while pending(&sink) > 0 {
            write(&sink, &mut count);
            assert!(count < BUFFER_BYTES / 100, "not written out at half full");
        }
        assert_eq!(written(&path, "result").len(), count);
        assert!(!woken(&sink), "the flusher woken for lines already written");

        // While a flush holds the output, the request leaves its lines to the flusher.
        let output = sink.output.lock().unwrap();
        while pending(&sink) < EARLY_FLUSH_BYTES {
            write(&sink, &mut count);
        }
        assert!(woken(&sink), "the flusher not woken with the output busy");
        drop(output);
        sink.flush();
        assert_eq!(pending(&sink), 0);
        assert_eq!(written(&path, "result").len(), count);
    }

    #[test]
    fn a_full_buffer_is_written_out_by_the_request_and_never_grows() {
        let (_dir, path, sink) = file_sink();
        // No flusher runs: what the buffer cannot hold, the writing thread writes out.
        let count = 5 * BUFFER_BYTES / 150;
        for i in 0..count {
            let version = format!("v-{i:06}");
            sink.write(&Event {
                version_id: &version,
                ..EVENT
            });
            let capacity = sink.shards[shard_index()]
                .0
                .lock()
                .unwrap()
                .pending
                .capacity();
            assert_eq!(capacity, BUFFER_BYTES, "after line {i}");
        }
        let on_file = written(&path, "version_id").len();
        assert!(
            on_file > 0 && on_file < count,
            "{on_file} of {count} written before a flush"
        );
        sink.flush();
        let versions = written(&path, "version_id");
        let expected: Vec<String> = (0..count).map(|i| format!("v-{i:06}")).collect();
        assert_eq!(versions, expected);
    }
}
