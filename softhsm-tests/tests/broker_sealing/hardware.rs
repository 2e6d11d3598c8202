//! What the hardware holds: an HSM key-encryption key that the token itself lets do
//! nothing but wrap and unwrap, and that never leaves it.

use std::process::Command;

use super::*;

/// The `Usage:` and `Access:` lines `pkcs11-tool` prints for the object `label`.
fn usage_and_access(broker: &BrokerProcess, label: &str) -> (String, String) {
    let out = Command::new("pkcs11-tool")
        .arg("--module")
        .arg(broker.hsm.module_path())
        .args(["--token-label", common::TOKEN_LABEL, "--login", "--pin"])
        .arg(common::USER_PIN)
        .arg("--list-objects")
        .env("SOFTHSM2_CONF", broker.hsm.conf_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let listing = String::from_utf8(out.stdout).unwrap();
    let mut lines = listing.lines();
    lines
        .find(|l| l.trim() == format!("label:      {label}"))
        .unwrap_or_else(|| panic!("no object {label:?} in:\n{listing}"));
    let mut field = |name: &str| {
        lines
            .find(|l| l.trim_start().starts_with(name))
            .unwrap()
            .trim()
            .to_string()
    };
    let usage = field("Usage:");
    (usage, field("Access:"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_hsm_key_encryption_key_only_wraps_and_never_leaves_the_token() {
    let broker = BrokerProcess::start();
    let mut keys = admin(&broker).await;
    wrap_key(&mut keys, "kek", "softhsm").await;
    let (usage, access) = usage_and_access(&broker, "kb:kek:v1");
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
