//! `keybroker-agent`, the workload side, against the real broker: with development
//! evidence it keeps a directory of credentials fresh; with a swtpm it attests by quote.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use common::{agent_binary, appraisal_policy_enrolling};
use softhsm_tests::Swtpm;

/// `keybroker-agent` with the bootstrap identity `workload` of `broker`.
fn agent(broker: &BrokerProcess) -> Command {
    common::workload::agent_command(broker)
}

/// Waits for `keybroker-agent: wrote <dir>` on the agent's stderr.
fn wait_written(child: &mut Child, limit: Duration) -> Vec<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let done = line.starts_with("keybroker-agent: wrote ");
        seen.push(line);
        if done {
            return seen;
        }
    }
    panic!("the agent wrote nothing; it said: {seen:?}");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_run_keeps_a_certificate_and_tokens_that_work_only_on_the_new_connection() {
    let broker = BrokerProcess::start();
    vault_key(&broker).await;
    let out = tempfile::tempdir().unwrap();
    let mut child = agent(&broker)
        .args([
            "--evidence",
            "dev",
            "--dev-measurement",
            TRUSTED_MEASUREMENT,
        ])
        .args(["--ttl-seconds", "600", "run", "--audience", "db", "--dir"])
        .arg(out.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_written(&mut child, Duration::from_secs(60));
    let dir = out.path();
    for (file, expected) in [
        ("svid.pem", 0o644),
        ("bundle.pem", 0o644),
        ("svid_key.pem", 0o600),
        ("token", 0o600),
        ("jwt_db.token", 0o600),
    ] {
        assert_eq!(mode(&dir.join(file)), expected, "{file}");
    }
    // The agent's files are an mTLS identity the broker accepts.
    let pki = broker.dir.path().join("pki");
    std::fs::copy(dir.join("svid.pem"), pki.join("agent.pem")).unwrap();
    std::fs::copy(dir.join("svid_key.pem"), pki.join("agent-key.pem")).unwrap();
    let token = std::fs::read_to_string(dir.join("token")).unwrap();
    broker
        .keys("agent")
        .await
        .encrypt(with_token(encrypt("vault"), token.trim()))
        .await
        .unwrap();
    let err = broker
        .keys("workload")
        .await
        .encrypt(with_token(encrypt("vault"), token.trim()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    // And the certificate verifies against the bundle it wrote.
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(dir.join("bundle.pem"))
        .arg(dir.join("svid.pem"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");

    // A graceful stop.
    common::terminate(&mut child);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tpm_quote_workload_on_swtpm_attests_and_gets_a_certificate() {
    // The workload's own TPM, and an AK the agent makes in it; the operator enrols the
    // AK's public key in the appraisal policy before the broker starts.
    let workload_tpm = Swtpm::start();
    let state = tempfile::tempdir().unwrap();
    let ak = state.path().join("ak.blob");
    let made = Command::new(agent_binary())
        .args(["tpm-create-ak", "--tpm-tcti", &workload_tpm.tcti(), "--out"])
        .arg(&ak)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let ak_pem = String::from_utf8(made.stdout).unwrap();
    let (_, ak_der) = der::pem::decode_vec(ak_pem.as_bytes()).unwrap();
    let broker = BrokerProcess::start_attesting(
        common::BrokerOptions::default(),
        &appraisal_policy_enrolling("workload-host", &ak_der),
        "",
    );
    let out = state.path().join("credentials");
    let got = agent(&broker)
        .args([
            "--evidence",
            "tpm",
            "--tpm-tcti",
            &workload_tpm.tcti(),
            "--tpm-ak",
        ])
        .arg(&ak)
        .args(["--pcrs", "16", "get-cert", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(got.status.success(), "{got:?}");
    let chain = std::fs::read(out.join("svid.pem")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&chain).unwrap();
    let cert = pem.parse_x509().unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        format!("{:?}", san.value.general_names),
        format!("[URI({WORKLOAD:?})]")
    );

    // A quote with a PCR outside the policy (PCR 16 extended) is refused, precisely.
    let extended = Command::new("tpm2_pcrextend")
        .env("TPM2TOOLS_TCTI", workload_tpm.tcti())
        .arg(format!("16:sha256={}", "ab".repeat(32)))
        .output()
        .unwrap();
    assert!(extended.status.success(), "{extended:?}");
    let refused = agent(&broker)
        .args([
            "--evidence",
            "tpm",
            "--tpm-tcti",
            &workload_tpm.tcti(),
            "--tpm-ak",
        ])
        .arg(&ak)
        .args(["--pcrs", "16", "attest"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("PermissionDenied") && said.contains("PCR 16"),
        "{said}"
    );
}
