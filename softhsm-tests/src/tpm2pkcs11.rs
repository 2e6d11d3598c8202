//! A private tpm2-pkcs11 token for one test: the second PKCS#11 module the broker is tested
//! on, a TPM behind a PKCS#11 face.
//!
//! swtpm has three transient-object slots and no resource manager, so tpm2-pkcs11 needs
//! `tpm2-abrmd` in front of it. abrmd serves on D-Bus, so each fixture starts its own
//! `dbus-daemon --session` on a socket in its temporary directory, abrmd on that bus with
//! `--tcti=swtpm:...`, and a token store (`TPM2_PKCS11_STORE`) made with `tpm2_ptool init`
//! and `addtoken`. Nothing is shared with another test or with the machine's buses.
//!
//! tpm2-pkcs11 reads `TPM2_PKCS11_TCTI`, `TPM2_PKCS11_STORE` and
//! `DBUS_SESSION_BUS_ADDRESS` at `C_Initialize`, once per process: a test gives
//! [`Tpm2Pkcs11::env`] to the process that loads the module (the real broker, pkcs11-tool).
//! Readiness is polled (the bus prints its address; abrmd owns its bus name), never slept
//! for. Every process is killed on drop, abrmd first.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Swtpm;
use crate::packages::{MissingPackage, require_command, require_file};

/// Environment variable that overrides where the tpm2-pkcs11 module is looked for.
pub const MODULE_ENV: &str = "KEYBROKER_TPM2_PKCS11_MODULE";
/// The D-Bus name tpm2-abrmd owns.
const ABRMD_NAME: &str = "com.intel.tss2.Tabrmd";
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// swtpm + a private D-Bus + tpm2-abrmd + a tpm2-pkcs11 store with one token.
#[derive(Debug)]
pub struct Tpm2Pkcs11 {
    // Drop order: abrmd, then the bus, then swtpm, then the directory.
    abrmd: Child,
    bus: Child,
    tpm: Swtpm,
    bus_address: String,
    module_path: PathBuf,
    ptool: PathBuf,
    dir: tempfile::TempDir,
}

impl Tpm2Pkcs11 {
    /// The token's label.
    pub const TOKEN_LABEL: &'static str = "tpm2-e2e";
    /// The token's user PIN.
    pub const USER_PIN: &'static str = "user-pin-1234";
    /// The token's SO PIN.
    pub const SO_PIN: &'static str = "so-pin-1234";
    /// The TCTI tpm2-pkcs11 uses: abrmd on the session bus (`DBUS_SESSION_BUS_ADDRESS`).
    pub const TCTI: &'static str = "tabrmd:bus_type=session";

    /// Starts swtpm, a private bus and abrmd, and makes the token.
    ///
    /// # Panics
    /// When a package is missing (the message names it and how to install it), or a
    /// process does not come up or a tool fails (the message carries its output).
    pub fn start() -> Self {
        let module_path = Self::module_path_or_missing().unwrap_or_else(|e| panic!("{e}"));
        let need = |cmd: &str, pkg: &'static str| {
            require_command(cmd, pkg).unwrap_or_else(|e| panic!("{e}"))
        };
        let dbus_daemon = need("dbus-daemon", "dbus");
        let dbus_send = need("dbus-send", "dbus");
        let abrmd = find_sbin("tpm2-abrmd").unwrap_or_else(|e| panic!("{e}"));
        let ptool = need("tpm2_ptool", "libtpm2-pkcs11-tools");
        require_file(
            &tcti_candidates(),
            "the tpm2-abrmd TCTI (libtss2-tcti-tabrmd.so.0)",
            "libtss2-tcti-tabrmd0",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let tpm = Swtpm::start();
        let dir = tempfile::Builder::new()
            .prefix("keybroker-tpm2pkcs11-")
            .tempdir()
            .expect("create a temporary tpm2-pkcs11 directory");
        std::fs::create_dir(dir.path().join("store")).expect("create the token store");
        let (bus, bus_address) = start_bus(&dbus_daemon, dir.path());
        let abrmd = start_abrmd(&abrmd, &tpm, &bus_address, dir.path());
        let fixture = Tpm2Pkcs11 {
            abrmd,
            bus,
            tpm,
            bus_address,
            module_path,
            ptool,
            dir,
        };
        fixture.wait_for_abrmd(&dbus_send);
        fixture.ptool(&["init"]);
        fixture.ptool(&[
            "addtoken",
            "--pid=1",
            &format!("--label={}", Self::TOKEN_LABEL),
            &format!("--sopin={}", Self::SO_PIN),
            &format!("--userpin={}", Self::USER_PIN),
        ]);
        fixture
    }

    /// Finds the tpm2-pkcs11 module (`…/pkcs11/libtpm2_pkcs11.so` under any `/usr/lib`
    /// multiarch directory), or says how to install it.
    pub fn module_path_or_missing() -> Result<PathBuf, MissingPackage> {
        let mut candidates: Vec<PathBuf> = std::env::var_os(MODULE_ENV)
            .map(PathBuf::from)
            .into_iter()
            .collect();
        for lib in ["/usr/lib", "/usr/local/lib"] {
            candidates.push(Path::new(lib).join("pkcs11/libtpm2_pkcs11.so"));
            candidates.extend(
                subdirs(Path::new(lib))
                    .into_iter()
                    .map(|d| d.join("pkcs11/libtpm2_pkcs11.so")),
            );
        }
        require_file(
            &candidates,
            "the tpm2-pkcs11 PKCS#11 module",
            "libtpm2-pkcs11-1",
        )
    }

    /// Path of the PKCS#11 module to load.
    pub fn module_path(&self) -> &Path {
        &self.module_path
    }

    /// The variables a process that loads the module must get.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TPM2_PKCS11_TCTI", Self::TCTI.to_string()),
            ("TPM2_PKCS11_STORE", self.store_dir().display().to_string()),
            ("DBUS_SESSION_BUS_ADDRESS", self.bus_address.clone()),
        ]
    }

    /// Sets [`Tpm2Pkcs11::env`] in this process, for a test that loads the module itself.
    /// Call it before the module is loaded; one fixture per process (nextest runs each
    /// test in its own).
    #[allow(unsafe_code)]
    pub fn export_env(&self) {
        for (name, value) in self.env() {
            // SAFETY: tpm2-pkcs11 takes its settings only from the environment; under
            // nextest the test is the only thread running when it sets them, before it
            // loads the module.
            unsafe { std::env::set_var(name, value) };
        }
    }

    /// The token store directory (`TPM2_PKCS11_STORE`).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The swtpm behind abrmd.
    pub fn tpm(&self) -> &Swtpm {
        &self.tpm
    }

    /// A scratch directory that lives as long as the fixture.
    pub fn scratch_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `pkcs11-tool` on the token, logged in as the user, and returns its stdout. The
    /// PIN is on pkcs11-tool's command line: a test's own throwaway PIN.
    ///
    /// # Panics
    /// When opensc is missing or the command fails (the message carries its stderr).
    pub fn pkcs11_tool(&self, args: &[&str]) -> String {
        let tool = require_command("pkcs11-tool", "opensc").unwrap_or_else(|e| panic!("{e}"));
        let out = Command::new(tool)
            .arg("--module")
            .arg(&self.module_path)
            .args(["--token-label", Self::TOKEN_LABEL])
            .args(["--login", "--pin", Self::USER_PIN])
            .args(args)
            .envs(self.env())
            .output()
            .unwrap_or_else(|e| panic!("cannot run pkcs11-tool: {e}"));
        assert!(
            out.status.success(),
            "pkcs11-tool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ptool(&self, args: &[&str]) {
        let store = format!("--path={}", self.store_dir().display());
        let out = Command::new(&self.ptool)
            .args(args)
            .arg(&store)
            .envs(self.env())
            .env("TPM2TOOLS_TCTI", Self::TCTI)
            .output()
            .unwrap_or_else(|e| panic!("cannot run tpm2_ptool: {e}"));
        assert!(
            out.status.success(),
            "tpm2_ptool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Polls the bus until abrmd owns its name; fails with abrmd's log if it exits.
    fn wait_for_abrmd(&self, dbus_send: &Path) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let log = || std::fs::read_to_string(self.dir.path().join("abrmd.log")).unwrap_or_default();
        loop {
            let owned = Command::new(dbus_send)
                .args(["--session", "--print-reply", "--dest=org.freedesktop.DBus"])
                .args(["/org/freedesktop/DBus", "org.freedesktop.DBus.NameHasOwner"])
                .arg(format!("string:{ABRMD_NAME}"))
                .env("DBUS_SESSION_BUS_ADDRESS", &self.bus_address)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("boolean true"))
                .unwrap_or(false);
            if owned {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tpm2-abrmd did not take its bus name in {READY_TIMEOUT:?}; its log:\n{}",
                log()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Tpm2Pkcs11 {
    fn drop(&mut self) {
        for child in [&mut self.abrmd, &mut self.bus] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `dbus-daemon --session` on a socket in `dir`; it prints its address once ready.
fn start_bus(dbus_daemon: &Path, dir: &Path) -> (Child, String) {
    let mut bus = Command::new(dbus_daemon)
        .args(["--session", "--nofork", "--print-address=1"])
        .arg(format!("--address=unix:path={}", dir.join("bus").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file(dir, "dbus.log"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start dbus-daemon: {e}"));
    let stdout = bus.stdout.take().expect("dbus-daemon stdout");
    let mut address = String::new();
    let read = BufReader::new(stdout).read_line(&mut address);
    let address = address.trim().to_string();
    if read.is_err() || address.is_empty() {
        let _ = bus.kill();
        let _ = bus.wait();
        panic!(
            "dbus-daemon printed no address; its log:\n{}",
            std::fs::read_to_string(dir.join("dbus.log")).unwrap_or_default()
        );
    }
    (bus, address)
}

/// Starts tpm2-abrmd on the private bus, in front of `tpm`.
fn start_abrmd(abrmd: &Path, tpm: &Swtpm, bus_address: &str, dir: &Path) -> Child {
    Command::new(abrmd)
        .args([
            "--session",
            "--allow-root",
            "--flush-all",
            "--logger=stdout",
        ])
        .arg(format!("--tcti=swtpm:host=127.0.0.1,port={}", tpm.port()))
        .env("DBUS_SESSION_BUS_ADDRESS", bus_address)
        .stdin(Stdio::null())
        .stdout(log_file(dir, "abrmd.log"))
        .stderr(log_file(dir, "abrmd.log"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start tpm2-abrmd: {e}"))
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .unwrap_or_else(|e| panic!("cannot open {name}: {e}"))
}

/// tpm2-abrmd lives in `/usr/sbin`, which is not always on a user's `PATH`.
fn find_sbin(command: &str) -> Result<PathBuf, MissingPackage> {
    require_command(command, "tpm2-abrmd").or_else(|missing| {
        let candidates = ["/usr/sbin", "/usr/local/sbin"].map(|d| Path::new(d).join(command));
        require_file(&candidates, &missing.what, "tpm2-abrmd")
    })
}

fn tcti_candidates() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/usr/lib"), PathBuf::from("/usr/local/lib")];
    dirs.extend(subdirs(Path::new("/usr/lib")));
    dirs.into_iter()
        .map(|d| d.join("libtss2-tcti-tabrmd.so.0"))
        .collect()
}

/// The multiarch library directories under `dir` (`x86_64-linux-gnu`, ...).
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.to_string_lossy().contains("-linux-"))
        .collect();
    found.sort();
    found
}
