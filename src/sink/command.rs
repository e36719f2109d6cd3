//! The command a sink runs after each change (to reload PgBouncer, signal a process): no shell,
//! an environment of PATH and the change's names only, no input, output discarded, killed when
//! it outlives its timeout.

use std::process::{ExitStatus, Stdio};

use tokio::process::Command;

use crate::config::SinkConfig;

/// The `PATH` a command gets (the broker's own environment is not passed on).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How a command ended.
#[derive(Debug)]
pub enum Outcome {
    Succeeded,
    /// Exited non-zero or by a signal.
    Failed(ExitStatus),
    /// Outlived `on_change_timeout`; killed.
    TimedOut,
    /// Could not be started.
    NotStarted(std::io::Error),
}

impl Outcome {
    /// The metric label of the outcome.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Succeeded => "ok",
            Self::Failed(_) => "failed",
            Self::TimedOut => "timeout",
            Self::NotStarted(_) => "not_started",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Succeeded => f.write_str("succeeded"),
            Self::Failed(status) => write!(f, "failed: {status}"),
            Self::TimedOut => f.write_str("killed at on_change_timeout"),
            Self::NotStarted(e) => write!(f, "could not be started: {e}"),
        }
    }
}

/// Runs the sink's `on_change` once, told which database, version and file changed.
pub async fn run(sink: &SinkConfig, version_id: &str) -> Outcome {
    let Some((program, args)) = sink.on_change.split_first() else {
        return Outcome::Succeeded;
    };
    let child = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", PATH)
        .env("CREDENTIAL_BROKER_DATABASE", sink.database.as_str())
        .env("CREDENTIAL_BROKER_VERSION", version_id)
        .env("CREDENTIAL_BROKER_FILE", &sink.path)
        .env("CREDENTIAL_BROKER_FORMAT", sink.format.name())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return Outcome::NotStarted(e),
    };
    match tokio::time::timeout(sink.on_change_timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Outcome::Succeeded,
        Ok(Ok(status)) => Outcome::Failed(status),
        Ok(Err(e)) => Outcome::NotStarted(e),
        Err(_) => {
            let _ = child.kill().await;
            Outcome::TimedOut
        }
    }
}
