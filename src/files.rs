//! The files an operator names (token files, the file source's secrets, the audit file): regular
//! files only, opened without blocking (a FIFO or device at the path never stalls the broker),
//! reads size capped.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

/// The largest token file read.
pub const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;
/// The largest secrets file the file source reads.
pub const MAX_SECRETS_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The content of the regular file at `path`, at most `max` bytes. Anything else at the path (a
/// FIFO, a socket, a device, a directory) or a larger file is an error, found without reading.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let file = File::from(fd);
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let too_large = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        )
    };
    if meta.len() > max {
        return Err(too_large());
    }
    let mut content = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The file may grow between the check and the read: read one byte past the cap at most.
    file.take(max + 1).read_to_end(&mut content)?;
    if content.len() as u64 > max {
        return Err(too_large());
    }
    Ok(content)
}

/// The regular file at `path` opened for appending, created with mode 0600 if missing. Anything
/// else at the path is an error, found without blocking (opening a FIFO to write would wait for
/// a reader).
pub fn open_append_regular(path: &Path) -> io::Result<File> {
    let fd = rustix::fs::open(
        path,
        OFlags::WRONLY
            | OFlags::APPEND
            | OFlags::CREATE
            | OFlags::NONBLOCK
            | OFlags::NOCTTY
            | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| match e {
        // A FIFO without a reader.
        rustix::io::Errno::NXIO => {
            io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")
        }
        e => e.into(),
    })?;
    let file = File::from(fd);
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_are_read_and_everything_else_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read_regular(&file, 10).unwrap(), b"0123456789");
        let err = read_regular(&file, 9).unwrap_err();
        assert!(err.to_string().contains("larger than 9 bytes"), "{err}");

        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, Mode::from_raw_mode(0o600)).unwrap();
        // No writer: a blocking open would hang here.
        let err = read_regular(&fifo, 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        let err = read_regular(dir.path(), 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(read_regular(&dir.path().join("missing"), 10).is_err());
    }

    #[test]
    fn only_regular_files_are_opened_for_appending() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        open_append_regular(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, Mode::from_raw_mode(0o600)).unwrap();
        let err = open_append_regular(&fifo).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(open_append_regular(dir.path()).is_err());
    }
}
