//! Ciphertexts made before the sealed-data format still decrypt: a token, a store and an
//! `Encrypt` ciphertext (the protobuf `Ciphertext` envelope) saved by the broker as it was
//! before `KBSE` (`tests/fixtures/pre-kbse/`), opened by the broker of today.

use std::path::{Path, PathBuf};

use super::*;

const PLAINTEXT: &[u8] = b"a ciphertext saved before the sealed-data format";
const AAD: &[u8] = b"legacy-aad";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pre-kbse")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Replaces `dir`'s content with `from`'s.
fn replace_dir(dir: &Path, from: &Path) {
    std::fs::remove_dir_all(dir).unwrap();
    copy_dir(from, dir);
}

/// The store files of a broker's state directory.
const STORE_FILES: [&str; 1] = ["keybroker.db"];

#[tokio::test(flavor = "multi_thread")]
async fn a_ciphertext_saved_before_the_sealed_format_still_decrypts() {
    let mut broker = BrokerProcess::start();
    broker.stop();
    replace_dir(broker.hsm.token_dir(), &fixture().join("tokens"));
    let state = broker.dir.path().join("state");
    for f in ["keybroker.db-wal", "keybroker.db-shm"] {
        let _ = std::fs::remove_file(state.join(f));
    }
    for f in STORE_FILES {
        std::fs::copy(fixture().join(f), state.join(f)).unwrap();
        // A checkout does not keep the owner-only mode the broker gives its store.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(state.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    broker.spawn();
    let mut keys = admin(&broker).await;
    let ciphertext = std::fs::read(fixture().join("ciphertext.bin")).unwrap();
    assert!(!ciphertext.starts_with(b"KBSE"));
    let opened = keys
        .decrypt(pb::DecryptRequest {
            name: "legacy".into(),
            ciphertext,
            aad: AAD.to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (opened.plaintext.as_slice(), opened.key_version),
        (PLAINTEXT, 1)
    );
}

/// Made the fixture, once, with the broker before the sealed-data format; kept to say how.
/// It refuses to run on a broker whose `Encrypt` writes `KBSE`: the fixture must stay the
/// old format. `SAVE_PRE_KBSE=1 cargo nextest run -p softhsm-tests --test broker_sealing
/// --run-ignored ignored-only legacy::save`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "made the fixture once, before the sealed-data format"]
async fn save_the_pre_kbse_fixture() {
    assert_eq!(std::env::var("SAVE_PRE_KBSE").as_deref(), Ok("1"));
    let mut broker = BrokerProcess::start();
    let mut keys = admin(&broker).await;
    keys.create_key(create(
        "legacy",
        pb::KeyAlgorithm::Aes256,
        pb::KeyPurpose::EncryptDecrypt,
        "softhsm",
    ))
    .await
    .unwrap();
    let ciphertext = keys
        .encrypt(pb::EncryptRequest {
            name: "legacy".into(),
            plaintext: PLAINTEXT.to_vec(),
            aad: AAD.to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    assert!(
        !ciphertext.starts_with(b"KBSE"),
        "this broker writes KBSE already"
    );
    broker.stop();
    let out = fixture();
    let _ = std::fs::remove_dir_all(&out);
    copy_dir(broker.hsm.token_dir(), &out.join("tokens"));
    // The broker checkpoints its WAL when it stops; copy whatever is left too.
    let state = broker.dir.path().join("state");
    for f in STORE_FILES {
        std::fs::copy(state.join(f), out.join(f)).unwrap();
    }
    assert!(
        !state.join("keybroker.db-wal").exists()
            || std::fs::metadata(state.join("keybroker.db-wal"))
                .unwrap()
                .len()
                == 0,
        "the WAL was not checkpointed"
    );
    std::fs::write(out.join("ciphertext.bin"), ciphertext).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn encrypt_writes_the_sealed_format_bound_to_its_aad() {
    let broker = BrokerProcess::start();
    let mut keys = admin(&broker).await;
    keys.create_key(create(
        "notes",
        pb::KeyAlgorithm::Aes256,
        pb::KeyPurpose::EncryptDecrypt,
        "softhsm",
    ))
    .await
    .unwrap();
    let encrypt = |plaintext: &[u8]| pb::EncryptRequest {
        name: "notes".into(),
        plaintext: plaintext.to_vec(),
        aad: AAD.to_vec(),
    };
    let made = keys.encrypt(encrypt(PLAINTEXT)).await.unwrap().into_inner();
    let (header, _) = sealed_format::Header::parse(&made.ciphertext).unwrap();
    assert_eq!(header.kek(), sealed_format::KekKind::HsmAesGcm);
    assert_eq!((header.key_name(), header.key_version()), ("notes", 1));
    let decrypt = |ciphertext: &[u8], aad: &[u8]| pb::DecryptRequest {
        name: "notes".into(),
        ciphertext: ciphertext.to_vec(),
        aad: aad.to_vec(),
    };
    let opened = keys.decrypt(decrypt(&made.ciphertext, AAD)).await.unwrap();
    assert_eq!(opened.get_ref().plaintext, PLAINTEXT);
    // Another aad: the data key does not open in the HSM.
    let err = keys
        .decrypt(decrypt(&made.ciphertext, b"other"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("associated data"), "{err:?}");
    // A flipped payload bit: the chunk does not authenticate.
    let mut flipped = made.ciphertext.clone();
    *flipped.last_mut().unwrap() ^= 1;
    let err = keys.decrypt(decrypt(&flipped, AAD)).await.unwrap_err();
    assert!(
        err.message()
            .contains("chunk 0, the final one, failed authentication"),
        "{err:?}"
    );
    // An empty plaintext, and one as large as the fixture's 64 KiB messages allow.
    for len in [0, 60 * 1024] {
        let p = data(len);
        let made = keys.encrypt(encrypt(&p)).await.unwrap().into_inner();
        let opened = keys.decrypt(decrypt(&made.ciphertext, AAD)).await.unwrap();
        assert_eq!(opened.get_ref().plaintext, p);
    }
}
