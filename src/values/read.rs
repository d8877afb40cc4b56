//! Reading a values file that is a regular file, and only then: a FIFO blocks a reader
//! until someone writes to it (a `values.set` on one hung for minutes), a device can be
//! endless.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The path (after following symlinks) is not a regular file.
    #[error("{path} is {kind}, not a regular file")]
    NotRegular {
        /// The path as given.
        path: String,
        /// What it is: "a FIFO (named pipe)", "a directory", ...
        kind: &'static str,
    },
    /// Opening or reading failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path as given.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// The text of the regular file at `path` (symlinks followed). The file is opened with
/// `O_NONBLOCK`, so that opening a FIFO returns at once, and its type is checked on the
/// opened descriptor, so that a file swapped after a check cannot slip through.
pub fn read_regular(path: &Path) -> Result<String, ReadError> {
    let shown = path.display().to_string();
    let io = |source| ReadError::Io {
        path: shown.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let file_type = file.metadata().map_err(io)?.file_type();
    if !file_type.is_file() {
        let kind = if file_type.is_dir() {
            "a directory"
        } else if file_type.is_fifo() {
            "a FIFO (named pipe)"
        } else if file_type.is_socket() {
            "a socket"
        } else if file_type.is_char_device() {
            "a character device"
        } else if file_type.is_block_device() {
            "a block device"
        } else {
            "a special file"
        };
        return Err(ReadError::NotRegular { path: shown, kind });
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("hub.values.yaml");
        let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo has no other requirement.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let link = dir.path().join("link.yaml");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        for path in [&fifo, &link] {
            let error = read_regular(path).unwrap_err();
            assert!(
                error
                    .to_string()
                    .ends_with("is a FIFO (named pipe), not a regular file"),
                "{error}"
            );
        }
        let error = read_regular(dir.path()).unwrap_err();
        assert!(error.to_string().contains("is a directory"), "{error}");
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, "a: 1\n").unwrap();
        assert_eq!(read_regular(&file).unwrap(), "a: 1\n");
    }
}
