//! The local file source: a JSON object mapping secret ids to secret values (an object in one of
//! the credential shapes, or a string holding such JSON), re-read whenever the file changes.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::Mutex;
use tracing::warn;
use zeroize::Zeroizing;

use super::api::{BoxFuture, Call, RotationFacts, Source, Version};
use super::error::SourceError;
use crate::credentials::{SecretPayload, SecretVersion};
use crate::files::{MAX_SECRETS_FILE_BYTES, read_regular};

#[derive(Debug)]
pub(crate) struct FileSource {
    path: PathBuf,
    state: Mutex<Option<Loaded>>,
}

/// The file as last read, keyed by what identifies a change on disk.
#[derive(Debug)]
struct Loaded {
    stamp: Stamp,
    secrets: HashMap<String, Entry>,
    /// Entries of the file that are not secret values and had no good value before: why.
    invalid: HashMap<String, String>,
}

#[derive(Debug, Clone)]
struct Entry {
    value: SecretString,
    version_id: String,
}

impl FileSource {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            state: Mutex::new(None),
        }
    }

    /// Runs `found` on `secret_id`'s entry in the file as it is now (read again only when its
    /// [`Stamp`] changed).
    async fn with_entry<T>(
        &self,
        secret_id: &str,
        found: impl FnOnce(&Entry) -> T,
    ) -> Result<T, SourceError> {
        let meta = tokio::fs::metadata(&self.path)
            .await
            .map_err(|e| self.unreadable(&e))?;
        let stamp = Stamp::of(&meta);
        let mut state = self.state.lock().await;
        if state.as_ref().is_none_or(|loaded| loaded.stamp != stamp) {
            let path = self.path.clone();
            let bytes = tokio::task::spawn_blocking(move || {
                read_regular(&path, MAX_SECRETS_FILE_BYTES).map(Zeroizing::new)
            })
            .await
            .map_err(|e| SourceError::Unavailable(format!("reading the secrets file: {e}")))?
            .map_err(|e| self.unreadable(&e))?;
            let text = std::str::from_utf8(&bytes).map_err(|_| {
                SourceError::Unavailable(format!("{} is not UTF-8 text", self.path.display()))
            })?;
            let previous = state.take().map(|l| l.secrets).unwrap_or_default();
            let parsed = parse_file(text, &previous, &version_for(stamp.modified));
            let (secrets, invalid) = match parsed {
                Ok(parsed) => parsed,
                Err(why) => {
                    // Keep what was read before: the next change of the file is read again.
                    *state = Some(Loaded {
                        stamp: Stamp::NEVER,
                        secrets: previous,
                        invalid: HashMap::new(),
                    });
                    return Err(SourceError::Unavailable(format!(
                        "{}: {why}",
                        self.path.display()
                    )));
                }
            };
            for (id, why) in &invalid {
                warn!(secret_id = %id, reason = %why, "an entry of the secrets file is not a secret value; it keeps its last good value, if any");
            }
            *state = Some(Loaded {
                stamp,
                secrets,
                invalid: invalid.into_iter().collect(),
            });
        }
        let loaded = state.as_ref().expect("loaded above");
        if let Some(entry) = loaded.secrets.get(secret_id) {
            return Ok(found(entry));
        }
        Err(match loaded.invalid.get(secret_id) {
            Some(why) => SourceError::Malformed(why.clone()),
            None => SourceError::NotFound(secret_id.to_owned()),
        })
    }

    fn unreadable(&self, e: &std::io::Error) -> SourceError {
        SourceError::Unavailable(format!("cannot read {}: {e}", self.path.display()))
    }
}

impl Source for FileSource {
    /// Every call is a read of the file.
    fn operation(&self, _call: Call) -> &'static str {
        "ReadFile"
    }

    /// The file holds current versions only: a pending version is never found.
    fn read<'a>(
        &'a self,
        secret_id: &'a str,
        version: Version,
    ) -> BoxFuture<'a, Result<SecretVersion, SourceError>> {
        Box::pin(async move {
            match version {
                Version::Current => {
                    self.with_entry(secret_id, |entry| SecretVersion {
                        payload: SecretPayload::String(entry.value.clone()),
                        version_id: entry.version_id.clone(),
                        arn: None,
                    })
                    .await
                }
                Version::Pending => Err(SourceError::NotFound(secret_id.to_owned())),
            }
        })
    }

    /// The version the file holds now: a `stat`, and a read only when the file changed. An
    /// entry that is no secret value gives no version (the warning is logged at the read, and
    /// the next fetch rejects it).
    fn rotation<'a>(
        &'a self,
        secret_id: &'a str,
    ) -> Option<BoxFuture<'a, Result<RotationFacts, SourceError>>> {
        Some(Box::pin(async move {
            // The version id only: the value is not copied for a check.
            let current_version = match self
                .with_entry(secret_id, |entry| entry.version_id.clone())
                .await
            {
                Ok(version) => Some(version),
                Err(SourceError::Malformed(_)) => None,
                Err(e) => return Err(e),
            };
            Ok(RotationFacts {
                current_version,
                ..RotationFacts::default()
            })
        }))
    }

    fn checks_are_free(&self) -> bool {
        true
    }
}

/// What a `stat` tells of a change to the file. The modification time alone misses a second edit
/// within one tick of the file system's clock (milliseconds); a file replaced by a rename (how
/// editors and tools write) also has another inode and change time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: SystemTime,
    len: u64,
    inode: u64,
    changed_ns: i128,
}

impl Stamp {
    /// Matches no file: the next check reads it again.
    const NEVER: Self = Self {
        modified: UNIX_EPOCH,
        len: u64::MAX,
        inode: u64::MAX,
        changed_ns: i128::MIN,
    };

    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            modified: meta.modified().unwrap_or(UNIX_EPOCH),
            len: meta.len(),
            inode: meta.ino(),
            changed_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
}

/// A version id for secrets that changed in a file modified at `modified`; stable across
/// restarts for an unchanged file, and derived from nothing secret.
fn version_for(modified: SystemTime) -> String {
    let nanos = modified
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("file-{nanos}")
}

/// The secrets of a file, and its entries that are not secret values, with why.
type Parsed = (HashMap<String, Entry>, Vec<(String, String)>);

/// The secrets of the file and the entries that are not secret values (with why), keeping the
/// version id of every secret whose value did not change. A bad entry keeps its previous good
/// value, so one mistake in the file stops no other entry from updating.
fn parse_file(
    text: &str,
    previous: &HashMap<String, Entry>,
    new_version: &str,
) -> Result<Parsed, String> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| format!("not valid JSON (line {}, column {})", e.line(), e.column()))?;
    let Value::Object(map) = value else {
        return Err("the top level must be a JSON object of secret id to secret value".into());
    };
    let mut secrets = HashMap::with_capacity(map.len());
    let mut invalid = Vec::new();
    for (id, value) in map {
        let value = match value {
            Value::String(s) => s,
            other @ Value::Object(_) => other.to_string(),
            _ => {
                if let Some(old) = previous.get(&id) {
                    secrets.insert(id.clone(), old.clone());
                }
                invalid.push((id, "the value must be an object or a string".to_owned()));
                continue;
            }
        };
        let version_id = match previous.get(&id) {
            Some(old) if old.value.expose_secret() == value => old.version_id.clone(),
            Some(old) => next_version(new_version, &old.version_id),
            None => new_version.to_owned(),
        };
        secrets.insert(
            id,
            Entry {
                value: SecretString::from(value),
                version_id,
            },
        );
    }
    Ok((secrets, invalid))
}

/// The version id of a changed value: `new_version`, unless the old value had it (changed in
/// the same clock tick), then `new_version-N` with the next N.
fn next_version(new_version: &str, old_version: &str) -> String {
    let same_tick = match old_version.strip_prefix(new_version) {
        Some("") => Some(0),
        Some(rest) => rest.strip_prefix('-').and_then(|n| n.parse::<u64>().ok()),
        None => None,
    };
    match same_tick {
        Some(n) => format!("{new_version}-{}", n.saturating_add(1)),
        None => new_version.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn secret_text(version: &SecretVersion) -> String {
        match &version.payload {
            SecretPayload::String(s) => s.expose_secret().to_owned(),
            SecretPayload::Binary(_) => panic!("file source returns strings"),
        }
    }

    #[tokio::test]
    async fn reads_objects_and_strings_and_rereads_after_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        std::fs::write(
            &path,
            r#"{"a": {"username":"u","password":"p1"}, "b": "{\"username\":\"v\",\"password\":\"q\"}"}"#,
        )
        .unwrap();
        let source = FileSource::new(path.clone());
        let a1 = source.read("a", Version::Current).await.unwrap();
        let b1 = source.read("b", Version::Current).await.unwrap();
        assert!(secret_text(&a1).contains("\"p1\""));
        assert_eq!(secret_text(&b1), r#"{"username":"v","password":"q"}"#);
        assert!(a1.arn.is_none());

        // A later modification time makes the change visible even on coarse-grained filesystems.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(
            &path,
            r#"{"a": {"username":"u","password":"p2-changed"}, "b": "{\"username\":\"v\",\"password\":\"q\"}"}"#,
        )
        .unwrap();
        let a2 = source.read("a", Version::Current).await.unwrap();
        let b2 = source.read("b", Version::Current).await.unwrap();
        assert!(secret_text(&a2).contains("p2-changed"));
        assert_ne!(
            a1.version_id, a2.version_id,
            "a changed, so its version changes"
        );
        assert_eq!(b1.version_id, b2.version_id, "b did not change");
    }

    #[tokio::test]
    async fn a_file_replaced_within_one_clock_tick_with_the_same_size_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        // Two edits inside one tick of the file system's clock: the same modification time.
        let tick = SystemTime::now();
        let replace = |password: &str| {
            let staged = dir.path().join("staged");
            std::fs::write(
                &staged,
                format!(r#"{{"a": {{"username":"u","password":"{password}"}}}}"#),
            )
            .unwrap();
            std::fs::File::options()
                .write(true)
                .open(&staged)
                .unwrap()
                .set_modified(tick)
                .unwrap();
            std::fs::rename(&staged, &path).unwrap();
        };
        replace("first-1");
        let source = FileSource::new(path.clone());
        let first = source.read("a", Version::Current).await.unwrap();
        replace("second2");
        let second = source.read("a", Version::Current).await.unwrap();
        assert!(
            secret_text(&second).contains("second2"),
            "the new file is read"
        );
        assert_ne!(
            first.version_id, second.version_id,
            "a new value in the same tick gets a new version"
        );
        replace("third-3");
        let third = source.read("a", Version::Current).await.unwrap();
        assert!(secret_text(&third).contains("third-3"));
        assert!(
            third.version_id != first.version_id && third.version_id != second.version_id,
            "{first:?} {second:?} {third:?}"
        );
    }

    #[tokio::test]
    async fn missing_id_is_not_found_and_broken_file_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        std::fs::write(&path, r#"{"a": {"username":"u","password":"p"}}"#).unwrap();
        let source = FileSource::new(path.clone());
        assert!(matches!(
            source.read("zzz", Version::Current).await,
            Err(SourceError::NotFound(_))
        ));

        std::fs::write(&path, r#"{"a": {"username":"u","password":"hunter2"#).unwrap();
        let err = source.read("a", Version::Current).await.unwrap_err();
        assert!(matches!(err, SourceError::Unavailable(_)));
        assert!(!err.to_string().contains("hunter2"), "{err}");

        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            source.read("a", Version::Current).await,
            Err(SourceError::Unavailable(_))
        ));
    }
}
