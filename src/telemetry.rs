//! Logging set-up: `tracing` to stderr, human-readable or JSON, filtered by `RUST_LOG` when set,
//! else by the configured level; audit events (target `audit`) go only to the audit output, as
//! JSON lines written by a background thread that never drops one.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;

use tracing::Level;
use tracing::level_filters::LevelFilter;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{AuditConfig, LogConfig, LogFormat};

/// The `tracing` target of audit events.
pub const AUDIT_TARGET: &str = "audit";

/// Keeps the audit writer running; dropping it flushes the events still queued.
#[must_use = "dropping the guard stops the audit writer"]
#[derive(Debug)]
pub struct Telemetry {
    _audit_writer: Option<WorkerGuard>,
}

/// Installs the global subscriber. Call once, before anything logs. Fails when the audit file
/// cannot be opened.
pub fn init(log: &LogConfig, audit: &AuditConfig) -> std::io::Result<Telemetry> {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse::<Targets>().ok())
        .unwrap_or_else(|| {
            log.level
                .parse()
                .expect("log.level was checked when the configuration was loaded")
        })
        .with_target(AUDIT_TARGET, LevelFilter::OFF);
    let logs = match log.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(filter);
    let (writer, guard) = match audit {
        AuditConfig::Off => (None, None),
        AuditConfig::Stderr => {
            let (writer, guard) = lossless().finish(std::io::stderr());
            (Some(writer), Some(guard))
        }
        AuditConfig::File(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)?;
            let (writer, guard) = lossless().finish(file);
            (Some(writer), Some(guard))
        }
    };
    let audit = writer.map(|writer| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(writer)
            .with_filter(Targets::new().with_target(AUDIT_TARGET, Level::INFO))
    });
    tracing_subscriber::registry().with(logs).with(audit).init();
    Ok(Telemetry {
        _audit_writer: guard,
    })
}

/// A background writer that makes callers wait rather than drop an event when it falls behind.
fn lossless() -> NonBlockingBuilder {
    NonBlockingBuilder::default().lossy(false)
}
