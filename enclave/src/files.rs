//! Writing credentials for a workload to read: each file replaced atomically (a temporary
//! file in the same directory, fsync, rename, fsync of the directory), keys and tokens at
//! mode 0600, certificates at 0644.
//!
//! The key is written before the certificate, so a reader woken by a new `svid.pem` finds
//! the matching `svid_key.pem` already in place.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;

use crate::client::{AudienceToken, Credentials};

/// Mode of files that hold a private key or a token.
pub const SECRET_MODE: u32 = 0o600;
/// Mode of files that hold certificates.
pub const PUBLIC_MODE: u32 = 0o644;
/// The certificate chain, PEM, leaf first.
pub const SVID_FILE: &str = "svid.pem";
/// The ephemeral private key, PKCS#8 PEM.
pub const SVID_KEY_FILE: &str = "svid_key.pem";
/// The trust bundle, PEM.
pub const BUNDLE_FILE: &str = "bundle.pem";
/// The attestation token.
pub const ATTESTATION_TOKEN_FILE: &str = "token";
/// The longest audience, in bytes, that names a file.
const MAX_AUDIENCE_LEN: usize = 200;

/// Why credentials could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The file system refused.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// A file name that is not one plain name in the directory.
    #[error("{0:?} is not a plain file name")]
    Name(String),
    /// An audience that cannot name a token file.
    #[error("audience {0:?} cannot name a token file (1 to 200 bytes, with a letter or digit)")]
    Audience(String),
    /// Two audiences that would share one token file.
    #[error("audiences {0:?} and {1:?} would share the token file {2}")]
    SameFile(String, String, String),
    /// A certificate could not be PEM-encoded.
    #[error("PEM encoding: {0}")]
    Pem(der::pem::Error),
}

/// Replaces `dir/name` with `bytes` at `mode`, atomically: a reader sees the old content
/// or the new, never a mix, and after a crash the old file is intact. Temporary files a
/// crash left behind for `name` are removed first.
///
/// # Errors
/// [`FilesError::Name`] if `name` is not a plain file name; [`FilesError::Io`] otherwise.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), FilesError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(FilesError::Name(name.to_string()));
    }
    remove_stale_temporaries(dir, name)?;
    let temporary = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let written = write_new(&temporary, bytes, mode)
        .and_then(|()| fs::rename(&temporary, dir.join(name)).map_err(io_error(&temporary)));
    if written.is_err() {
        // Best effort: the next write removes it otherwise.
        let _ = fs::remove_file(&temporary);
    }
    written?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Writes `creds` and `tokens` into `dir` (created, mode 0755, if missing):
/// `svid_key.pem` (0600), `svid.pem`, `bundle.pem`, `token` (the attestation token, 0600)
/// and `jwt_<audience>.token` (0600) for each token (see [`token_file_name`]).
///
/// # Errors
/// [`FilesError`]; the token file names are checked before anything is written.
pub fn write_credentials(
    dir: &Path,
    creds: &Credentials,
    tokens: &[AudienceToken],
) -> Result<(), FilesError> {
    let token_files = token_file_names(audiences(tokens))?;
    create_dir(dir)?;
    let key = creds.key.private_key_pem();
    write_atomic(
        dir,
        SVID_KEY_FILE,
        key.expose_secret().as_bytes(),
        SECRET_MODE,
    )?;
    write_atomic(
        dir,
        SVID_FILE,
        creds.chain_pem().map_err(FilesError::Pem)?.as_bytes(),
        PUBLIC_MODE,
    )?;
    write_atomic(
        dir,
        BUNDLE_FILE,
        creds.bundle_pem().map_err(FilesError::Pem)?.as_bytes(),
        PUBLIC_MODE,
    )?;
    let attestation = creds.token.expose_secret().as_bytes();
    write_atomic(dir, ATTESTATION_TOKEN_FILE, attestation, SECRET_MODE)?;
    write_named_tokens(dir, &token_files, tokens)
}

/// Writes each of `tokens` to `dir/jwt_<audience>.token` (0600), for refreshing tokens
/// between certificates; `dir` is created (0755) if missing.
///
/// # Errors
/// As [`write_credentials`].
pub fn write_tokens(dir: &Path, tokens: &[AudienceToken]) -> Result<(), FilesError> {
    let token_files = token_file_names(audiences(tokens))?;
    create_dir(dir)?;
    write_named_tokens(dir, &token_files, tokens)
}

fn write_named_tokens(
    dir: &Path,
    files: &[String],
    tokens: &[AudienceToken],
) -> Result<(), FilesError> {
    for (file, token) in files.iter().zip(tokens) {
        let token = token.token.expose_secret().as_bytes();
        write_atomic(dir, file, token, SECRET_MODE)?;
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), FilesError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(io_error(dir))
}

/// The file for `audience`'s token: `jwt_<audience>.token`, with every character other
/// than ASCII letters, digits, `.`, `-` and `_` replaced by `_`
/// (`https://api.example.com` → `jwt_https___api.example.com.token`).
///
/// # Errors
/// [`FilesError::Audience`] for an empty audience, one longer than 200 bytes, or one with
/// no ASCII letter or digit.
pub fn token_file_name(audience: &str) -> Result<String, FilesError> {
    if audience.len() > MAX_AUDIENCE_LEN || !audience.chars().any(|c| c.is_ascii_alphanumeric()) {
        return Err(FilesError::Audience(audience.to_string()));
    }
    let safe: String = audience
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => c,
            _ => '_',
        })
        .collect();
    Ok(format!("jwt_{safe}.token"))
}

/// The token file name of each audience, refusing two audiences that would share one.
///
/// # Errors
/// [`FilesError::Audience`] or [`FilesError::SameFile`].
pub fn token_file_names<'a>(
    audiences: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<String>, FilesError> {
    let mut named: Vec<(String, &str)> = Vec::new();
    for audience in audiences {
        let name = token_file_name(audience)?;
        if let Some((_, other)) = named.iter().find(|(n, _)| *n == name) {
            let (first, second) = (other.to_string(), audience.to_string());
            return Err(FilesError::SameFile(first, second, name));
        }
        named.push((name, audience));
    }
    Ok(named.into_iter().map(|(name, _)| name).collect())
}

fn audiences(tokens: &[AudienceToken]) -> impl Iterator<Item = &str> {
    tokens.iter().map(|t| t.audience.as_str())
}

/// Creates `path` (which must not exist) at `mode`, whatever the umask, and writes and
/// syncs `bytes`. It is created at 0600 and widened only once open, so a secret is never
/// readable by others, even briefly.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FilesError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(SECRET_MODE)
        .open(path)
        .map_err(io_error(path))?;
    file.set_permissions(Permissions::from_mode(mode))
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all())
        .map_err(io_error(path))
}

/// Removes `.name.*.tmp` files in `dir`: what a write of `name` cut short left behind.
fn remove_stale_temporaries(dir: &Path, name: &str) -> Result<(), FilesError> {
    let prefix = format!(".{name}.");
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        let Some(middle) = file_name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".tmp"))
        else {
            continue;
        };
        if middle.len() == 16 && middle.chars().all(|c| c.is_ascii_hexdigit()) {
            fs::remove_file(entry.path()).map_err(io_error(&entry.path()))?;
        }
    }
    Ok(())
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> FilesError + '_ {
    move |source| FilesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests;
