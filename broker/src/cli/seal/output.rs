//! Outputs that appear whole or not at all: an owner-only temporary file beside the
//! destination, synced and renamed over it only by [`Output::commit`]. Dropped without a
//! commit (any error on the way), the temporary file is removed.

use std::fs::File;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use super::super::CliError;

/// The suffix of every temporary file: `rewrap` never takes one for a sealed file.
pub const TEMP_SUFFIX: &str = ".keybroker-tmp";

/// An output being written.
#[derive(Debug)]
pub struct Output {
    temp: tempfile::NamedTempFile,
    dest: PathBuf,
}

impl Output {
    /// A new, empty, owner-only (0600) temporary file in `dest`'s directory.
    ///
    /// # Errors
    /// `dest` names no file, or is a directory (a usage error); the directory refuses a
    /// new file.
    pub fn beside(dest: &Path) -> Result<Output, CliError> {
        let name = dest
            .file_name()
            .ok_or_else(|| CliError::Usage(format!("{}: not a file name", dest.display())))?;
        if dest.is_dir() {
            return Err(CliError::Usage(format!(
                "{}: is a directory, not a file",
                dest.display()
            )));
        }
        let dir = match dest.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let mut prefix = std::ffi::OsString::from(".");
        prefix.push(name);
        prefix.push(".");
        let temp = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(TEMP_SUFFIX)
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)
            .map_err(|e| {
                CliError::Output(format!(
                    "cannot create a temporary file in {}: {e}",
                    dir.display()
                ))
            })?;
        Ok(Output {
            temp,
            dest: dest.to_path_buf(),
        })
    }

    /// The temporary file, to write to (`&File` is a writer).
    pub fn file(&self) -> &File {
        self.temp.as_file()
    }

    /// An error writing the output, named by its destination.
    pub fn error(&self, e: &std::io::Error) -> CliError {
        CliError::Output(format!("{}: {e}", self.dest.display()))
    }

    /// Gives the output the permission bits `mode` (`rewrap` keeps the file's own).
    ///
    /// # Errors
    /// The file system refuses.
    pub fn set_mode(&self, mode: u32) -> Result<(), CliError> {
        self.temp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| self.error(&e))
    }

    /// Syncs the output and renames it over the destination.
    ///
    /// # Errors
    /// The sync or the rename fails; the temporary file is removed.
    pub fn commit(self) -> Result<(), CliError> {
        self.temp.as_file().sync_all().map_err(|e| self.error(&e))?;
        let dest = self.dest;
        self.temp
            .persist(&dest)
            .map_err(|e| CliError::Output(format!("{}: {}", dest.display(), e.error)))?;
        // The rename is durable once the directory is synced. The output is in place
        // already, so a directory that cannot be synced is not worth failing over.
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }
}
