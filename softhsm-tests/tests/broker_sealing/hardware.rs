//! What the hardware holds: an HSM key-encryption key that the token itself lets do
//! nothing but wrap and unwrap, and that never leaves it.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn an_hsm_key_encryption_key_only_wraps_and_never_leaves_the_token() {
    let broker = BrokerProcess::start();
    let mut keys = admin(&broker).await;
    wrap_key(&mut keys, "kek", "softhsm").await;
    let listing = common::pkcs11_tool::objects(&broker);
    let usage = common::pkcs11_tool::field_of(&listing, "kb:kek:v1", "Usage:");
    let access = common::pkcs11_tool::field_of(&listing, "kb:kek:v1", "Access:");
    assert_eq!(usage, "Usage:      wrap, unwrap");
    assert!(access.contains("never extractable"), "{access}");
    assert!(access.contains("sensitive"), "{access}");
    // The broker refuses the key for what the token would refuse anyway.
    let err = keys
        .encrypt(pb::EncryptRequest {
            name: "kek".into(),
            plaintext: b"x".to_vec(),
            aad: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
}
