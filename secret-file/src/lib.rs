//! One reader for every file that holds a secret: HSM PINs, TLS private keys, the
//! development CA key. Each of them is read by [`SecretFile::read`], so each gets the
//! same checks, made in one place:
//!
//! - the file is opened once, and every check is made on the opened handle (`fstat`),
//!   so a path swapped for a symlink, a FIFO or another file between a check and the
//!   read cannot slip through: what is checked is what is read;
//! - it must be a regular file (a directory, FIFO or device is refused, and opening
//!   never blocks on a FIFO), with no permission bits for group or others;
//! - it is read into one zeroizing buffer of its final size (no reallocation leaves
//!   unwiped copies behind), and refused past a size cap.
//!
//! Symlinks are followed (Kubernetes, for one, mounts secrets through them): what must
//! be private is the file that was opened, not the link.
//!
//! This is a crate of its own because both `hsm-backend` (PIN files) and `broker` (TLS
//! keys, the CLI) need it, and a backend must not depend on the broker.

#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

use std::fmt;
use std::fs::{File, FileType, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

#[cfg(test)]
mod tests;

/// The largest secret file [`SecretFile::read`] accepts: far more than any PIN or PEM
/// private key needs.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;

/// Permission bits a secret file must not have: any for group or others.
const GROUP_OR_OTHER: u32 = 0o077;

/// Why a secret file was refused. Messages name the file, never its contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretFileError {
    /// The file could not be opened, inspected or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// The path names something other than a regular file.
    #[error("{}: is a {kind}, not a regular file", path.display())]
    NotRegularFile {
        /// The path.
        path: PathBuf,
        /// What it is: "directory", "FIFO", "socket", "device".
        kind: &'static str,
    },
    /// Group or others have permission bits on the file.
    #[error(
        "{}: other users may access it (mode {mode:03o}); chmod 600 it",
        path.display()
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is larger than the cap.
    #[error("{}: larger than {max_bytes} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The cap.
        max_bytes: usize,
    },
    /// The file grew while it was read.
    #[error("{}: changed while it was read", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// The contents are not UTF-8 text, where text is expected.
    #[error("{}: not UTF-8 text", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
}

/// The contents of a secret file, wiped from memory when dropped. `Debug` shows the
/// path, never the contents.
pub struct SecretFile {
    path: PathBuf,
    bytes: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretFile")
            .field("path", &self.path)
            .field("bytes", &"[REDACTED]")
            .finish()
    }
}

impl SecretFile {
    /// Reads a secret file of at most [`DEFAULT_MAX_BYTES`].
    ///
    /// # Errors
    /// The file cannot be opened or read, is not a regular file, is accessible by group
    /// or others, is too large, or changed while it was read.
    pub fn read(path: &Path) -> Result<SecretFile, SecretFileError> {
        SecretFile::read_capped(path, DEFAULT_MAX_BYTES)
    }

    /// Reads a secret file of at most `max_bytes`.
    ///
    /// # Errors
    /// As for [`SecretFile::read`].
    pub fn read_capped(path: &Path, max_bytes: usize) -> Result<SecretFile, SecretFileError> {
        let io = |source| SecretFileError::Io {
            path: path.to_owned(),
            source,
        };
        // Non-blocking, so that a FIFO put in the file's place cannot hang the reader
        // before the type check below refuses it.
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(io)?;
        let metadata = file.metadata().map_err(io)?;
        if let Some(kind) = not_regular(metadata.file_type()) {
            return Err(SecretFileError::NotRegularFile {
                path: path.to_owned(),
                kind,
            });
        }
        let mode = metadata.permissions().mode() & 0o777;
        if mode & GROUP_OR_OTHER != 0 {
            return Err(SecretFileError::TooOpen {
                path: path.to_owned(),
                mode,
            });
        }
        let len = usize::try_from(metadata.len())
            .ok()
            .filter(|len| *len <= max_bytes)
            .ok_or_else(|| SecretFileError::TooLarge {
                path: path.to_owned(),
                max_bytes,
            })?;
        let bytes = read_exactly(&mut file, len).map_err(|e| match e {
            ReadError::Io(source) => io(source),
            ReadError::Grew => SecretFileError::Changed {
                path: path.to_owned(),
            },
        })?;
        Ok(SecretFile {
            path: path.to_owned(),
            bytes,
        })
    }

    /// The path the file was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The contents.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The contents as text.
    ///
    /// # Errors
    /// [`SecretFileError::NotUtf8`] if they are not UTF-8.
    pub fn text(&self) -> Result<&str, SecretFileError> {
        std::str::from_utf8(&self.bytes).map_err(|_| SecretFileError::NotUtf8 {
            path: self.path.clone(),
        })
    }

    /// The contents, still wiped when dropped.
    pub fn into_bytes(self) -> Zeroizing<Vec<u8>> {
        self.bytes
    }
}

/// What a file type is, if it is not a regular file.
fn not_regular(kind: FileType) -> Option<&'static str> {
    if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("directory")
    } else if kind.is_fifo() {
        Some("FIFO")
    } else if kind.is_socket() {
        Some("socket")
    } else if kind.is_block_device() || kind.is_char_device() {
        Some("device")
    } else {
        Some("special file")
    }
}

/// Why [`read_exactly`] failed.
enum ReadError {
    Io(std::io::Error),
    Grew,
}

/// Reads the `len` bytes `fstat` reported into one buffer of `len + 1` bytes, the extra
/// byte only to notice a file that grew: the buffer never reallocates.
fn read_exactly(file: &mut File, len: usize) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    let mut buffer = Zeroizing::new(vec![0u8; len.saturating_add(1)]);
    let mut filled = 0;
    while let Some(rest) = buffer.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        match file.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    if filled > len {
        return Err(ReadError::Grew);
    }
    buffer.truncate(filled);
    Ok(buffer)
}
