//! `keybroker serve --dev`: a complete broker on one machine, for trying it out and for
//! demos. Like `vault server -dev`, never for production: PINs sit in files beside the
//! token, and the CA key is on disk.
//!
//! It provisions, under the state directory: a SoftHSM2 token (`keybroker-dev`), a swtpm,
//! a second swtpm as the workloads' host TPM with an attestation key enrolled in the
//! appraisal policy (`crate::attestation::dev`), a development CA with server and client
//! certificates, a Cedar policy, a broker configuration and two client configurations
//! (admin and workload). It then runs `keybroker serve --config` as a child with
//! `SOFTHSM2_CONF` set, and stops the child and both swtpms on Ctrl-C or SIGTERM. State
//! survives restarts; swtpm gets new ports each time.
//!
//! The swtpm is locked down as a real TPM would be: its owner, endorsement and lockout
//! hierarchies get random auth values on first start (hex, 0600 files `tpm-*-auth` in the
//! state directory; the broker reads the owner and endorsement ones), and its platform
//! hierarchy gets a random, forgotten auth at every start, as firmware does. So another
//! local process that reaches it cannot `tpm2_clear` it. Its command and control channels
//! are still loopback TCP, not a unix socket in the state directory: tss-esapi 7.7 cannot
//! name a unix-socket TCTI (`swtpm:path=` needs tss-esapi 8), and libtss2's swtpm TCTI sets
//! the locality through the control channel at port + 1 when it connects.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, SystemTime};

mod tpm;

use tpm::{Swtpm, TPM_ENDORSEMENT_AUTH, TPM_OWNER_AUTH, lock_down_tpm};

use crate::attestation::dev::{dev_appraisal_policy, enrol_host_ak};
use crate::tls::devpki::DevPki;

const TOKEN_LABEL: &str = "keybroker-dev";
const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TRUST_DOMAIN: &str = "keybroker.dev";
const CLIENT_VALIDITY: Duration = Duration::from_secs(30 * 86_400);

type DevResult<T> = Result<T, String>;

fn io<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> String {
    move |e| format!("{what}: {e}")
}

/// Runs the development broker in the foreground.
///
/// # Errors
/// A set-up step failed (the message names it), or the broker exited with an error.
pub fn run(state: &Path, listen: SocketAddr, orphan_all_existing_keys: bool) -> DevResult<()> {
    create_private_dir(state)?;
    let state = state.canonicalize().map_err(io(state.display()))?;
    let softhsm_conf = softhsm(&state)?;
    let mut swtpm = Swtpm::start(&state.join("tpm"))?;
    let mut host_tpm = Swtpm::start(&state.join("host-tpm"))?;
    let pki = pki(&state)?;
    let policy = state.join("policy.cedar");
    if !policy.exists() {
        std::fs::write(&policy, crate::authz::DEV_POLICY).map_err(io(policy.display()))?;
    }
    let ak = enrol_host_ak(&state, &host_tpm.tcti_text())?;
    let appraisal = state.join("attestation.toml");
    if !appraisal.exists() || ak.created {
        std::fs::write(&appraisal, dev_appraisal_policy(&ak.spki))
            .map_err(io(appraisal.display()))?;
    }
    if let Err(e) = lock_down_tpm(&state, &swtpm.tcti()?) {
        swtpm.stop();
        return Err(e);
    }
    let config = state.join("config.toml");
    std::fs::write(&config, broker_config(listen, swtpm.port)).map_err(io(config.display()))?;
    for (who, _) in CLIENTS {
        let path = state.join(format!("{who}.toml"));
        let text = format!(
            "endpoint = \"https://localhost:{}\"\nca = \"pki/ca.pem\"\ncert = \"pki/{who}.pem\"\nkey = \"pki/{who}-key.pem\"\n",
            listen.port()
        );
        std::fs::write(&path, text).map_err(io(path.display()))?;
    }
    drop(pki);
    print_banner(&state, listen);
    let exe = std::env::current_exe().map_err(io("locating keybroker"))?;
    let mut serve = Command::new(exe);
    serve.args(["serve", "--config"]).arg(&config);
    if orphan_all_existing_keys {
        serve.arg("--orphan-all-existing-keys");
    }
    let mut broker = serve
        .env("SOFTHSM2_CONF", &softhsm_conf)
        .spawn()
        .map_err(io("starting the broker"))?;
    let status = wait_or_forward_signal(&mut broker);
    swtpm.stop();
    host_tpm.stop();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("the broker exited with {s}")),
        Err(e) => Err(e),
    }
}

/// `(name, SPIFFE path)` of the development client certificates.
const CLIENTS: [(&str, &str); 2] = [("admin", "/admin"), ("workload", "/workload")];

fn create_private_dir(dir: &Path) -> DevResult<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir.display()))
}

/// Writes `bytes` to a file created with mode 0600.
pub(crate) fn write_secret(path: &Path, bytes: impl AsRef<[u8]>) -> DevResult<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path.display()))?;
    f.write_all(bytes.as_ref()).map_err(io(path.display()))
}

fn random_pin() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A SoftHSM2 configuration and an initialised token; returns the configuration path.
fn softhsm(state: &Path) -> DevResult<PathBuf> {
    let tokens = state.join("tokens");
    create_private_dir(&tokens)?;
    let conf = state.join("softhsm2.conf");
    let text = format!(
        "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
        tokens.display()
    );
    std::fs::write(&conf, text).map_err(io(conf.display()))?;
    let user_pin = state.join("user-pin");
    if user_pin.exists() {
        return Ok(conf);
    }
    let so_pin = state.join("so-pin");
    write_secret(&so_pin, random_pin())?;
    write_secret(&user_pin, random_pin())?;
    let exe = std::env::current_exe().map_err(io("locating keybroker"))?;
    let out = Command::new(exe)
        .args([
            "token",
            "init",
            "--module",
            SOFTHSM_MODULE,
            "--label",
            TOKEN_LABEL,
        ])
        .arg("--so-pin-file")
        .arg(&so_pin)
        .arg("--user-pin-file")
        .arg(&user_pin)
        .arg("--enable-release")
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .map_err(io("keybroker token init"))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&user_pin);
        return Err(format!(
            "initialising the SoftHSM2 token failed (is softhsm2 installed? `make run` installs it): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(conf)
}

fn pki(state: &Path) -> DevResult<DevPki> {
    let dir = state.join("pki");
    if dir.join("ca.pem").exists() {
        return DevPki::load_from(&dir).map_err(io("development PKI"));
    }
    let pki = DevPki::generate(TRUST_DOMAIN, &["localhost".to_string()])
        .map_err(io("development PKI"))?;
    pki.write_to(&dir).map_err(io("development PKI"))?;
    let now = SystemTime::now();
    let not_before = now.checked_sub(Duration::from_secs(300)).unwrap_or(now);
    for (who, path) in CLIENTS {
        pki.issue_client(path, not_before, now + CLIENT_VALIDITY)
            .and_then(|c| c.write_to(&dir, who))
            .map_err(io(format!("{who} certificate")))?;
    }
    Ok(pki)
}

fn broker_config(listen: SocketAddr, tpm_port: u16) -> String {
    format!(
        r#"# Generated by `keybroker serve --dev`; rewritten at every start.
[server]
listen = "{listen}"
cert = "pki/server.pem"
key = "pki/server-key.pem"
client_ca = ["pki/ca.pem"]

[store]
path = "keybroker.db"
# The store's rows carry MACs under a store key that the HSM wraps (docs/sealing.md).
protect_with = "softhsm"

[policy]
files = ["policy.cedar"]

[keys]
default_backend = "softhsm"
destruction_pending_days = 1
min_destruction_pending_days = 0
orphans = "report"

[[hsm]]
name = "softhsm"
module = "{SOFTHSM_MODULE}"
token_label = "{TOKEN_LABEL}"
user_pin_file = "user-pin"

[[tpm]]
name = "swtpm"
tcti = "swtpm:host=127.0.0.1,port={tpm_port}"
owner_auth_file = "{TPM_OWNER_AUTH}"
endorsement_auth_file = "{TPM_ENDORSEMENT_AUTH}"

[ca]
backend = "softhsm"

[secrets]
backend = "softhsm"

# A dynamic role: 32 random bytes from the HSM, leased for 10 minutes (at most an hour).
[[secrets.random]]
name = "demo/session-key"
default_ttl_seconds = 600
max_ttl_seconds = 3600

[attestation]
policy = "attestation.toml"
signing_backend = "softhsm"
issuer = "https://keybroker.dev"
"#
    )
}

fn print_banner(state: &Path, listen: SocketAddr) {
    let s = state.display();
    println!(
        "Keybroker development mode: NOT FOR PRODUCTION (PINs and the CA key are on disk).\n\
         \n  state:      {s}\n  listening:  https://localhost:{port} (mTLS)\n  backends:   softhsm (SoftHSM2 token {TOKEN_LABEL:?}), swtpm\n  policy:     {s}/policy.cedar\n  host TPM:   {s}/host-tpm.tcti, attestation key {s}/tpm-ak.blob (enrolled in {s}/attestation.toml)\n\
         \nIn another shell:\n\
         \n  export KEYBROKER_CLIENT_CONFIG={s}/admin.toml\n  keybroker keys create demo-signing --algorithm ec-p256 --purpose sign --tag team=demo\n  keybroker keys list\n\
         \n  grpcurl -cacert {s}/pki/ca.pem -cert {s}/pki/admin.pem -key {s}/pki/admin-key.pem localhost:{port} list\n",
        port = listen.port()
    );
}

fn wait_or_forward_signal(child: &mut Child) -> DevResult<std::process::ExitStatus> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("runtime"))?;
    let pid = child.id();
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).map_err(io("signals"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(io("signals"))?;
        // A hangup (the terminal closed) stops development mode too. The broker itself
        // takes SIGHUP as "reload the policy", so without this it would outlive the
        // terminal; in development mode, reload with `keybroker policy reload`.
        let mut hup = signal(SignalKind::hangup()).map_err(io("signals"))?;
        let stop = || {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        };
        loop {
            tokio::select! {
                _ = term.recv() => stop(),
                _ = int.recv() => stop(),
                _ = hup.recv() => stop(),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            if let Some(status) = child.try_wait().map_err(io("waiting for the broker"))? {
                return Ok(status);
            }
        }
    })
}
