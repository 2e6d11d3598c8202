//! Releasable keys (docs/releasable-keys.md): an AES-256 key of the class `releasable`,
//! wrapped inside the token to the attested workload's key, unwrapped by the agent and
//! used at the workload; what it encrypts there, the broker's `Decrypt` opens. No other
//! key can take the path, and the token itself says so.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use keybroker_api::v1::key_service_client::KeyServiceClient;
use prost::Message;

use super::*;

async fn keys(broker: &BrokerProcess, who: &str) -> KeyServiceClient<Channel> {
    KeyServiceClient::new(broker.channel(who).await.unwrap())
}

/// Creates an AES-256 encryption key as the admin.
async fn create(
    broker: &BrokerProcess,
    name: &str,
    releasable: bool,
    team: &str,
) -> Result<pb::Key, tonic::Status> {
    Ok(keys(broker, "admin")
        .await
        .create_key(pb::CreateKeyRequest {
            name: name.into(),
            algorithm: pb::KeyAlgorithm::Aes256 as i32,
            purpose: pb::KeyPurpose::EncryptDecrypt as i32,
            backend: String::new(),
            tags: [("team".to_string(), team.to_string())].into(),
            releasable,
        })
        .await?
        .into_inner())
}

async fn release(
    broker: &BrokerProcess,
    who: &str,
    token: Option<&str>,
    name: &str,
) -> Result<pb::ReleasedKey, tonic::Status> {
    let message = pb::ReleaseKeyRequest {
        name: name.into(),
        version: 0,
    };
    let request = maybe_token(message, token);
    Ok(keys(broker, who)
        .await
        .release_key(request)
        .await?
        .into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_releasable_key_reaches_the_attested_workload_and_the_broker_decrypts_what_it_encrypts() {
    let broker = BrokerProcess::start();
    let key = create(&broker, "disk-key", true, "vault").await.unwrap();
    assert!(key.releasable);
    let workload = attest_workload(&broker, "holder", TRUSTED_MEASUREMENT, true).await;
    let answer = release(&broker, "holder", Some(&workload.token), "disk-key")
        .await
        .unwrap();
    assert_eq!(answer.kdf, "ecdh-p256-x");
    let released =
        enclave::client::open_released_key(&workload.key, "disk-key", 0, answer).unwrap();
    assert_eq!(released.version, 1);

    // The workload encrypts with it locally, in the broker's envelope format...
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(released.key.as_slice()).unwrap();
    let nonce = [7u8; 12];
    let data = cipher
        .encrypt(
            (&nonce).into(),
            Payload {
                msg: b"sealed inside the TEE",
                aad: b"volume-1",
            },
        )
        .unwrap();
    let envelope = pb::Ciphertext {
        key: "disk-key".into(),
        version: 1,
        iv: nonce.to_vec(),
        data,
    }
    .encode_to_vec();
    // ...and the broker's Decrypt of the same key in the HSM opens it.
    let opened = keys(&broker, "holder")
        .await
        .decrypt(with_token(
            pb::DecryptRequest {
                name: "disk-key".into(),
                ciphertext: envelope,
                aad: b"volume-1".to_vec(),
            },
            &workload.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(opened.plaintext, b"sealed inside the TEE");

    // The agent does the same from the command line: the same key, in a 0600 file.
    use std::os::unix::fs::PermissionsExt;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("disk.key");
    let run = common::workload::dev_agent_command(&broker, TRUSTED_MEASUREMENT)
        .args(["release-key", "disk-key", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    assert_eq!(std::fs::read(&file).unwrap(), released.key.as_slice());
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // On the token: the releasable key is extractable (only under the trusted transport
    // key), and the key is still sensitive.
    let listing = common::pkcs11_tool::objects(&broker);
    let access = common::pkcs11_tool::field_of(&listing, "kb:disk-key:v1", "Access:");
    assert!(access.contains("sensitive"), "{access}");
    assert!(!access.contains("never extractable"), "{access}");
    assert!(access.contains("extractable"), "{access}");
    // ...and wrappable only under a trusted key, read through PKCS#11.
    let token = common::fill::TokenFiller::open(
        broker.hsm.module_path(),
        common::TOKEN_LABEL,
        common::USER_PIN,
    );
    assert_eq!(token.wrap_with_trusted("kb:disk-key:v1"), [true]);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_releasable_keys_leave_and_only_to_attested_workloads_the_policy_allows() {
    let broker = BrokerProcess::start();
    create(&broker, "vault-key", false, "vault").await.unwrap();
    create(&broker, "disk-key", true, "vault").await.unwrap();
    create(&broker, "other-disk", true, "payments")
        .await
        .unwrap();
    let workload = attest_workload(&broker, "holder", TRUSTED_MEASUREMENT, true).await;

    // A key that is not releasable: refused by the broker, and the token lists it as
    // never extractable.
    let err = release(&broker, "holder", Some(&workload.token), "vault-key")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("not releasable"), "{err:?}");
    let listing = common::pkcs11_tool::objects(&broker);
    let access = common::pkcs11_tool::field_of(&listing, "kb:vault-key:v1", "Access:");
    assert!(access.contains("never extractable"), "{access}");

    // No attestation, a measurement outside the policy, a key the policy does not give.
    let err = release(&broker, "workload", None, "disk-key")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let untrusted = attested_on_bootstrap(&broker, &"11".repeat(48)).await;
    let err = release(&broker, "workload", Some(&untrusted.token), "disk-key")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = release(&broker, "holder", Some(&workload.token), "other-disk")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // Another identity: the admin may do anything by policy, but has no attested key to
    // receive it.
    let err = release(&broker, "admin", None, "disk-key")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("attestation token"), "{err:?}");

    // The class is chosen at creation: only AES-256 encryption keys in an HSM.
    let ec = keys(&broker, "admin")
        .await
        .create_key(pb::CreateKeyRequest {
            name: "signer".into(),
            algorithm: pb::KeyAlgorithm::EcP256 as i32,
            purpose: pb::KeyPurpose::SignVerify as i32,
            releasable: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(ec.code(), Code::InvalidArgument, "{ec:?}");
    let tpm = keys(&broker, "admin")
        .await
        .create_key(pb::CreateKeyRequest {
            name: "tpm-disk".into(),
            algorithm: pb::KeyAlgorithm::Aes256 as i32,
            purpose: pb::KeyPurpose::EncryptDecrypt as i32,
            backend: "swtpm".into(),
            releasable: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    // (A TPM holds no AES keys at all.)
    assert!(
        matches!(tpm.code(), Code::InvalidArgument | Code::Unimplemented),
        "{tpm:?}"
    );
    // Rotation keeps the class.
    let rotated = keys(&broker, "admin")
        .await
        .rotate_key(pb::KeyRef {
            name: "disk-key".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(rotated.releasable);
    let answer = release(&broker, "holder", Some(&workload.token), "disk-key")
        .await
        .unwrap();
    assert_eq!(answer.version, 2);
    let listing = common::pkcs11_tool::objects(&broker);
    assert!(
        !common::pkcs11_tool::field_of(&listing, "kb:disk-key:v2", "Access:")
            .contains("never extractable")
    );

    // Without the SO's transport key, nothing can be released, and the answer says what
    // to do.
    let token = common::fill::TokenFiller::open(
        broker.hsm.module_path(),
        common::TOKEN_LABEL,
        common::USER_PIN,
    );
    assert_eq!(token.destroy_secret_keys("kbsys:release:transport:v1"), 1);
    let err = release(&broker, "holder", Some(&workload.token), "disk-key")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("keybroker token enable-release"),
        "{err:?}"
    );
}
