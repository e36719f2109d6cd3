//! The credentials API's Unix socket: bound in a private directory, given its mode and group
//! there (where no other user can swap the file for a link), then renamed into place; refused in
//! a directory other users can write unless it is sticky; removed on the way out.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;
use tracing::info;

use crate::config::UnixSocketConfig;

/// The bound socket, removed when dropped if the file is still ours.
#[derive(Debug)]
pub(crate) struct BoundSocket {
    pub(crate) listener: UnixListener,
    pub(crate) path: PathBuf,
    /// Device and inode of the socket file we created.
    identity: (u64, u64),
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && (meta.dev(), meta.ino()) == self.identity
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds the Unix socket at `config.path` with its configured mode and group. A socket file left
/// by a broker that is gone is replaced; a live one, or any other kind of file, is an error; so
/// is a directory that users other than its owner may write, unless it is sticky.
pub(crate) fn bind_unix(config: &UnixSocketConfig) -> io::Result<BoundSocket> {
    let path = &config.path;
    let dir = path.parent().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no parent directory", path.display()),
        )
    })?;
    check_directory(dir)?;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by another process", path.display()),
            ));
        }
        info!(path = %path.display(), "removing a stale socket file");
        std::fs::remove_file(path)?;
    }
    let staging = Staging::create(dir)?;
    let staged = staging.0.join("socket");
    // Nobody may connect before the mode is set: create the file with no permissions at all.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o777));
    let bound = UnixListener::bind(&staged);
    rustix::process::umask(old);
    let listener = bound?;
    if let Some(gid) = config.group {
        std::os::unix::fs::chown(&staged, None, Some(gid))?;
    }
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(config.mode))?;
    let meta = std::fs::symlink_metadata(&staged)?;
    std::fs::rename(&staged, path)?;
    drop(staging);
    Ok(BoundSocket {
        listener,
        path: path.clone(),
        identity: (meta.dev(), meta.ino()),
    })
}

/// Refuses a socket directory that another user could write to without the sticky bit: there,
/// anyone could replace the socket file with their own.
fn check_directory(dir: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(dir).map_err(|e| {
        io::Error::new(e.kind(), format!("socket directory {}: {e}", dir.display()))
    })?;
    let mode = meta.mode();
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "socket directory {} is writable by other users and not sticky (mode {:o}): another user could replace the socket",
                dir.display(),
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// A directory of our own (mode 0700) beside the socket path, removed with what is left in it.
struct Staging(PathBuf);

impl Staging {
    fn create(dir: &Path) -> io::Result<Self> {
        let name = format!(
            ".credential-broker-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        );
        let path = dir.join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self(path))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0.join("socket"));
        let _ = std::fs::remove_dir(&self.0);
    }
}
