//! The CA key in a real SoftHSM2 token signs a self-signed CA certificate and short-lived
//! workload certificates from CSRs; OpenSSL, an outside tool, checks them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use broker::ca::certificate::{
    CaError, CaProfile, HsmSigner, VerifiedCsr, WorkloadProfile, issue, self_signed,
};
use broker::identity::SpiffeId;
use hsm_backend::{
    EcCurve, HsmBackend, KeyAlgorithm, KeyId, KeyLabel, KeySpec, KeyUsage, Pin, Pkcs11Module,
    PoolConfig, TokenSelector, provision,
};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use secrecy::SecretString;
use softhsm_tests::SoftHsm;

const WORKLOAD: &str = "spiffe://test.keybroker/workload";

struct Ca {
    backend: HsmBackend,
    id: KeyId,
    certificate: Vec<u8>,
    dir: tempfile::TempDir,
    _softhsm: SoftHsm,
}

fn ca() -> Ca {
    let softhsm = SoftHsm::new();
    let module = Pkcs11Module::load(softhsm.module_path()).unwrap();
    let pin = |s: &str| Pin::new(SecretString::from(s)).unwrap();
    let selector = TokenSelector::Label("ca".into());
    provision::init_token(&module, "ca", &pin("ca-so")).unwrap();
    provision::init_user_pin(&module, &selector, &pin("ca-so"), &pin("ca-user")).unwrap();
    let backend =
        HsmBackend::open_with(module, &selector, pin("ca-user"), PoolConfig::default()).unwrap();
    let id = KeyId::new(b"kbsys:ca:1".to_vec()).unwrap();
    let spec = KeySpec::new(KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::SignVerify).unwrap();
    backend
        .generate_key(&id, &KeyLabel::new("kbsys:ca:v1:0").unwrap(), spec)
        .unwrap();
    let now = SystemTime::now();
    let profile = CaProfile {
        common_name: "Keybroker test CA".into(),
        not_before: now - Duration::from_secs(60),
        not_after: now + Duration::from_secs(3600),
    };
    let certificate =
        self_signed(&HsmSigner::new(&backend, id.clone()).unwrap(), &profile).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_pem(&dir.path().join("ca.pem"), &certificate);
    Ca {
        backend,
        id,
        certificate,
        dir,
        _softhsm: softhsm,
    }
}

impl Ca {
    fn issue(&self, csr: &[u8], who: &str, ttl: Duration) -> Result<Vec<u8>, CaError> {
        let signer = HsmSigner::new(&self.backend, self.id.clone()).unwrap();
        let spiffe_id = SpiffeId::parse(who).unwrap();
        let profile = WorkloadProfile {
            spiffe_id: &spiffe_id,
            ttl,
            now: SystemTime::now(),
            claims: None,
        };
        let csr = VerifiedCsr::parse(csr, &spiffe_id)?;
        issue(&signer, &self.certificate, &csr, &profile)
    }

    /// `openssl verify` of a certificate against the CA certificate: its output.
    fn openssl_verify(&self, certificate: &[u8]) -> (bool, String) {
        let leaf = self.dir.path().join("leaf.pem");
        write_pem(&leaf, certificate);
        let out = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(self.dir.path().join("ca.pem"))
            .arg(&leaf)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

fn write_pem(path: &Path, der: &[u8]) {
    let pem = pem_encode(der);
    std::fs::write(path, pem).unwrap();
}

fn pem_encode(der: &[u8]) -> String {
    use base64ct::{Base64, Encoding};
    let body = Base64::encode_string(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// A workload's CSR for a fresh key, asking for `names` as URI SANs.
fn csr(names: &[&str]) -> (KeyPair, Vec<u8>) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = names
        .iter()
        .map(|n| SanType::URI((*n).try_into().unwrap()))
        .collect();
    let der = params.serialize_request(&key).unwrap().der().to_vec();
    (key, der)
}

fn openssl_text(certificate: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.pem");
    write_pem(&path, certificate);
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_issued_certificate_verifies_with_openssl_and_names_only_the_caller() {
    let ca = ca();
    let (_key, request) = csr(&[WORKLOAD]);
    let leaf = ca
        .issue(&request, WORKLOAD, Duration::from_secs(300))
        .unwrap();
    let (ok, verdict) = ca.openssl_verify(&leaf);
    assert!(ok, "{verdict}");
    let text = openssl_text(&leaf);
    assert!(text.contains(&format!("URI:{WORKLOAD}")), "{text}");
    assert!(text.contains("Digital Signature"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    let ca_text = openssl_text(&ca.certificate);
    assert!(ca_text.contains("CA:TRUE, pathlen:0"), "{ca_text}");
    assert!(ca_text.contains("Certificate Sign"), "{ca_text}");
}

#[test]
fn a_certificate_expires_with_its_ttl() {
    let ca = ca();
    let (_key, request) = csr(&[]);
    let leaf = ca
        .issue(&request, WORKLOAD, Duration::from_secs(1))
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let (ok, verdict) = ca.openssl_verify(&leaf);
    assert!(!ok, "{verdict}");
    assert!(verdict.contains("expired"), "{verdict}");
}

#[test]
fn csrs_for_another_name_or_with_a_broken_signature_are_refused() {
    let ca = ca();
    let (_key, other) = csr(&["spiffe://test.keybroker/admin"]);
    let err = ca
        .issue(&other, WORKLOAD, Duration::from_secs(300))
        .unwrap_err();
    assert!(matches!(err, CaError::BadRequest(_)), "{err}");
    assert!(err.to_string().contains("admin"), "{err}");

    // The CSR's signature is its proof that the requester holds the key: one flipped
    // bit in it (the last byte of the DER is inside the signature) and it is refused.
    let (_key, mut tampered) = csr(&[WORKLOAD]);
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let err = ca
        .issue(&tampered, WORKLOAD, Duration::from_secs(300))
        .unwrap_err();
    assert!(matches!(err, CaError::BadRequest(_)), "{err}");

    for garbage in [
        &b""[..],
        &[0x30, 0x03, 0x02, 0x01, 0x00][..],
        &[0u8; 9000][..],
    ] {
        let err = ca
            .issue(garbage, WORKLOAD, Duration::from_secs(300))
            .unwrap_err();
        assert!(matches!(err, CaError::BadRequest(_)), "{err}");
    }
    let (_key, request) = csr(&[WORKLOAD]);
    for ttl in [Duration::ZERO, Duration::from_secs(2 * 24 * 3600)] {
        let err = ca.issue(&request, WORKLOAD, ttl).unwrap_err();
        assert!(matches!(err, CaError::BadRequest(_)), "{err}");
    }
}
