//! `keybroker serve --dev` enrols the attestation key of its host TPM, and a development
//! workload can quote with it using only what the state directory holds, as
//! docs/attestation.md describes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tpm_backend::TpmBlob;

use super::*;

/// A development-mode broker; stopped with SIGTERM (which stops its swtpms too) on drop.
struct DevBroker {
    child: Child,
    state: PathBuf,
    port: u16,
}

impl DevBroker {
    fn start(state: &Path) -> DevBroker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(common::keybroker_binary(false))
            .args(["serve", "--dev", "--state-dir"])
            .arg(state)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Ready: listening, and the attestation token keys found.
        let listening =
            common::read_start(&mut child, true, std::time::Duration::from_secs(180)).is_ok();
        let dev = DevBroker {
            child,
            state: state.to_path_buf(),
            port,
        };
        assert!(
            listening,
            "the development broker exited before it was ready"
        );
        dev
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.state.join(name)).unwrap()
    }

    async fn attestation(&self, who: &str) -> AttestationServiceClient<Channel> {
        let pki = |f: String| self.read(&format!("pki/{f}"));
        let channel = broker::tls::client_channel(
            &format!("https://localhost:{}", self.port),
            &pki("ca.pem".into()),
            &pki(format!("{who}.pem")),
            &pki(format!("{who}-key.pem")),
        )
        .await
        .unwrap();
        AttestationServiceClient::new(channel)
    }
}

impl Drop for DevBroker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_mode_enrols_its_host_tpm_ak_and_a_dev_workload_quotes_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let dev = DevBroker::start(&dir.path().join("broker"));
    let policy = String::from_utf8(dev.read("attestation.toml")).unwrap();
    assert!(policy.contains("[[tpm.attestation_keys]]"), "{policy}");

    // What docs/attestation.md tells a development workload to use.
    let tcti = String::from_utf8(dev.read("host-tpm.tcti")).unwrap();
    let ak = TpmBlob::from_bytes(&dev.read("tpm-ak.blob")).unwrap();
    assert_eq!(ak.public_key_der().unwrap(), dev.read("tpm-ak.spki.der"));
    let host = TpmBackend::connect(TpmConfig::new(Tcti::new(&tcti).unwrap())).unwrap();

    let mut att = dev.attestation("workload").await;
    let spki = key_spki(&dev.read("pki/workload-key.pem"));
    let nonce = challenge(&mut att).await;
    let quote = host
        .quote(
            &ak,
            &tpm_extra_data(&nonce, &spki),
            &PcrSelection::sha256(&[16]).unwrap(),
        )
        .wait()
        .unwrap();
    let evidence = pb::TpmEvidence {
        pcr_indices: vec![16],
        pcr_values: quote.pcr_values.iter().map(|v| v.to_vec()).collect(),
        attest: quote.attest,
        signature: quote.signature,
        ak_spki_der: ak.public_key_der().unwrap(),
    };
    let answer = att
        .attest(tpm::tpm_request(&nonce, &spki, evidence))
        .await
        .unwrap()
        .into_inner();
    let claims: serde_json::Value = serde_json::from_str(&answer.claims_json).unwrap();
    assert_eq!(claims["tee"], "tpm");
    assert_eq!(claims["attestation_key"], "dev-host-tpm");
}
