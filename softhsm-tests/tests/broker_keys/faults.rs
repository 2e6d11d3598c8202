//! Faults around the hardware reach the client as statuses it can act on, never as
//! `INTERNAL`.

use keybroker_api::v1 as pb;
use pb::KeyAlgorithm as A;
use pb::KeyPurpose as P;
use tonic::Code;

use super::common::{BrokerProcess, create};
use super::sign_req;

#[tokio::test(flavor = "multi_thread")]
async fn an_object_missing_from_the_token_is_a_failed_precondition_naming_key_and_version() {
    let broker = BrokerProcess::start();
    let mut keys = broker.keys("admin").await;
    keys.create_key(create("gone", A::EcP256, P::SignVerify, "softhsm"))
        .await
        .unwrap();
    keys.create_key(create("gone-aes", A::Aes256, P::EncryptDecrypt, "softhsm"))
        .await
        .unwrap();
    // Someone with the token's PIN deletes the objects behind the broker's back.
    broker.pkcs11_tool(&[
        "--delete-object",
        "--type",
        "privkey",
        "--label",
        "kb:gone:v1",
    ]);
    broker.pkcs11_tool(&[
        "--delete-object",
        "--type",
        "secrkey",
        "--label",
        "kb:gone-aes:v1",
    ]);

    let err = keys
        .sign(sign_req("gone", b"m", pb::SignatureScheme::Default))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("key \"gone\" version 1") && err.message().contains("missing"),
        "{err:?}"
    );
    let err = keys
        .encrypt(pb::EncryptRequest {
            name: "gone-aes".into(),
            plaintext: b"p".to_vec(),
            aad: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("key \"gone-aes\" version 1"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn after_kill_9_next_to_a_live_swtpm_the_next_start_succeeds() {
    let mut broker = BrokerProcess::start();
    let mut keys = broker.keys("admin").await;
    // Keys loaded in the TPM when the broker dies: swtpm, which has no resource manager,
    // keeps them, and its few object slots with them.
    for name in ["t1", "t2", "t3"] {
        keys.create_key(create(name, A::EcP256, P::SignVerify, "swtpm"))
            .await
            .unwrap();
        keys.sign(sign_req(name, b"m", pb::SignatureScheme::Default))
            .await
            .unwrap();
    }
    for round in 0..3 {
        broker.kill9();
        broker
            .try_spawn(&[])
            .unwrap_or_else(|status| panic!("start {round} failed ({status}): {}", broker.log()));
        let mut keys = broker.keys("admin").await;
        for name in ["t1", "t2", "t3"] {
            keys.sign(sign_req(name, b"m", pb::SignatureScheme::Default))
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tpm_key_that_no_longer_loads_refuses_to_encrypt() {
    let mut broker = BrokerProcess::start();
    let mut keys = broker.keys("admin").await;
    keys.create_key(create("sealed-box", A::Rsa2048, P::EncryptDecrypt, "swtpm"))
        .await
        .unwrap();
    let request = || pb::EncryptRequest {
        name: "sealed-box".into(),
        plaintext: b"p".to_vec(),
        aad: Vec::new(),
    };
    keys.encrypt(request()).await.unwrap();
    // The TPM is cleared while the broker is down: a new storage seed, so the key's blob,
    // wrapped under the old SRK, can never load again.
    broker.stop();
    broker.tpm.tpm2_tool(&["tpm2_clear", "-c", "l"]);
    broker.spawn();
    let mut keys = broker.keys("admin").await;
    // Encryption needs only the public key; it must still refuse, since nobody could ever
    // decrypt the result.
    let err = keys.encrypt(request()).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("key \"sealed-box\" version 1"),
        "{err:?}"
    );
}
