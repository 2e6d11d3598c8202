//! The refusals of the key-use commands that need no broker: wrong key kind, oversize or
//! unreadable input, bytes that are not an envelope, and how plaintexts are written.

use std::os::unix::fs::PermissionsExt;

use clap::Parser;
use prost::Message;
use sha2::Digest as _;

use super::*;
use crate::cli::{Cli, Command};

fn key(algorithm: pb::KeyAlgorithm, purpose: pb::KeyPurpose) -> pb::Key {
    pb::Key {
        name: "k".into(),
        algorithm: algorithm as i32,
        purpose: purpose as i32,
        ..Default::default()
    }
}

fn usage_message(error: CliError) -> String {
    assert_eq!(error.exit_code(), 2, "{error}");
    match error {
        CliError::Usage(m) => m,
        other => panic!("expected a usage error, got {other:?}"),
    }
}

#[test]
fn signing_hash_follows_the_key_algorithm() {
    use pb::KeyAlgorithm as A;
    let sign = pb::KeyPurpose::SignVerify;
    assert_eq!(
        signing_hash(&key(A::EcP256, sign)).unwrap(),
        HashAlgorithm::Sha256
    );
    assert_eq!(
        signing_hash(&key(A::EcP384, sign)).unwrap(),
        HashAlgorithm::Sha384
    );
    assert_eq!(
        signing_hash(&key(A::Rsa3072, sign)).unwrap(),
        HashAlgorithm::Sha256
    );
}

#[test]
fn an_encryption_key_or_unknown_algorithm_does_not_sign() {
    let aes = key(pb::KeyAlgorithm::Aes256, pb::KeyPurpose::EncryptDecrypt);
    let message = usage_message(signing_hash(&aes).unwrap_err());
    assert!(message.contains("k is not a signing key"), "{message}");

    let mut odd = key(pb::KeyAlgorithm::EcP256, pb::KeyPurpose::SignVerify);
    odd.algorithm = 99;
    let message = usage_message(signing_hash(&odd).unwrap_err());
    assert!(message.contains("99"), "{message}");
}

#[test]
fn files_are_hashed_with_the_keys_hash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let data = vec![7u8; 200_000];
    std::fs::write(&path, &data).unwrap();
    assert_eq!(
        digest_file(&path, HashAlgorithm::Sha256).unwrap(),
        sha2::Sha256::digest(&data).to_vec()
    );
    assert_eq!(
        digest_file(&path, HashAlgorithm::Sha384).unwrap(),
        sha2::Sha384::digest(&data).to_vec()
    );
    let missing =
        usage_message(digest_file(&dir.path().join("missing"), HashAlgorithm::Sha256).unwrap_err());
    assert!(missing.starts_with("cannot read "), "{missing}");
}

#[test]
fn oversize_input_is_refused_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    std::fs::write(&path, vec![0u8; 65_537]).unwrap();
    let message = usage_message(read_bounded(&path, MAX_PLAINTEXT_BYTES, "encrypt").unwrap_err());
    assert!(message.contains("65537 bytes is too large"), "{message}");
    assert!(message.contains("at most 65536 bytes"), "{message}");
    assert!(message.contains("keys data-key"), "{message}");

    let message = usage_message(read_bounded(&path, 1024, "verify").unwrap_err());
    assert!(
        message.contains("`keys verify` takes at most 1024"),
        "{message}"
    );
    assert!(!message.contains("data-key"), "{message}");
}

#[test]
fn input_at_the_limit_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exact");
    std::fs::write(&path, vec![5u8; 65_536]).unwrap();
    let bytes = read_bounded(&path, MAX_PLAINTEXT_BYTES, "encrypt").unwrap();
    assert_eq!(bytes.len(), 65_536);
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert!(read_bounded(&empty, 10, "encrypt").unwrap().is_empty());
}

#[test]
fn bytes_that_are_not_an_envelope_are_refused() {
    assert_eq!(
        envelope_key(b"\xff\xff\xff not protobuf").unwrap_err(),
        "not a Keybroker ciphertext"
    );
    // Valid protobuf, but it names no key version: an empty file decodes as one.
    assert!(
        envelope_key(b"")
            .unwrap_err()
            .contains("names no key version")
    );
    let unversioned = pb::Ciphertext {
        key: "k".into(),
        version: 0,
        iv: vec![1; 12],
        data: vec![2; 20],
    };
    assert!(envelope_key(&unversioned.encode_to_vec()).is_err());
}

#[test]
fn an_envelope_names_its_key() {
    let envelope = pb::Ciphertext {
        key: "demo-encryption".into(),
        version: 2,
        iv: vec![1; 12],
        data: vec![2; 20],
    };
    assert_eq!(
        envelope_key(&envelope.encode_to_vec()).unwrap(),
        "demo-encryption"
    );
}

#[test]
fn plaintexts_are_written_owner_only_even_over_an_open_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain");
    std::fs::write(&path, b"old contents, longer than the new").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_file(&path, b"secret", true).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"secret");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let error = write_file(&dir.path().join("no/such/dir"), b"x", false).unwrap_err();
    assert_eq!(error.exit_code(), 1);
}

#[test]
fn a_failed_check_exits_1() {
    assert_eq!(CliError::Check("no".into()).exit_code(), 1);
}

#[test]
fn key_use_commands_parse_under_keys() {
    let cli = Cli::try_parse_from([
        "keybroker",
        "keys",
        "--client-config",
        "c.toml",
        "sign",
        "demo-signing",
        "--in",
        "f",
        "--out",
        "sig.der",
    ])
    .unwrap();
    assert!(matches!(cli.command, Command::Keys { .. }));
    // decrypt takes no key name: the envelope names it.
    let refused = Cli::try_parse_from([
        "keybroker",
        "keys",
        "--client-config",
        "c.toml",
        "decrypt",
        "demo-encryption",
        "--in",
        "c",
        "--out",
        "p",
    ]);
    assert!(refused.is_err());
    let missing_out = Cli::try_parse_from([
        "keybroker",
        "keys",
        "--client-config",
        "c.toml",
        "encrypt",
        "k",
        "--in",
        "p",
    ]);
    assert!(missing_out.is_err());
}
