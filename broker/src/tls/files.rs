//! Reading and writing TLS material on disk, with the rules that keep private keys private:
//! key files are read by the one reader for secret files (`secret-file`: not open to group
//! or others, checked on the opened file, read into a zeroizing buffer), directories meant
//! for keys must not be writable by others, and files are replaced atomically with their
//! final mode set before any byte is written.

use std::fs;
use std::io::Write;
use std::path::Path;

use zeroize::Zeroizing;

use super::TlsError;

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a file holding private key material through the one reader for secret files
/// ([`secret_file::SecretFile`]): a regular file that group and others cannot access
/// (checked on the opened file, so it cannot be swapped in between), read into a
/// zeroizing buffer, with a size cap.
pub(crate) fn read_private_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, TlsError> {
    Ok(secret_file::SecretFile::read(path)?.into_bytes())
}

pub(crate) fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, TlsError> {
    String::from_utf8(bytes).map_err(|_| TlsError::Pem {
        what: path.display().to_string(),
        reason: "not UTF-8 text".to_string(),
    })
}

pub(crate) fn secret_utf8(path: &Path, bytes: &[u8]) -> Result<Zeroizing<String>, TlsError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(Zeroizing::new(text.to_string())),
        Err(_) => Err(TlsError::Pem {
            what: path.display().to_string(),
            reason: "not UTF-8 text".to_string(),
        }),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (and missing parents) with mode 0700. An existing directory may be
/// readable by others (key files are 0600 themselves) but not writable by group or others,
/// who could otherwise replace the files.
pub(crate) fn prepare_dir(dir: &Path) -> Result<(), TlsError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        if let Ok(meta) = fs::metadata(dir) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o022 != 0 {
                return Err(TlsError::Permissions {
                    path: dir.to_path_buf(),
                    mode,
                    want: 0o700,
                });
            }
        }
    }
    builder.create(dir).map_err(io_error(dir))
}

/// Writes `bytes` to a fresh temporary file created with `mode` (never an existing file or
/// symlink) and renames it over `path`.
pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_error(&tmp)(e)),
        _ => {}
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(io_error(&tmp))?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(&tmp)(e));
    }
    fs::rename(&tmp, path).map_err(io_error(path))
}
