//! Faults the broker recovers from by itself, with no restart: the token's files taken
//! away and put back, and a full disk under the store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use keybroker_api::v1 as pb;
use pb::KeyAlgorithm as A;
use pb::KeyPurpose as P;
use tonic::Code;

use super::common::{BrokerProcess, create, eventually};
use super::sign_req;

/// Copies a directory tree (the token's files) as `cp -a` would.
fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success(), "cp -a {} {}", from.display(), to.display());
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn token_files_removed_and_restored_recover_without_a_restart() {
    let broker = BrokerProcess::start();
    let pid = broker.pid();
    let mut keys = broker.keys("admin").await;
    keys.create_key(create("ec", A::EcP256, P::SignVerify, "softhsm"))
        .await
        .unwrap();
    keys.create_key(create("aes", A::Aes256, P::EncryptDecrypt, "softhsm"))
        .await
        .unwrap();
    let sealed = keys
        .encrypt(pb::EncryptRequest {
            name: "aes".into(),
            plaintext: b"kept".to_vec(),
            aad: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();

    // An operator's restore drill gone wrong: the token directory is moved away...
    let tokens = broker.hsm.token_dir();
    let backup = broker.dir.path().join("token-backup");
    std::fs::create_dir(&backup).unwrap();
    for entry in entries(tokens) {
        copy_tree(&entry, &backup);
        std::fs::remove_dir_all(&entry).unwrap();
    }
    let err = keys
        .sign(sign_req("ec", b"m", pb::SignatureScheme::Default))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("HSM token is unavailable"), "{err:?}");

    // ... and put back. The broker serves again by itself.
    for entry in entries(&backup) {
        copy_tree(&entry, tokens);
    }
    let signs = eventually(Duration::from_secs(30), || {
        let mut keys = keys.clone();
        async move {
            keys.sign(sign_req("ec", b"m", pb::SignatureScheme::Default))
                .await
                .is_ok()
        }
    })
    .await;
    assert!(signs, "no recovery after the token came back: {}", broker.log());
    let opened = keys
        .decrypt(pb::DecryptRequest {
            name: "aes".into(),
            ciphertext: sealed.ciphertext,
            aad: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(opened.plaintext, b"kept");
    keys.create_key(create("after", A::EcP256, P::SignVerify, "softhsm"))
        .await
        .unwrap();
    assert_eq!(broker.pid(), pid, "the broker recovered without a restart");
}
