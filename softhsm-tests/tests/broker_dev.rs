//! `keybroker serve --dev` end to end: its swtpm is locked down (another local process cannot
//! clear it), the broker still uses it with the owner auth from the state directory, and a
//! second start on the same state keeps the TPM keys working.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keybroker_api::v1 as pb;
use pb::key_service_client::KeyServiceClient;

struct DevBroker {
    child: Child,
    port: u16,
}

impl DevBroker {
    fn start(state: &Path) -> DevBroker {
        let binary = common::keybroker_binary(false);
        let mut child = Command::new(binary)
            .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Ready: listening, and the attestation token keys found.
        let common::Started { addr, .. } =
            common::read_start(&mut child, true, Duration::from_secs(180))
                .unwrap_or_else(|e| panic!("development mode did not start: {e:?}"));
        let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
        DevBroker { child, port }
    }

    fn stop(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for DevBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The swtpm's TCTI, from the configuration development mode wrote.
fn tcti(state: &Path) -> String {
    let config = std::fs::read_to_string(state.join("config.toml")).unwrap();
    config
        .lines()
        .find_map(|l| l.strip_prefix("tcti = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap()
        .to_string()
}

fn tpm2(state: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("TPM2TOOLS_TCTI", tcti(state))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (install tpm2-tools)", args[0]));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

async fn admin(state: &Path, port: u16) -> KeyServiceClient<tonic::transport::Channel> {
    common::admin_client(&state.join("pki"), &port.to_string()).await
}

async fn sign_with_tpm_key(state: &Path, port: u16) {
    admin(state, port)
        .await
        .sign(pb::SignRequest {
            name: "dev-tpm".into(),
            input: Some(pb::sign_request::Input::Message(b"m".to_vec())),
            scheme: pb::SignatureScheme::Default as i32,
        })
        .await
        .unwrap();
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dev_swtpm_cannot_be_cleared_by_another_process_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let dev = DevBroker::start(&state);

    for name in ["tpm-owner-auth", "tpm-endorsement-auth", "tpm-lockout-auth"] {
        assert_eq!(mode(&state.join(name)), 0o600, "{name}");
    }
    assert_eq!(mode(&state), 0o700);
    // Through the lockout hierarchy (tpm2_clear's default) and the platform one.
    assert!(tpm2(&state, &["tpm2_clear"]).is_err());
    assert!(tpm2(&state, &["tpm2_clear", "-c", "p"]).is_err());
    assert!(tpm2(&state, &["tpm2_changeauth", "-c", "o", "mine"]).is_err());

    // The broker makes and uses TPM keys with the owner auth it was given.
    admin(&state, dev.port)
        .await
        .create_key(common::create(
            "dev-tpm",
            pb::KeyAlgorithm::EcP256,
            pb::KeyPurpose::SignVerify,
            "swtpm",
        ))
        .await
        .unwrap();
    sign_with_tpm_key(&state, dev.port).await;
    dev.stop();

    // A second start on the same state: the platform hierarchy is locked again (swtpm reset
    // it), and the key still works.
    let dev = DevBroker::start(&state);
    assert!(tpm2(&state, &["tpm2_clear", "-c", "p"]).is_err());
    sign_with_tpm_key(&state, dev.port).await;
    dev.stop();
}
