//! Logging set-up: `tracing` to stderr, human-readable or JSON, filtered by `RUST_LOG` when set,
//! else by the configured level. (Audit events have their own output: see `audit`.) Text lines
//! have every control character escaped, so no value can start a line or steer a terminal.

use std::io::Write;

use tracing::Level;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(log: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse::<Targets>().ok())
        .unwrap_or_else(|| {
            log.level
                .parse()
                .expect("log.level was checked when the configuration was loaded")
        });
    let filter = without_sdk_trace(filter);
    let logs = match log.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(|| EscapingWriter(std::io::stderr()))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .init();
}

/// The AWS SDK's crates, whose trace lines print what a response held (ids, names, endpoints).
const SDK_TARGETS: [&str; 14] = [
    "aws_config",
    "aws_credential_types",
    "aws_runtime",
    "aws_sdk_rds",
    "aws_sdk_secretsmanager",
    "aws_sigv4",
    "aws_smithy_async",
    "aws_smithy_http",
    "aws_smithy_http_client",
    "aws_smithy_json",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_types",
    "aws_types",
];

/// `filter`, with the SDK's crates at debug at most: nothing of a response reaches the log, at
/// any configured level.
fn without_sdk_trace(mut filter: Targets) -> Targets {
    for target in SDK_TARGETS {
        if filter.would_enable(target, &Level::TRACE) {
            filter = filter.with_target(target, LevelFilter::DEBUG);
        }
    }
    filter
}

/// Writes each formatted log line (the formatter writes one line per call) with its control
/// characters escaped, but for the newline that ends it.
#[derive(Debug)]
pub struct EscapingWriter<W>(pub W);

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (line, end) = match buf.strip_suffix(b"\n") {
            Some(line) => (line, "\n"),
            None => (buf, ""),
        };
        let text = String::from_utf8_lossy(line);
        let mut out = String::with_capacity(text.len() + 1);
        for c in text.chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    use std::fmt::Write as _;
                    let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        out.push_str(end);
        self.0.write_all(out.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_never_logs_at_trace_and_everything_else_keeps_its_level() {
        let filter = without_sdk_trace("trace".parse().unwrap());
        assert!(!filter.would_enable("aws_smithy_runtime::client::orchestrator", &Level::TRACE));
        assert!(filter.would_enable("aws_smithy_runtime::client::orchestrator", &Level::DEBUG));
        assert!(filter.would_enable("credential_broker::broker", &Level::TRACE));
        let info = without_sdk_trace("info".parse().unwrap());
        assert!(!info.would_enable("aws_config", &Level::DEBUG));
    }

    #[test]
    fn control_characters_are_escaped_and_the_line_end_kept() {
        let mut writer = EscapingWriter(Vec::new());
        writer
            .write_all("v=a\r\nINFO forged\x1b[31m\u{9b}x\ty\n".as_bytes())
            .unwrap();
        assert_eq!(
            String::from_utf8(writer.0).unwrap(),
            "v=a\\r\\nINFO forged\\u{1b}[31m\\u{9b}x\\ty\n"
        );
    }
}
