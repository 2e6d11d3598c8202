//! A private SoftHSM2 token directory for one test.
//!
//! SoftHSM2 reads its configuration from `SOFTHSM2_CONF` once, at `C_Initialize`, and a
//! PKCS#11 module can be initialised once per process. So a process holds at most one
//! `SoftHsm` at a time: `cargo nextest` (what `make test` uses) runs every test in its
//! own process, so tests run in parallel; under plain `cargo test` the fixtures of one
//! test binary take turns through a process-wide lock.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::packages::{MissingPackage, require_file};

/// Environment variable that overrides where the SoftHSM2 module is looked for.
pub const MODULE_ENV: &str = "KEYBROKER_SOFTHSM_MODULE";

static ONE_TOKEN_DIR_PER_PROCESS: Mutex<()> = Mutex::new(());

/// A fresh SoftHSM2 token directory with its own configuration file.
///
/// Dropping it removes the directory.
#[derive(Debug)]
pub struct SoftHsm {
    conf_path: PathBuf,
    token_dir: PathBuf,
    module_path: PathBuf,
    // Field order matters: the directory goes before the lock is released.
    dir: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

impl SoftHsm {
    /// Creates a token directory and points `SOFTHSM2_CONF` at it.
    ///
    /// # Panics
    /// When SoftHSM2 is not installed (the message says how to install it), or when the
    /// temporary directory cannot be written.
    pub fn new() -> Self {
        let module_path = Self::module_path_or_missing().unwrap_or_else(|e| panic!("{e}"));
        let turn = ONE_TOKEN_DIR_PER_PROCESS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::Builder::new()
            .prefix("keybroker-softhsm-")
            .tempdir()
            .expect("create a temporary SoftHSM2 directory");
        let token_dir = dir.path().join("tokens");
        std::fs::create_dir(&token_dir).expect("create the SoftHSM2 token directory");
        let conf_path = dir.path().join("softhsm2.conf");
        std::fs::write(&conf_path, Self::conf_text(&token_dir)).expect("write softhsm2.conf");
        set_softhsm_conf(&conf_path);
        SoftHsm {
            conf_path,
            token_dir,
            module_path,
            dir,
            _turn: turn,
        }
    }

    /// The SoftHSM2 configuration text for a token directory.
    pub fn conf_text(token_dir: &Path) -> String {
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            token_dir.display()
        )
    }

    /// Finds the SoftHSM2 PKCS#11 module, or says how to install it.
    pub fn module_path_or_missing() -> Result<PathBuf, MissingPackage> {
        let mut candidates: Vec<PathBuf> = std::env::var_os(MODULE_ENV)
            .map(PathBuf::from)
            .into_iter()
            .collect();
        candidates.extend(
            [
                "/usr/lib/softhsm/libsofthsm2.so",
                "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
                "/usr/local/lib/softhsm/libsofthsm2.so",
            ]
            .map(PathBuf::from),
        );
        require_file(&candidates, "the SoftHSM2 PKCS#11 module", "softhsm2")
    }

    /// Path of the PKCS#11 module to load.
    pub fn module_path(&self) -> &Path {
        &self.module_path
    }

    /// Path of this fixture's `softhsm2.conf`.
    pub fn conf_path(&self) -> &Path {
        &self.conf_path
    }

    /// Directory where SoftHSM2 keeps this fixture's tokens.
    pub fn token_dir(&self) -> &Path {
        &self.token_dir
    }

    /// A scratch directory that lives as long as the fixture (for PIN files and such).
    pub fn scratch_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for SoftHsm {
    fn default() -> Self {
        Self::new()
    }
}

#[allow(unsafe_code)]
fn set_softhsm_conf(conf_path: &Path) {
    // SAFETY: SoftHSM2 takes its configuration only from the environment. The variable
    // is set while this process holds ONE_TOKEN_DIR_PER_PROCESS and before the test
    // loads the module; under nextest the test is the only thread that runs.
    unsafe { std::env::set_var("SOFTHSM2_CONF", conf_path) };
}
