//! A private swtpm process for one test, on loopback TCP ports with its state in a
//! temporary directory.
//!
//! TCP rather than a unix socket because tss-esapi 7.7 parses only
//! `swtpm:host=..,port=..`. Two free ports are picked for each process (command and
//! control); if another process takes one first, swtpm exits and the fixture tries another
//! pair. Readiness is polled by connecting to the command port, never slept for. The
//! process is killed and its directory removed on drop. [`Swtpm::restart`] keeps the state
//! directory and the ports, as a reboot of a real TPM keeps its NV storage.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::packages::require_command;

const READY_TIMEOUT: Duration = Duration::from_secs(15);
const POLL_INTERVAL: Duration = Duration::from_millis(5);
const PORT_ATTEMPTS: usize = 20;

/// A running swtpm (TPM 2.0) with its own state directory.
#[derive(Debug)]
pub struct Swtpm {
    child: Option<Child>,
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
}

impl Swtpm {
    /// Starts a fresh swtpm and waits until it accepts connections.
    ///
    /// # Panics
    /// When swtpm is not installed (the message says how to install it), or when it does
    /// not come up within 15 seconds (the message carries its stderr).
    pub fn start() -> Self {
        let tpm = Self::prepare();
        tpm.launch()
    }

    /// Like [`Swtpm::start`], after manufacturing the TPM with `swtpm_setup`: RSA-2048 and
    /// ECC P-384 endorsement keys with certificates in NV (`0x01c00002`, `0x01c00016`)
    /// signed by swtpm's local CA, and a sha256 PCR bank.
    ///
    /// # Panics
    /// When `swtpm_setup` is missing or fails (the message carries its output).
    pub fn start_with_ek_certificates() -> Self {
        let tpm = Self::prepare();
        let setup = require_command("swtpm_setup", "swtpm-tools").unwrap_or_else(|e| panic!("{e}"));
        let out = Command::new(setup)
            .args([
                "--tpm2",
                "--create-ek-cert",
                "--pcr-banks",
                "sha256",
                "--overwrite",
            ])
            .arg("--tpmstate")
            .arg(tpm.state_dir())
            .output()
            .unwrap_or_else(|e| panic!("cannot run swtpm_setup: {e}"));
        if !out.status.success() {
            panic!(
                "swtpm_setup failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tpm.launch()
    }

    fn prepare() -> Self {
        let binary = require_command("swtpm", "swtpm").unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::Builder::new()
            .prefix("keybroker-swtpm-")
            .tempdir()
            .expect("create a temporary swtpm directory");
        std::fs::create_dir(dir.path().join("state")).expect("create the swtpm state directory");
        Swtpm {
            child: None,
            binary,
            port: 0,
            dir,
        }
    }

    fn launch(mut self) -> Self {
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port_pair();
            if self.spawn() {
                return self;
            }
        }
        panic!("swtpm could not bind a free pair of loopback ports in {PORT_ATTEMPTS} attempts");
    }

    /// The TCTI string that tss-esapi and tpm2-tools (`TPM2TOOLS_TCTI`) use to reach it.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The TPM command port on 127.0.0.1 (the control port is the next one).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory that holds the TPM's persistent state.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A scratch directory that lives as long as the fixture.
    pub fn scratch_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs a tpm2-tools command (`args[0]` is the tool) against this TPM, in the scratch
    /// directory, and returns its stdout. Afterwards it flushes the transient objects the
    /// tool left behind, as a resource manager would: swtpm holds only three.
    ///
    /// # Panics
    /// When tpm2-tools is missing or the command fails (the message carries its stderr).
    pub fn tpm2_tool(&self, args: &[&str]) -> String {
        let run = |args: &[&str]| {
            self.try_tpm2_tool(args)
                .unwrap_or_else(|stderr| panic!("{args:?}: {stderr}"))
        };
        let stdout = run(args);
        run(&["tpm2_flushcontext", "-t"]);
        stdout
    }

    /// Runs a tpm2-tools command as another local process would, and returns its stdout, or
    /// its stderr when it fails (for commands that are meant to be refused).
    ///
    /// # Panics
    /// When tpm2-tools is missing or the command cannot be started.
    pub fn try_tpm2_tool(&self, args: &[&str]) -> Result<String, String> {
        let (tool, rest) = args.split_first().expect("a tpm2-tools command");
        let program = require_command(tool, "tpm2-tools").unwrap_or_else(|e| panic!("{e}"));
        let out = Command::new(program)
            .args(rest)
            .current_dir(self.scratch_dir())
            .env("TPM2TOOLS_TCTI", self.tcti())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The swtpm process's id while it runs (to stop it with `SIGSTOP`, as a hung TPM).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// Kills the process; the state directory stays. Calls to the TPM fail until
    /// [`Swtpm::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process if it runs, then starts it again on the same state and ports,
    /// like a reboot: PCRs reset, NV and persistent objects remain.
    ///
    /// # Panics
    /// When the ports were taken meanwhile by another process, for ten seconds.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "swtpm could not take its ports back"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn address(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Starts swtpm on `self.port`; false if it exited early (a port was taken).
    fn spawn(&mut self) -> bool {
        let stderr_path = self.dir.path().join("swtpm.stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("create the swtpm log file");
        let child = Command::new(&self.binary)
            .arg("socket")
            .arg("--tpm2")
            .arg("--server")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", self.port))
            .arg("--ctrl")
            .arg(format!(
                "type=tcp,port={},bindaddr=127.0.0.1",
                self.port + 1
            ))
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
        self.wait_ready(&stderr_path)
    }

    fn wait_ready(&mut self, stderr_path: &Path) -> bool {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&self.address(), POLL_INTERVAL).is_ok() {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            let log = || std::fs::read_to_string(stderr_path).unwrap_or_default();
            if exited.is_some() {
                self.child = None;
                if log().contains("in use") {
                    return false;
                }
                panic!(
                    "swtpm exited during start-up ({exited:?}); its stderr:\n{}",
                    log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "swtpm did not become ready in {READY_TIMEOUT:?}; its stderr:\n{}",
                    log()
                );
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

/// A port P such that P and P + 1 were both free on 127.0.0.1 a moment ago.
fn free_port_pair() -> u16 {
    loop {
        let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind an ephemeral port");
        let port = first.local_addr().expect("local address").port();
        if port < u16::MAX && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
            return port;
        }
    }
}
