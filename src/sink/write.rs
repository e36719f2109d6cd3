//! Replacing a credential file atomically: the new content goes to a temporary file in the same
//! directory, is synced and given its mode and owner, then renamed over the old one, so a reader
//! sees the old file or the new one, never a part, and never a file with looser permissions.

use std::fs::Permissions;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, fchown};
use std::path::Path;

use crate::config::SinkConfig;

/// Creates the directories of each sink that asks for it (mode 0755, as `mkdir -p`).
pub fn create_dirs(sinks: &[SinkConfig]) -> io::Result<()> {
    for sink in sinks.iter().filter(|sink| sink.create_dirs) {
        if let Some(dir) = sink.path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)?;
        }
    }
    Ok(())
}

/// Writes `content` to the sink's path in one step: readers see the old file or all of the new.
pub fn replace(sink: &SinkConfig, content: &[u8]) -> io::Result<()> {
    let dir = sink.path.parent().unwrap_or(Path::new("/"));
    let mut temp = tempfile::Builder::new()
        .prefix(".credential-broker-")
        .permissions(Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    temp.write_all(content)?;
    let file = temp.as_file();
    if sink.owner.is_some() || sink.group.is_some() {
        fchown(file, sink.owner, sink.group)?;
    }
    // After the owner: chown may clear set-id bits, and the mode is what the operator asked.
    file.set_permissions(Permissions::from_mode(sink.mode))?;
    file.sync_all()?;
    temp.persist(&sink.path).map_err(|e| e.error)?;
    // The rename is durable once the directory is synced.
    std::fs::File::open(dir)?.sync_all()
}
