//! Finding the system tools the fixtures need, with an install hint when one is missing.

use std::fmt;
use std::path::{Path, PathBuf};

/// A system package that a fixture needs and could not find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingPackage {
    /// What was looked for (a command or a library path).
    pub what: String,
    /// The Debian package that provides it.
    pub package: &'static str,
}

impl fmt::Display for MissingPackage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} was not found: install the Debian package `{}` \
             (`sudo apt-get install -y {}`), or run `make test`, which installs it",
            self.what, self.package, self.package
        )
    }
}

impl std::error::Error for MissingPackage {}

/// Finds `command` on `PATH`, or says which package provides it.
pub fn require_command(command: &str, package: &'static str) -> Result<PathBuf, MissingPackage> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| MissingPackage {
            what: format!("the command `{command}`"),
            package,
        })
}

/// Returns the first existing file among `candidates`, or says which package provides it.
pub(crate) fn require_file(
    candidates: &[PathBuf],
    what: &str,
    package: &'static str,
) -> Result<PathBuf, MissingPackage> {
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| MissingPackage {
            what: format!("{what} (looked in {})", join_paths(candidates)),
            package,
        })
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
