//! A real `keybroker serve` process on its own SoftHSM2 token and swtpm, with a
//! development PKI, for end-to-end tests. One per test; killed on drop.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use broker::tls::devpki::DevPki;
use keybroker_api::v1 as pb;
use pb::key_service_client::KeyServiceClient;
use softhsm_tests::{SoftHsm, Swtpm};
use tonic::transport::Channel;

pub const TRUST_DOMAIN: &str = "test.keybroker";
pub const TOKEN_LABEL: &str = "e2e";

pub mod fill;
pub mod pkcs11_tool;
mod policies;
pub mod postgres;
pub mod store;
pub mod workload;
#[allow(unused_imports)] // each test binary uses a different subset
pub use policies::{
    APPRAISAL_POLICY, ISSUER, POLICY, TRUSTED_MEASUREMENT, appraisal_policy_enrolling,
};

/// The user PIN of the broker's token.
pub const USER_PIN: &str = "user-pin-1234";

/// How often [`eventually`] looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `condition` until it holds, or `timeout` passes; returns whether it held. Tests
/// wait on what they can observe (a log line, a stored row, an answer), never for a fixed
/// time: the deadline only bounds a failure.
pub async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// How [`BrokerProcess::start_with`] builds and configures the broker.
#[derive(Debug, Clone, Copy)]
pub struct BrokerOptions {
    /// Build and run the release profile (benchmarks) rather than debug (tests).
    pub release: bool,
    /// `hsm[].sessions`: PKCS#11 sessions the broker opens on its token.
    pub hsm_sessions: usize,
    /// TOML lines appended to `[ca]` (after `backend = "softhsm"`).
    pub ca_lines: &'static str,
    /// `KEYBROKER_LOG`: the broker's log filter.
    pub log: &'static str,
    /// TOML lines appended to `[store]` (after `path`): by default the HSM protects the
    /// store's rows.
    pub store_lines: &'static str,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            release: false,
            hsm_sessions: 2,
            ca_lines: "",
            log: "info",
            store_lines: "protect_with = \"softhsm\"",
        }
    }
}

/// Extra `[server]` settings, and files they need, for the transport tests.
#[derive(Debug, Clone, Default)]
pub struct TransportOptions {
    /// TOML lines appended to `[server]` (small limits, short timeouts).
    pub server_lines: String,
    /// Write `pki/crl.pem` (revoking nothing) and name it in `client_crls`.
    pub client_crl: bool,
}

/// Builds the `keybroker` binary (debug or release) once per process and returns its
/// path, `target/<profile>/keybroker`.
pub fn keybroker_binary(release: bool) -> &'static Path {
    static DEBUG: OnceLock<PathBuf> = OnceLock::new();
    static RELEASE: OnceLock<PathBuf> = OnceLock::new();
    let (cell, profile) = if release {
        (&RELEASE, "release")
    } else {
        (&DEBUG, "debug")
    };
    cell.get_or_init(|| {
        // Debug: the same selection as `cargo nextest run --workspace` builds (every test
        // target, so the same dependency features), which is a no-op after it; building
        // `-p broker` alone would resolve other features and rebuild dozens of crates.
        let args: &[&str] = if release {
            &[
                "build",
                "--quiet",
                "--locked",
                "--release",
                "-p",
                "broker",
                "--bin",
                "keybroker",
            ]
        } else {
            &["build", "--quiet", "--locked", "--workspace", "--tests"]
        };
        let status = Command::new(env!("CARGO"))
            .args(args)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building keybroker failed");
        // target/<profile>/deps/<test or bench binary> -> target/<profile>/keybroker
        let exe = std::env::current_exe().unwrap();
        let target = exe.parent().unwrap().parent().unwrap().parent().unwrap();
        let bin = target.join(profile).join("keybroker");
        assert!(bin.exists(), "{} missing", bin.display());
        bin
    })
}

/// The `keybroker-agent` binary beside `keybroker` (the same build makes both).
pub fn agent_binary() -> PathBuf {
    let bin = keybroker_binary(false).with_file_name("keybroker-agent");
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}

/// What the broker prints once its attestation token keys are found (right after
/// "listening on" when attestation is off).
pub const READY_LINE: &str = "keybroker: ready";
/// The longest a broker may take from spawn to "ready" in a test or bench.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(180);

/// SIGTERM (a graceful stop), then waits for the process.
pub fn terminate(child: &mut Child) {
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    child.wait().unwrap();
}

/// A `KeyService` client as `admin`, with the certificates in `pki` (`ca.pem`,
/// `admin.pem`, `admin-key.pem`), to a broker on localhost at `port`.
pub async fn admin_client(pki: &Path, port: &str) -> KeyServiceClient<Channel> {
    let pem = |name: &str| std::fs::read(pki.join(name)).unwrap();
    let channel = broker::tls::client_channel(
        &format!("https://localhost:{port}"),
        &pem("ca.pem"),
        &pem("admin.pem"),
        &pem("admin-key.pem"),
    )
    .await
    .unwrap();
    KeyServiceClient::new(channel)
}

/// Why a broker's start was not seen through.
#[derive(Debug)]
pub enum StartFailure {
    /// It exited first.
    Exited(std::process::ExitStatus),
    /// It was still not "listening" or "ready" (which one) when the wait ended; it was
    /// killed.
    TimedOut(&'static str),
}

/// Reads a spawned broker's stdout until "listening on" (and "ready" if `wait_ready`), at
/// most `limit`: its address, and a receiver that gets the moment "ready" was read. Stdout
/// is read on a thread of its own, and drained for as long as the broker runs so that it
/// never blocks on a full pipe.
///
/// # Errors
/// The broker exits first, or `limit` passes (then it is killed).
pub fn read_start(
    child: &mut Child,
    wait_ready: bool,
    limit: Duration,
) -> Result<Started, StartFailure> {
    use std::sync::mpsc::{RecvTimeoutError, channel};
    let stdout = child.stdout.take().expect("the broker's stdout is piped");
    let (line_tx, lines) = channel();
    let (ready_tx, ready) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line == READY_LINE {
                let _ = ready_tx.send(Instant::now());
            }
            let _ = line_tx.send(line);
        }
    });
    let deadline = Instant::now() + limit;
    let mut addr = None;
    let mut oidc = None;
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if let Some(listening) = line.strip_prefix("keybroker: oidc on ") {
                    oidc = Some(listening.to_string());
                } else if let Some(listening) = line.strip_prefix("keybroker: listening on ") {
                    addr = Some(listening.to_string());
                    if !wait_ready {
                        break;
                    }
                } else if line == READY_LINE && addr.is_some() {
                    break;
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(StartFailure::Exited(child.wait().unwrap()));
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                let what = if addr.is_some() { "ready" } else { "listening" };
                return Err(StartFailure::TimedOut(what));
            }
        }
    }
    if wait_ready {
        // The moment was sent when the line was read.
        let _ = ready.try_recv();
    }
    Ok(Started {
        addr: addr.unwrap_or_default(),
        oidc,
        ready,
    })
}

/// What a broker printed as it started.
pub struct Started {
    /// The gRPC address.
    pub addr: String,
    /// The OIDC discovery port's address, if it serves one.
    pub oidc: Option<String>,
    /// When it printed "ready" (sent once).
    pub ready: std::sync::mpsc::Receiver<Instant>,
}

/// A broker process and everything it runs on.
pub struct BrokerProcess {
    pub hsm: SoftHsm,
    pub tpm: Swtpm,
    pub dir: tempfile::TempDir,
    pub pki: DevPki,
    child: Option<Child>,
    pub addr: String,
    /// The OIDC discovery port (`[oidc] listen`).
    pub oidc_addr: String,
    binary: &'static Path,
    /// A command the broker runs under (`unshare ... sh -c ...`), or nothing.
    pub wrapper: Vec<String>,
    /// `KEYBROKER_LOG`.
    log: &'static str,
}

impl BrokerProcess {
    /// A token, a swtpm, certificates for `admin`, `workload`, `stranger` (not in the
    /// policy) and `expired`, the test policy, and a running broker.
    pub fn start() -> BrokerProcess {
        BrokerProcess::start_with(BrokerOptions::default())
    }

    /// As [`BrokerProcess::start`], built and configured as `options` say.
    pub fn start_with(options: BrokerOptions) -> BrokerProcess {
        BrokerProcess::start_with_transport(options, TransportOptions::default())
    }

    /// As [`BrokerProcess::start_with`], with the `[server]` extras of `transport`.
    pub fn start_with_transport(
        options: BrokerOptions,
        transport: TransportOptions,
    ) -> BrokerProcess {
        BrokerProcess::start_full(options, transport, APPRAISAL_POLICY, "", "")
    }

    /// As [`BrokerProcess::start_with`], with these TOML lines after `[secrets]`'s
    /// (dynamic roles: `[[secrets.postgres]]`).
    pub fn start_with_secrets(options: BrokerOptions, secrets_lines: &str) -> BrokerProcess {
        BrokerProcess::start_full(
            options,
            TransportOptions::default(),
            APPRAISAL_POLICY,
            "",
            secrets_lines,
        )
    }

    /// As [`BrokerProcess::start_with`], with this appraisal policy and extra lines for the
    /// configuration's `[attestation]` section.
    pub fn start_attesting(
        options: BrokerOptions,
        appraisal_policy: &str,
        attestation_settings: &str,
    ) -> BrokerProcess {
        BrokerProcess::start_full(
            options,
            TransportOptions::default(),
            appraisal_policy,
            attestation_settings,
            "",
        )
    }

    fn start_full(
        options: BrokerOptions,
        transport: TransportOptions,
        appraisal_policy: &str,
        attestation_settings: &str,
        secrets_lines: &str,
    ) -> BrokerProcess {
        let binary = keybroker_binary(options.release);
        let hsm = SoftHsm::new();
        let tpm = Swtpm::start();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("so-pin"), "so-pin-1234").unwrap();
        std::fs::write(d.join("user-pin"), USER_PIN).unwrap();
        for f in ["so-pin", "user-pin"] {
            set_mode(&d.join(f), 0o600);
        }
        let out = Command::new(binary)
            .args(["token", "init", "--label", TOKEN_LABEL, "--module"])
            .arg(hsm.module_path())
            .arg("--so-pin-file")
            .arg(d.join("so-pin"))
            .arg("--user-pin-file")
            .arg(d.join("user-pin"))
            .arg("--enable-release")
            .env("SOFTHSM2_CONF", hsm.conf_path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let pki = DevPki::generate(TRUST_DOMAIN, &["localhost".to_string()]).unwrap();
        pki.write_to(&d.join("pki")).unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        for who in ["admin", "workload", "stranger"] {
            pki.issue_client(&format!("/{who}"), now - day, now + day)
                .unwrap()
                .write_to(&d.join("pki"), who)
                .unwrap();
        }
        pki.issue_client("/admin", now - 3 * day, now - 2 * day)
            .unwrap()
            .write_to(&d.join("pki"), "expired")
            .unwrap();
        let mut server_lines = transport.server_lines.clone();
        let store_lines = options.store_lines;
        if transport.client_crl {
            let crl = pki.revocation_list(&[], 1, now + day).unwrap();
            std::fs::write(d.join("pki/crl.pem"), crl).unwrap();
            server_lines.push_str("\nclient_crls = [\"pki/crl.pem\"]\n");
        }
        std::fs::write(d.join("policy.cedar"), POLICY).unwrap();
        std::fs::write(d.join("attestation.toml"), appraisal_policy).unwrap();
        std::fs::write(
            d.join("config.toml"),
            format!(
                r#"[server]
listen = "127.0.0.1:0"
cert = "pki/server.pem"
key = "pki/server-key.pem"
client_ca = ["pki/ca.pem"]
max_message_bytes = 65536
{server_lines}

[store]
path = "state/keybroker.db"
{store_lines}

[policy]
files = ["policy.cedar"]

[keys]
default_backend = "softhsm"
min_destruction_pending_days = 1

[[hsm]]
name = "softhsm"
module = "{}"
token_label = "{TOKEN_LABEL}"
user_pin_file = "user-pin"
sessions = {}

[[tpm]]
name = "swtpm"
tcti = "{}"
# The default's PCRs, and 16 (the debug PCR) that tests extend.
seal_pcrs = [0, 2, 4, 7, 16]

[secrets]
backend = "softhsm"
lease_sweep_seconds = 1

[[secrets.random]]
name = "app/token"
default_ttl_seconds = 60
max_ttl_seconds = 120
# The benches lease thousands at once.
max_leases_per_caller = 1000000

[[secrets.random]]
name = "app/capped"
max_leases_per_caller = 2
{}

[ca]
backend = "softhsm"
{}

[oidc]
listen = "127.0.0.1:0"
issuer = "{ISSUER}"

[attestation]
policy = "attestation.toml"
signing_backend = "softhsm"
issuer = "{ISSUER}"
{}
"#,
                hsm.module_path().display(),
                options.hsm_sessions,
                tpm.tcti(),
                secrets_lines,
                options.ca_lines,
                attestation_settings,
            ),
        )
        .unwrap();
        let mut broker = BrokerProcess {
            hsm,
            tpm,
            dir,
            pki,
            child: None,
            addr: String::new(),
            oidc_addr: String::new(),
            binary,
            wrapper: Vec::new(),
            log: options.log,
        };
        broker.spawn();
        broker
    }

    /// The broker's log (stderr of every run).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("broker.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `pkcs11-tool` on the broker's token, logged in as the user.
    pub fn pkcs11_tool(&self, args: &[&str]) -> String {
        let out = Command::new("pkcs11-tool")
            .arg("--module")
            .arg(self.hsm.module_path())
            .args(["--token-label", TOKEN_LABEL, "--login", "--pin", USER_PIN])
            .args(args)
            .env("SOFTHSM2_CONF", self.hsm.conf_path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Labels of the token's private and secret keys that the broker made.
    pub fn broker_objects(&self) -> Vec<String> {
        let mut labels = Vec::new();
        for kind in ["privkey", "secrkey"] {
            for line in self
                .pkcs11_tool(&["--list-objects", "--type", kind])
                .lines()
            {
                if let Some(label) = line.trim().strip_prefix("label:") {
                    let label = label.trim();
                    if label.starts_with("kb:") {
                        labels.push(label.to_string());
                    }
                }
            }
        }
        labels.sort();
        labels
    }

    /// Sends a signal (`kill -s NAME`) to the broker process.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("broker running").id();
        let status = Command::new("kill")
            .args(["-s", name, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -s {name} {pid}");
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Starts the process and waits for "ready" (listening, and attestation's keys found).
    pub fn spawn(&mut self) {
        if let Err(status) = self.try_spawn(&[]) {
            panic!("keybroker exited before it was ready: {status}");
        }
    }

    /// Starts the process with `extra` arguments to `serve` and waits for "ready"; the
    /// exit status if it ends first (its reasons are in [`BrokerProcess::log`]).
    pub fn try_spawn(&mut self, extra: &[&str]) -> Result<(), std::process::ExitStatus> {
        self.try_spawn_until(extra, true).map(drop)
    }

    /// Starts the process and waits for "listening on" only; the receiver gets the moment
    /// "ready" is printed.
    pub fn spawn_listening(&mut self) -> std::sync::mpsc::Receiver<std::time::Instant> {
        match self.try_spawn_until(&[], false) {
            Ok(ready) => ready,
            Err(status) => panic!("keybroker exited before listening: {status}"),
        }
    }

    fn try_spawn_until(
        &mut self,
        extra: &[&str],
        wait_ready: bool,
    ) -> Result<std::sync::mpsc::Receiver<std::time::Instant>, std::process::ExitStatus> {
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(self.binary);
                command
            }
            None => Command::new(self.binary),
        };
        let mut child = command
            .args(["serve", "--config"])
            .arg(self.config_path())
            .args(extra)
            .env("SOFTHSM2_CONF", self.hsm.conf_path())
            .env("KEYBROKER_LOG", self.log)
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.log_path())
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        let Started { addr, oidc, ready } = match read_start(&mut child, wait_ready, READY_WAIT) {
            Ok(started) => started,
            Err(StartFailure::Exited(status)) => return Err(status),
            Err(StartFailure::TimedOut(what)) => panic!(
                "keybroker was not {what} within {READY_WAIT:?}; its log:\n{}",
                self.log()
            ),
        };
        self.addr = addr;
        self.oidc_addr = oidc.unwrap_or_default();
        self.child = Some(child);
        Ok(ready)
    }

    /// Waits up to `limit` for the orphan scan of the start whose log begins at byte
    /// `log_before` to finish (it may run while the broker serves); its report line, which
    /// carries `orphans=N`.
    ///
    /// # Panics
    /// No such line within `limit`.
    pub fn wait_for_orphan_scan(&self, log_before: usize, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log();
            let this_start = log.get(log_before..).unwrap_or_default();
            let done = |l: &&str| {
                l.contains("orphan scan finished")
                    || (l.contains("store and hardware reconciled") && l.contains(" orphans="))
            };
            if let Some(line) = this_start.lines().find(done) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "the orphan scan did not finish within {limit:?}:\n{this_start}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, then wait.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM (graceful), then wait.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Issues a client certificate for `spiffe://test.keybroker/<path>` from the broker's
    /// CA, valid between the given times, as `pki/<who>.pem` for [`BrokerProcess::channel`].
    pub fn issue_client(
        &self,
        who: &str,
        path: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> broker::tls::devpki::IssuedCert {
        let cert = self.pki.issue_client(path, not_before, not_after).unwrap();
        cert.write_to(&self.dir.path().join("pki"), who).unwrap();
        cert
    }

    /// A client configuration for `who` (a certificate stem under `pki/`), as the CLI
    /// reads it; written beside the broker's configuration.
    pub fn client_config(&self, who: &str) -> PathBuf {
        let port = self.port();
        let path = self.dir.path().join(format!("{who}.toml"));
        std::fs::write(
            &path,
            format!(
                "endpoint = \"https://localhost:{port}\"\nca = \"pki/ca.pem\"\ncert = \"pki/{who}.pem\"\nkey = \"pki/{who}-key.pem\"\n"
            ),
        )
        .unwrap();
        path
    }

    /// The broker's listening port.
    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    pub fn pem(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join("pki").join(name)).unwrap()
    }

    /// A channel authenticated as `who` (a certificate stem under pki/).
    pub async fn channel(&self, who: &str) -> Result<Channel, String> {
        let endpoint = format!(
            "https://localhost:{}",
            self.addr.rsplit(':').next().unwrap()
        );
        broker::tls::client_channel(
            &endpoint,
            &self.pem("ca.pem"),
            &self.pem(&format!("{who}.pem")),
            &self.pem(&format!("{who}-key.pem")),
        )
        .await
        .map_err(|e| e.to_string())
    }

    pub async fn keys(&self, who: &str) -> KeyServiceClient<Channel> {
        KeyServiceClient::new(self.channel(who).await.unwrap())
    }

    /// Creates an EC P-256 signing key named `name` on the SoftHSM2 token, as the admin.
    pub async fn create_signing_key(&self, name: &str) {
        use keybroker_api::v1::{KeyAlgorithm, KeyPurpose};
        self.keys("admin")
            .await
            .create_key(create(
                name,
                KeyAlgorithm::EcP256,
                KeyPurpose::SignVerify,
                "softhsm",
            ))
            .await
            .unwrap();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `message`, with `token` presented if there is one.
pub fn maybe_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    match token {
        Some(token) => with_token(message, token),
        None => tonic::Request::new(message),
    }
}

/// `message` presenting the attestation token `token`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-keybroker-attestation", token.parse().unwrap());
    request
}

/// An encryption with the key `name`.
pub fn encrypt(name: &str) -> pb::EncryptRequest {
    pb::EncryptRequest {
        name: name.into(),
        plaintext: b"attested secret".to_vec(),
        aad: Vec::new(),
    }
}

/// Creates the AES key `vault` (tag team=vault), which the test policy lets the workload
/// use only with an attestation token whose claims carry the trusted measurement.
pub async fn vault_key(broker: &BrokerProcess) {
    let mut admin = broker.keys("admin").await;
    let mut create = create(
        "vault",
        pb::KeyAlgorithm::Aes256,
        pb::KeyPurpose::EncryptDecrypt,
        "softhsm",
    );
    create.tags = [("team".to_string(), "vault".to_string())].into();
    admin.create_key(create).await.unwrap();
}

pub fn create(
    name: &str,
    algorithm: pb::KeyAlgorithm,
    purpose: pb::KeyPurpose,
    backend: &str,
) -> pb::CreateKeyRequest {
    pb::CreateKeyRequest {
        name: name.into(),
        algorithm: algorithm as i32,
        purpose: purpose as i32,
        backend: backend.into(),
        tags: [("team".to_string(), "payments".to_string())].into(),
        releasable: false,
    }
}
