//! A private swtpm process for one test, on unix sockets in a temporary directory.
//!
//! Readiness is polled by connecting to the command socket, never slept for. The process
//! is killed and its directory removed on drop. [`Swtpm::restart`] keeps the state
//! directory, as a reboot of a real TPM keeps its NV storage.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::packages::require_command;

const READY_TIMEOUT: Duration = Duration::from_secs(15);
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// A running swtpm (TPM 2.0) with its own state directory.
#[derive(Debug)]
pub struct Swtpm {
    child: Option<Child>,
    binary: PathBuf,
    dir: tempfile::TempDir,
}

impl Swtpm {
    /// Starts a fresh swtpm and waits until it accepts connections.
    ///
    /// # Panics
    /// When swtpm is not installed (the message says how to install it), or when it does
    /// not come up within 15 seconds (the message carries its stderr).
    pub fn start() -> Self {
        let binary = require_command("swtpm", "swtpm").unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::Builder::new()
            .prefix("keybroker-swtpm-")
            .tempdir()
            .expect("create a temporary swtpm directory");
        std::fs::create_dir(dir.path().join("state")).expect("create the swtpm state directory");
        let mut tpm = Swtpm {
            child: None,
            binary,
            dir,
        };
        tpm.spawn();
        tpm
    }

    /// The TCTI string that tss-esapi and tpm2-tools (`TPM2TOOLS_TCTI`) use to reach it.
    pub fn tcti(&self) -> String {
        format!("swtpm:path={}", self.socket_path().display())
    }

    /// The TPM command socket.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join("tpm.sock")
    }

    /// The directory that holds the TPM's persistent state.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A scratch directory that lives as long as the fixture.
    pub fn scratch_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the process; the state directory stays. Calls to the TPM fail until
    /// [`Swtpm::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.socket_path());
        let _ = std::fs::remove_file(self.ctrl_path());
    }

    /// Stops the process if it runs, then starts it again on the same state, like a
    /// reboot: PCRs reset, NV and persistent objects remain.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    // The swtpm TCTI looks for the control socket at "<command socket>.ctrl".
    fn ctrl_path(&self) -> PathBuf {
        self.dir.path().join("tpm.sock.ctrl")
    }

    fn spawn(&mut self) {
        let stderr_path = self.dir.path().join("swtpm.stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("create the swtpm log file");
        let child = Command::new(&self.binary)
            .arg("socket")
            .arg("--tpm2")
            .arg("--server")
            .arg(format!("type=unixio,path={}", self.socket_path().display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", self.ctrl_path().display()))
            .arg("--tpmstate")
            .arg(format!("dir={}", self.state_dir().display()))
            .arg("--flags")
            .arg("not-need-init,startup-clear")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        self.wait_ready(&stderr_path);
    }

    fn wait_ready(&mut self, stderr_path: &Path) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if UnixStream::connect(self.socket_path()).is_ok() {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(stderr_path).unwrap_or_default();
                panic!("swtpm did not become ready (exit: {exited:?}); its stderr:\n{log}");
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}
