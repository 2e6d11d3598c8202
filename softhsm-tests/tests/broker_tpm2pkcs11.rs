//! End to end on a second PKCS#11 module: the real `keybroker` process with one `[[hsm]]`
//! on tpm2-pkcs11 (swtpm behind tpm2-abrmd, `softhsm_tests::Tpm2Pkcs11`), called over mTLS.
//!
//! What the module offers works (EC P-256/P-384, RSA-PSS, rotation, restart); what it lacks
//! (AES-GCM, AES key wrap, RSA-4096, PKCS#1 v1.5 over a digest) is refused with
//! `UNIMPLEMENTED` naming the mechanism, and nothing is created. tpm2-pkcs11 reads its
//! settings from the environment at `C_Initialize`, so each test runs its own broker with
//! the fixture's variables. No `[attestation]`: the broker makes no token-signing key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use broker::tls::devpki::DevPki;
use common::{POLICY, TRUST_DOMAIN, create, keybroker_binary};
use keybroker_api::v1 as pb;
use pb::KeyAlgorithm as A;
use pb::KeyPurpose as P;
use pb::SignatureScheme as S;
use pb::key_service_client::KeyServiceClient;
use softhsm_tests::Tpm2Pkcs11;
use tonic::Code;
use tonic::transport::Channel;

const BACKEND: &str = "tpm2pkcs11";

/// A broker whose only backend is the fixture's tpm2-pkcs11 token.
struct Tpm2Broker {
    child: Option<Child>,
    addr: String,
    dir: tempfile::TempDir,
    token: Tpm2Pkcs11,
}

impl Tpm2Broker {
    fn start() -> Tpm2Broker {
        let token = Tpm2Pkcs11::start();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("user-pin"), Tpm2Pkcs11::USER_PIN).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("user-pin"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let pki = DevPki::generate(TRUST_DOMAIN, &["localhost".to_string()]).unwrap();
        pki.write_to(&d.join("pki")).unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        pki.issue_client("/admin", now - day, now + day)
            .unwrap()
            .write_to(&d.join("pki"), "admin")
            .unwrap();
        std::fs::write(d.join("policy.cedar"), POLICY).unwrap();
        let config = format!(
            r#"[server]
listen = "127.0.0.1:0"
cert = "pki/server.pem"
key = "pki/server-key.pem"
client_ca = ["pki/ca.pem"]

[store]
path = "state/keybroker.db"

[policy]
files = ["policy.cedar"]

[keys]
default_backend = "{BACKEND}"

[[hsm]]
name = "{BACKEND}"
module = "{}"
token_label = "{}"
user_pin_file = "user-pin"
sessions = 2
"#,
            token.module_path().display(),
            Tpm2Pkcs11::TOKEN_LABEL,
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let mut broker = Tpm2Broker {
            child: None,
            addr: String::new(),
            dir,
            token,
        };
        broker.spawn();
        broker
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// Starts `keybroker serve` with the token's environment; waits for "ready".
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("broker.log"))
            .unwrap();
        let mut child = Command::new(keybroker_binary(false))
            .args(["serve", "--config"])
            .arg(self.dir.path().join("config.toml"))
            .envs(self.token.env())
            .env("KEYBROKER_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let common::Started { addr, .. } =
            common::read_start(&mut child, true, Duration::from_secs(180))
                .unwrap_or_else(|e| panic!("keybroker did not start: {e:?}\n{}", self.log()));
        self.addr = addr;
        self.child = Some(child);
    }

    /// SIGTERM, wait, and start again on the same token and store.
    fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            common::terminate(&mut child);
        }
        self.spawn();
    }

    async fn keys(&self) -> KeyServiceClient<Channel> {
        let port = self.addr.rsplit(':').next().unwrap();
        common::admin_client(&self.dir.path().join("pki"), port).await
    }

    /// The private key objects pkcs11-tool lists: `(label, access line)`.
    fn private_keys(&self) -> Vec<(String, String)> {
        let listing = self
            .token
            .pkcs11_tool(&["--list-objects", "--type", "privkey"]);
        let mut keys = Vec::new();
        let mut label = None;
        for line in listing.lines().map(str::trim) {
            if let Some(l) = line.strip_prefix("label:") {
                label = Some(l.trim().to_string());
            }
            if let Some(access) = line.strip_prefix("Access:") {
                keys.push((label.take().unwrap_or_default(), access.trim().to_string()));
            }
        }
        keys
    }
}

impl Drop for Tpm2Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn sign_req(name: &str, message: &[u8], scheme: S) -> pb::SignRequest {
    pb::SignRequest {
        name: name.into(),
        input: Some(pb::sign_request::Input::Message(message.to_vec())),
        scheme: scheme as i32,
    }
}

async fn sign(keys: &mut KeyServiceClient<Channel>, name: &str, scheme: S) -> pb::SignResponse {
    keys.sign(sign_req(name, b"hello", scheme))
        .await
        .unwrap_or_else(|e| panic!("sign {name}: {e}"))
        .into_inner()
}

async fn spki(keys: &mut KeyServiceClient<Channel>, name: &str, version: u32) -> Vec<u8> {
    keys.get_public_key(pb::GetPublicKeyRequest {
        name: name.into(),
        version,
    })
    .await
    .unwrap()
    .into_inner()
    .spki_der
}

/// Checks a signature over "hello" with the public key, outside the broker.
fn verify_outside(alg: A, spki_der: &[u8], signature: &[u8]) {
    use p256::pkcs8::DecodePublicKey;
    match alg {
        A::EcP256 => {
            use p256::ecdsa::signature::Verifier;
            let vk = p256::ecdsa::VerifyingKey::from_public_key_der(spki_der).unwrap();
            let sig = p256::ecdsa::Signature::from_der(signature).unwrap();
            vk.verify(b"hello", &sig).unwrap();
        }
        A::EcP384 => {
            use p384::ecdsa::signature::Verifier;
            let vk = p384::ecdsa::VerifyingKey::from_public_key_der(spki_der).unwrap();
            let sig = p384::ecdsa::Signature::from_der(signature).unwrap();
            vk.verify(b"hello", &sig).unwrap();
        }
        _ => {
            use sha2::Digest as _;
            let public = rsa::RsaPublicKey::from_public_key_der(spki_der).unwrap();
            let digest = sha2::Sha256::digest(b"hello");
            public
                .verify(rsa::Pss::new::<sha2::Sha256>(), &digest, signature)
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ec_and_rsa_pss_keys_sign_rotate_and_survive_a_restart() {
    let mut broker = Tpm2Broker::start();
    let mut keys = broker.keys().await;
    let cases = [
        ("ec256", A::EcP256, S::Default),
        ("ec384", A::EcP384, S::Ecdsa),
        ("rsa2048", A::Rsa2048, S::RsaPss),
        ("rsa3072", A::Rsa3072, S::RsaPss),
    ];
    let mut old_signatures = Vec::new();
    for (name, alg, scheme) in cases {
        let key = keys
            .create_key(create(name, alg, P::SignVerify, BACKEND))
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"))
            .into_inner();
        assert_eq!((key.backend.as_str(), key.primary_version), (BACKEND, 1));
        let signed = sign(&mut keys, name, scheme).await;
        verify_outside(alg, &spki(&mut keys, name, 1).await, &signed.signature);
        let rotated = keys
            .rotate_key(pb::KeyRef { name: name.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rotated.primary_version, 2, "{name}");
        old_signatures.push((name, alg, scheme, signed.signature));
    }

    broker.restart();
    let mut keys = broker.keys().await;
    for (name, alg, scheme, v1_signature) in old_signatures {
        // The new version signs; the old one still verifies, in the broker and outside.
        let signed = sign(&mut keys, name, scheme).await;
        assert_eq!(signed.key_version, 2, "{name}");
        verify_outside(alg, &spki(&mut keys, name, 2).await, &signed.signature);
        let v1 = keys
            .verify(pb::VerifyRequest {
                name: name.into(),
                key_version: 1,
                input: Some(pb::verify_request::Input::Message(b"hello".to_vec())),
                signature: v1_signature.clone(),
                scheme: scheme as i32,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(v1.valid, "{name} v1 after restart");
        verify_outside(alg, &spki(&mut keys, name, 1).await, &v1_signature);
    }
    // No [attestation]: no token-signing key (kbsys:...) was made on the module.
    let labels: Vec<String> = broker.private_keys().into_iter().map(|(l, _)| l).collect();
    assert!(labels.iter().all(|l| l.starts_with("kb:")), "{labels:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn what_the_module_lacks_is_refused_at_creation_and_nothing_is_made() {
    let broker = Tpm2Broker::start();
    let mut keys = broker.keys().await;
    let refused = [
        ("aes-enc", A::Aes256, P::EncryptDecrypt, "CKM_AES_GCM"),
        (
            "rsa4096",
            A::Rsa4096,
            P::SignVerify,
            "CKM_RSA_PKCS_KEY_PAIR_GEN",
        ),
    ];
    for (name, alg, purpose, mechanism) in refused {
        let status = keys
            .create_key(create(name, alg, purpose, BACKEND))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{name}: {status:?}");
        assert!(status.message().contains(mechanism), "{name}: {status:?}");
        let listed = keys
            .get_key(pb::KeyRef { name: name.into() })
            .await
            .unwrap_err();
        assert_eq!(listed.code(), Code::NotFound, "{name}");
    }
    // RSA PKCS#1 v1.5 over a digest: the key is made (PSS works), that scheme is refused.
    keys.create_key(create("rsa", A::Rsa2048, P::SignVerify, BACKEND))
        .await
        .unwrap();
    let status = keys
        .sign(sign_req("rsa", b"hello", S::RsaPkcs1V15))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert!(
        status.message().contains("CKM_RSA_PKCS") && status.message().contains("RSA-PSS"),
        "{status:?}"
    );
    let labels: Vec<String> = broker.private_keys().into_iter().map(|(l, _)| l).collect();
    assert_eq!(labels, ["kb:rsa:v1"], "only the RSA key is on the token");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_private_key_is_sensitive_and_never_extractable_in_pkcs11_tool() {
    let broker = Tpm2Broker::start();
    let mut keys = broker.keys().await;
    for (name, alg) in [("a", A::EcP256), ("b", A::EcP384), ("c", A::Rsa2048)] {
        keys.create_key(create(name, alg, P::SignVerify, BACKEND))
            .await
            .unwrap();
    }
    keys.create_key(create("d", A::Rsa2048, P::EncryptDecrypt, BACKEND))
        .await
        .unwrap();
    keys.rotate_key(pb::KeyRef { name: "a".into() })
        .await
        .unwrap();
    let private = broker.private_keys();
    let mut labels: Vec<&str> = private.iter().map(|(l, _)| l.as_str()).collect();
    labels.sort_unstable();
    assert_eq!(
        labels,
        ["kb:a:v1", "kb:a:v2", "kb:b:v1", "kb:c:v1", "kb:d:v1"]
    );
    for (label, access) in &private {
        for flag in [
            "sensitive",
            "always sensitive",
            "never extractable",
            "local",
        ] {
            assert!(access.contains(flag), "{label}: {access}");
        }
        assert!(
            access.split(',').all(|f| f.trim() != "extractable"),
            "{label}: {access}"
        );
    }
    // The encryption key encrypts and decrypts: its usage was read from its private half.
    let sealed = keys
        .encrypt(pb::EncryptRequest {
            name: "d".into(),
            plaintext: b"data key".to_vec(),
            aad: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let opened = keys
        .decrypt(pb::DecryptRequest {
            name: "d".into(),
            ciphertext: sealed.ciphertext,
            aad: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(opened.plaintext, b"data key");
}
