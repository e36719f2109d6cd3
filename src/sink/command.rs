//! What a sink does after each change to tell a reader: run its command (no shell, an
//! environment of PATH and the change's names only, no input, output discarded, killed when it
//! outlives its timeout), or send its signal to the process its pid file names (for images with
//! no `kill`, in a shared process namespace).

use std::path::Path;
use std::process::{ExitStatus, Stdio};

use rustix::process::{Pid, Signal};
use tokio::process::Command;

use crate::config::{ReloadSignal, SignalReload, SinkConfig};
use crate::files::read_regular;

/// The `PATH` a command gets (the broker's own environment is not passed on).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How a command or signal ended.
#[derive(Debug)]
pub enum Outcome {
    Succeeded,
    /// Exited non-zero or by a signal.
    Failed(ExitStatus),
    /// Outlived `on_change_timeout`; killed.
    TimedOut,
    /// Could not be started.
    NotStarted(std::io::Error),
    /// The signal could not be sent: why.
    NotSignalled(String),
}

impl Outcome {
    /// The metric label of the outcome.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Succeeded => "ok",
            Self::Failed(_) => "failed",
            Self::TimedOut => "timeout",
            Self::NotStarted(_) | Self::NotSignalled(_) => "not_started",
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
            Self::NotSignalled(why) => write!(f, "the signal was not sent: {why}"),
        }
    }
}

/// Tells the sink's reader once: sends its signal, or runs its `on_change` told which
/// database, version and file changed.
pub async fn run(sink: &SinkConfig, version_id: &str) -> Outcome {
    if let Some(reload) = &sink.on_change_signal {
        return match send(reload) {
            Ok(()) => Outcome::Succeeded,
            Err(why) => Outcome::NotSignalled(why),
        };
    }
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

/// The largest pid file read: a pid and a line break.
const MAX_PIDFILE_BYTES: u64 = 32;

/// Sends the reload's signal to the process its pid file names.
fn send(reload: &SignalReload) -> Result<(), String> {
    let pid = read_pid(&reload.pidfile)?;
    let signal = match reload.signal {
        ReloadSignal::Hup => Signal::HUP,
        ReloadSignal::Usr1 => Signal::USR1,
        ReloadSignal::Usr2 => Signal::USR2,
    };
    rustix::process::kill_process(pid, signal).map_err(|e| {
        format!(
            "{} to pid {} (from {}): {e}",
            reload.signal.name(),
            pid.as_raw_nonzero(),
            reload.pidfile.display()
        )
    })
}

/// The pid a pid file holds: digits and white space only, a process other than init and this
/// one (a pid of 0 or -1 would signal whole process groups, and the file may be written by
/// another container).
fn read_pid(pidfile: &Path) -> Result<Pid, String> {
    let bytes = read_regular(pidfile, MAX_PIDFILE_BYTES)
        .map_err(|e| format!("cannot read {}: {e}", pidfile.display()))?;
    let text = std::str::from_utf8(&bytes).unwrap_or_default().trim();
    let pid = Some(text)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<i32>().ok())
        .filter(|pid| *pid > 1)
        .and_then(Pid::from_raw)
        .ok_or_else(|| format!("{} does not hold a process id", pidfile.display()))?;
    if pid == rustix::process::getpid() {
        return Err(format!(
            "{} names this broker's own process",
            pidfile.display()
        ));
    }
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_names_one_other_process_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pid");
        let read = |text: &str| {
            std::fs::write(&file, text).unwrap();
            read_pid(&file).map(|pid| pid.as_raw_nonzero().get())
        };
        assert_eq!(read("4242\n"), Ok(4242));
        assert_eq!(read("  77 "), Ok(77));
        let own = rustix::process::getpid().as_raw_nonzero().get().to_string();
        for bad in [
            "",
            "0",
            "1",
            "-1",
            "-4242",
            "+5",
            "12 34",
            "0x10",
            "99999999999",
            "4242\0",
            &own,
        ] {
            assert!(read(bad).is_err(), "{bad:?} is refused");
        }
        std::fs::write(&file, "1".repeat(40)).unwrap();
        assert!(
            read_pid(&file).unwrap_err().contains("cannot read"),
            "too long a file is not read"
        );
        assert!(read_pid(&dir.path().join("absent")).is_err());
        assert!(read_pid(dir.path()).is_err(), "a directory is no pid file");
    }
}
