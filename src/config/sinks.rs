//! `[[sinks]]`: credential files the broker keeps current (a format of one database at a path,
//! and an optional command run or signal sent after each change), and the checks of their
//! directories at start.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::check::{ConfigError, MINUTE, MS, duration_in, invalid};
use crate::credentials::{DbName, Format};

/// One credential file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkConfig {
    pub database: DbName,
    pub format: Format,
    /// An absolute path; also the sink's name in logs and metric labels.
    pub path: PathBuf,
    /// Permission bits of the file.
    pub mode: u32,
    /// Owner and group given to the file.
    pub owner: Option<u32>,
    pub group: Option<u32>,
    /// Argv of the command run after each change (no shell); empty for none.
    pub on_change: Vec<String>,
    pub on_change_timeout: Duration,
    /// The signal sent after each change instead of a command, to the process a pid file names.
    pub on_change_signal: Option<SignalReload>,
    /// Create the file's directory (and its parents, mode 0755) when missing.
    pub create_dirs: bool,
}

/// A signal sent to the process whose pid a file holds (PgBouncer's `pidfile`, in a shared
/// process namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalReload {
    pub signal: ReloadSignal,
    pub pidfile: PathBuf,
}

/// The signals a reload may send: those daemons read as "reload" or "reopen".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadSignal {
    Hup,
    Usr1,
    Usr2,
}

impl ReloadSignal {
    fn parse(name: &str) -> Option<Self> {
        match name.strip_prefix("SIG").unwrap_or(name) {
            "HUP" => Some(Self::Hup),
            "USR1" => Some(Self::Usr1),
            "USR2" => Some(Self::Usr2),
            _ => None,
        }
    }

    /// The signal's name, as logs show it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hup => "SIGHUP",
            Self::Usr1 => "SIGUSR1",
            Self::Usr2 => "SIGUSR2",
        }
    }
}

impl SinkConfig {
    /// Whether a command or a signal follows each write.
    pub fn tells_reader(&self) -> bool {
        !self.on_change.is_empty() || self.on_change_signal.is_some()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSink {
    database: String,
    format: String,
    path: PathBuf,
    /// Octal permission bits, as a string: `"0600"`.
    mode: Option<String>,
    owner: Option<u32>,
    group: Option<u32>,
    #[serde(default)]
    on_change: Vec<String>,
    #[serde(default, with = "humantime_serde")]
    on_change_timeout: Option<Duration>,
    on_change_signal: Option<String>,
    on_change_pidfile: Option<PathBuf>,
    #[serde(default)]
    create_dirs: bool,
}

const DEFAULT_MODE: u32 = 0o600;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl RawSink {
    /// Checks the sink at `sinks[index]`: a configured database, a known format, an absolute
    /// path, mode bits, an absolute command.
    pub(super) fn validate(
        self,
        index: usize,
        databases: &[&DbName],
    ) -> Result<SinkConfig, ConfigError> {
        let key = |field: &str| format!("sinks[{index}].{field}");
        let database = databases
            .iter()
            .find(|db| db.as_str() == self.database)
            .map(|db| (*db).clone())
            .ok_or_else(|| {
                invalid(
                    key("database"),
                    format!("{:?} is not a configured database", self.database),
                )
            })?;
        let format: Format = self.format.parse().map_err(|()| {
            let names: Vec<&str> = Format::all().map(Format::name).collect();
            invalid(
                key("format"),
                format!("{:?} is not one of {}", self.format, names.join(", ")),
            )
        })?;
        if !self.path.is_absolute() || self.path.file_name().is_none() {
            return Err(invalid(key("path"), "must be an absolute path to a file"));
        }
        let mode = match self.mode {
            None => DEFAULT_MODE,
            Some(text) => u32::from_str_radix(text.trim_start_matches("0o"), 8)
                .ok()
                .filter(|mode| *mode <= 0o777)
                .ok_or_else(|| {
                    invalid(
                        key("mode"),
                        "must be octal permission bits such as \"0600\"",
                    )
                })?,
        };
        if let Some(program) = self.on_change.first()
            && !Path::new(program).is_absolute()
        {
            return Err(invalid(
                key("on_change"),
                "the command's first word must be an absolute path (it runs without a shell)",
            ));
        }
        let on_change_signal = match (self.on_change_signal, self.on_change_pidfile) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    key("on_change_pidfile"),
                    "on_change_signal needs the pid file of the process to signal",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    key("on_change_signal"),
                    "on_change_pidfile needs the signal to send (\"SIGHUP\", \"SIGUSR1\", \"SIGUSR2\")",
                ));
            }
            (Some(name), Some(pidfile)) => {
                let signal = ReloadSignal::parse(&name).ok_or_else(|| {
                    invalid(
                        key("on_change_signal"),
                        "must be \"SIGHUP\", \"SIGUSR1\" or \"SIGUSR2\"",
                    )
                })?;
                if !pidfile.is_absolute() {
                    return Err(invalid(
                        key("on_change_pidfile"),
                        "must be an absolute path to a file",
                    ));
                }
                if !self.on_change.is_empty() {
                    return Err(invalid(
                        key("on_change_signal"),
                        "set on_change or on_change_signal, not both",
                    ));
                }
                Some(SignalReload { signal, pidfile })
            }
        };
        let on_change_timeout = self.on_change_timeout.unwrap_or(DEFAULT_TIMEOUT);
        duration_in(
            &key("on_change_timeout"),
            on_change_timeout,
            100 * MS,
            10 * MINUTE,
        )?;
        Ok(SinkConfig {
            database,
            format,
            path: self.path,
            mode,
            owner: self.owner,
            group: self.group,
            on_change: self.on_change,
            on_change_timeout,
            on_change_signal,
            create_dirs: self.create_dirs,
        })
    }
}

/// Refuses two sinks of one path.
pub(super) fn refuse_shared_paths(sinks: &[SinkConfig]) -> Result<(), ConfigError> {
    for (i, sink) in sinks.iter().enumerate() {
        if sinks[..i].iter().any(|other| other.path == sink.path) {
            return Err(invalid(
                format!("sinks[{i}].path"),
                format!("{} is the path of an earlier sink", sink.path.display()),
            ));
        }
    }
    Ok(())
}

/// What the file system must hold for the sinks at start: each directory present (unless
/// `create_dirs`), a directory this process may write, not writable by others unless sticky; no
/// directory at the file's path; the command an executable file; an owner other than this
/// process's only for root. One line naming the sink otherwise.
pub(super) fn check_files(sinks: &[SinkConfig]) -> Result<(), ConfigError> {
    let euid = rustix::process::geteuid().as_raw();
    for (i, sink) in sinks.iter().enumerate() {
        let fail = |field: &str, why: String| {
            invalid(
                format!("sinks[{i}].{field}"),
                format!("{}: {why}", sink.path.display()),
            )
        };
        let dir = sink.path.parent().unwrap_or(Path::new("/"));
        match std::fs::metadata(dir) {
            Err(_) if sink.create_dirs => {}
            Err(e) => {
                return Err(fail(
                    "path",
                    format!(
                        "its directory cannot be used ({e}); create it or set create_dirs = true"
                    ),
                ));
            }
            Ok(meta) if !meta.is_dir() => {
                return Err(fail("path", "its parent is not a directory".into()));
            }
            Ok(meta) => {
                let bits = meta.permissions().mode();
                if bits & 0o002 != 0 && bits & 0o1000 == 0 {
                    return Err(fail(
                        "path",
                        format!(
                            "its directory {} is writable by anyone and not sticky: another user could replace the file",
                            dir.display()
                        ),
                    ));
                }
                if rustix::fs::access(
                    dir,
                    rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
                )
                .is_err()
                {
                    return Err(fail(
                        "path",
                        format!(
                            "its directory {} is not writable by this process",
                            dir.display()
                        ),
                    ));
                }
            }
        }
        if std::fs::symlink_metadata(&sink.path).is_ok_and(|meta| meta.is_dir()) {
            return Err(fail("path", "is a directory".into()));
        }
        if let Some(owner) = sink.owner
            && euid != 0
            && owner != euid
        {
            return Err(fail(
                "owner",
                format!(
                    "giving a file to uid {owner} needs root (this process runs as uid {euid})"
                ),
            ));
        }
        if let Some(program) = sink.on_change.first() {
            let executable = std::fs::metadata(program)
                .is_ok_and(|meta| meta.is_file() && meta.mode() & 0o111 != 0);
            if !executable {
                return Err(fail(
                    "on_change",
                    format!("{program} is not an executable file"),
                ));
            }
        }
    }
    Ok(())
}
