//! The broker as an intermediate CA: `keybroker ca csr`, a root made and run by OpenSSL,
//! `keybroker ca install`; bad chains are refused, and issued chains verify to the root.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::one_call::{challenged, request};
use super::*;
use common::{BrokerOptions, keybroker_binary};

fn run(command: &mut Command) -> Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An OpenSSL root CA in `dir`: `<name>.pem` and `<name>.key`.
fn openssl_root(dir: &Path, name: &str) {
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "30", "-subj", &format!("/CN={name}")])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.pem"))));
}

/// `csr` signed by the root `root`, with the extensions in `extensions`: the chain PEM
/// (the CA certificate, then the root) in `<out>.pem`.
fn openssl_sign(dir: &Path, root: &str, csr: &Path, extensions: &str, out: &str) -> String {
    let ext = dir.join(format!("{out}.ext"));
    std::fs::write(&ext, extensions).unwrap();
    let cert = dir.join(format!("{out}.crt"));
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "30", "-in"])
        .arg(csr)
        .arg("-CA")
        .arg(dir.join(format!("{root}.pem")))
        .arg("-CAkey")
        .arg(dir.join(format!("{root}.key")))
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&cert));
    let chain = format!(
        "{}{}",
        std::fs::read_to_string(&cert).unwrap(),
        std::fs::read_to_string(dir.join(format!("{root}.pem"))).unwrap()
    );
    let path = dir.join(format!("{out}.pem"));
    std::fs::write(&path, &chain).unwrap();
    path.display().to_string()
}

fn keybroker(broker: &BrokerProcess) -> Command {
    let mut command = Command::new(keybroker_binary(false));
    command
        .env("SOFTHSM2_CONF", broker.hsm.conf_path())
        .arg("ca");
    command
}

const CA_EXTENSIONS: &str = "basicConstraints=critical,CA:TRUE,pathlen:0\n\
                             keyUsage=critical,keyCertSign,cRLSign\n";

#[tokio::test(flavor = "multi_thread")]
async fn an_intermediate_ca_issues_only_once_a_chain_that_verifies_is_installed() {
    let broker = BrokerProcess::start_with(BrokerOptions {
        ca_lines: "mode = \"intermediate\"",
        ..BrokerOptions::default()
    });
    let config = broker.dir.path().join("config.toml");
    let key = EphemeralKey::generate().unwrap();
    let token = attest_key(&broker, "workload", &key).await;
    let err = issue(
        &broker,
        "workload",
        key.csr_der(WORKLOAD).unwrap(),
        Some(&token),
        60,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("keybroker ca csr"), "{err:?}");
    // So is `Attest` with a CSR, before it spends its challenge.
    let (mut att, nonce) = challenged(&broker).await;
    let csr = key.csr_der(WORKLOAD).unwrap();
    let err = att
        .attest(request(&nonce, &key, TRUSTED_MEASUREMENT, csr))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let attested = att
        .attest(request(&nonce, &key, TRUSTED_MEASUREMENT, Vec::new()))
        .await
        .unwrap()
        .into_inner();
    assert!(attested.certificate.is_none());

    let dir = tempfile::tempdir().unwrap();
    let csr = dir.path().join("ca.csr");
    run(keybroker(&broker)
        .arg("csr")
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&csr));
    openssl_root(dir.path(), "root");
    openssl_root(dir.path(), "other-root");

    // Refused: a chain that stops at the CA, a chain to another root, a certificate
    // that is no CA.
    let install = |chain: &Path| {
        keybroker(&broker)
            .arg("install")
            .arg("--config")
            .arg(&config)
            .arg("--chain")
            .arg(chain)
            .output()
            .unwrap()
    };
    let good = openssl_sign(dir.path(), "root", &csr, CA_EXTENSIONS, "good");
    let ca_only = dir.path().join("ca-only.pem");
    std::fs::copy(dir.path().join("good.crt"), &ca_only).unwrap();
    let out = install(&ca_only);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("up to the root"),
        "{out:?}"
    );
    let mixed = dir.path().join("mixed.pem");
    std::fs::write(
        &mixed,
        format!(
            "{}{}",
            std::fs::read_to_string(dir.path().join("good.crt")).unwrap(),
            std::fs::read_to_string(dir.path().join("other-root.pem")).unwrap()
        ),
    )
    .unwrap();
    let out = install(&mixed);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not verify"),
        "{out:?}"
    );
    let leaf_only = openssl_sign(
        dir.path(),
        "root",
        &csr,
        "basicConstraints=critical,CA:FALSE\n",
        "not-a-ca",
    );
    let out = install(Path::new(&leaf_only));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a CA"),
        "{out:?}"
    );

    let out = install(Path::new(&good));
    assert!(out.status.success(), "{out:?}");

    // The running broker picks the version up (it looks again within 10 s).
    let deadline = Instant::now() + Duration::from_secs(45);
    let issued = loop {
        match issue(
            &broker,
            "workload",
            key.csr_der(WORKLOAD).unwrap(),
            Some(&token),
            120,
        )
        .await
        {
            Ok(issued) => break issued,
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("the installed CA was not picked up: {e:?}"),
        }
    };
    // The chain carries the broker's CA; the bundle is the root.
    assert_eq!(issued.chain_der.len(), 2);
    let root_pem = std::fs::read(dir.path().join("root.pem")).unwrap();
    let (_, root_der) = der::pem::decode_vec(&root_pem).unwrap();
    assert_eq!(issued.trust_bundle_der, [root_der]);
    let leaf = dir.path().join("leaf.pem");
    std::fs::write(&leaf, pem("CERTIFICATE", &issued.chain_der[0])).unwrap();
    let untrusted = dir.path().join("intermediate.pem");
    std::fs::write(&untrusted, pem("CERTIFICATE", &issued.chain_der[1])).unwrap();
    run(Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(dir.path().join("root.pem"))
        .arg("-untrusted")
        .arg(&untrusted)
        .arg(&leaf));
    // And the broker's own mTLS accepts the chain.
    install_identity(&broker, "attested", &issued.chain_der, &key);
    identity(&broker, "attested")
        .await
        .get_trust_bundle(pb::GetTrustBundleRequest {})
        .await
        .unwrap();
}
