//! The development broker's swtpm processes, and the lock-down of their hierarchies.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{DevResult, create_private_dir, io, write_secret};

/// Hierarchy auth files in the state directory, written once with the TPM's lock-down.
pub(super) const TPM_OWNER_AUTH: &str = "tpm-owner-auth";
pub(super) const TPM_ENDORSEMENT_AUTH: &str = "tpm-endorsement-auth";
const TPM_LOCKOUT_AUTH: &str = "tpm-lockout-auth";

/// Gives the TPM's hierarchies auth values (first start only) and locks the platform
/// hierarchy (every start: swtpm resets it).
pub(super) fn lock_down_tpm(state: &Path, tcti: &tpm_backend::Tcti) -> DevResult<()> {
    use tpm_backend::hierarchy::{lock_platform_hierarchy, take_ownership};
    use tpm_backend::{HierarchyAuth, HierarchyAuths};
    let owner_file = state.join(TPM_OWNER_AUTH);
    if !owner_file.exists() {
        let auths = HierarchyAuths {
            owner: Some(HierarchyAuth::random()),
            endorsement: Some(HierarchyAuth::random()),
            lockout: Some(HierarchyAuth::random()),
        };
        // Written before they are set, so that they are never lost.
        for (name, auth) in [
            (TPM_OWNER_AUTH, &auths.owner),
            (TPM_ENDORSEMENT_AUTH, &auths.endorsement),
            (TPM_LOCKOUT_AUTH, &auths.lockout),
        ] {
            if let Some(auth) = auth {
                let text = zeroize::Zeroizing::new(hex::encode(auth.expose()));
                write_secret(&state.join(name), &text)?;
            }
        }
        take_ownership(tcti, &auths).map_err(|e| {
            format!(
                "setting the swtpm's hierarchy auth failed ({e}); if {}/tpm was made by an \
                 older keybroker, remove the state directory",
                state.display()
            )
        })?;
    }
    lock_platform_hierarchy(tcti).map_err(io("locking the swtpm's platform hierarchy"))
}

/// A swtpm on two free loopback ports (commands, and control at the next port).
pub(super) struct Swtpm {
    child: Child,
    pub(super) port: u16,
}

impl Swtpm {
    pub(super) fn start(dir: &Path) -> DevResult<Swtpm> {
        create_private_dir(dir)?;
        let port = free_port_pair()?;
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .arg("--tpmstate")
            .arg(format!("dir={}", dir.display()))
            .stdout(Stdio::null())
            .spawn()
            .map_err(io(
                "starting swtpm (is it installed? `make run` installs it)",
            ))?;
        let mut swtpm = Swtpm { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                swtpm.stop();
                return Err("swtpm did not start listening within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(swtpm)
    }

    pub(super) fn tcti_text(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    pub(super) fn tcti(&self) -> DevResult<tpm_backend::Tcti> {
        tpm_backend::Tcti::new(&self.tcti_text()).map_err(io("swtpm TCTI"))
    }

    /// An orderly stop: `TPM2_Shutdown` first (an unordered stop counts towards the TPM's
    /// dictionary-attack lockout), then the process.
    pub(super) fn stop(&mut self) {
        if let Ok(tcti) = self.tcti() {
            if let Err(e) = tpm_backend::hierarchy::shutdown(&tcti) {
                tracing::debug!(error = %e, "TPM2_Shutdown before stopping swtpm failed");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A set-up step that fails after swtpm started must not leave it running.
impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port_pair() -> DevResult<u16> {
    for _ in 0..50 {
        let first = TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
        let port = first
            .local_addr()
            .map_err(io("finding a free port"))?
            .port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free pair of loopback ports".into())
}
