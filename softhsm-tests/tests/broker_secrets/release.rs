//! Releases that work: to the agent, to the test's own client, and checked by an HPKE
//! implementation that shares no code with the broker; and what rests on disk.

use std::process::Command;

use super::*;

/// The independent HPKE (RFC 9180) opener, checked against the RFC's vectors.
const HPKE_OPEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hpke_open.py");

fn python_open(private: &[u8], sealed: &pb::SealedSecret) -> std::process::Output {
    Command::new("/usr/bin/python3")
        .arg(HPKE_OPEN)
        .args(["open", "--aead", "2", "--sk", &hex::encode(private)])
        .args(["--enc", &hex::encode(&sealed.enc)])
        .args(["--ct", &hex::encode(&sealed.ciphertext)])
        .args(["--info", &hex::encode(&sealed.info), "--aad", ""])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attested_workload_gets_a_secret_that_an_independent_hpke_opens() {
    let broker = BrokerProcess::start();
    let self_test = Command::new("/usr/bin/python3")
        .args([HPKE_OPEN, "self-test"])
        .output()
        .unwrap();
    assert!(self_test.status.success(), "{self_test:?}");

    assert_eq!(
        put(&broker, "app/db-password", b"correct horse")
            .await
            .version,
        1
    );
    let rotated = secrets(&broker, "admin")
        .await
        .rotate_secret(pb::RotateSecretRequest {
            name: "app/db-password".into(),
            value: b"battery staple".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.version, 2);

    let workload = attested(&broker, "holder", TRUSTED_MEASUREMENT, true).await;
    let sealed = get(
        &broker,
        "holder",
        Some(&workload.token),
        "app/db-password",
        0,
    )
    .await
    .unwrap();
    assert_eq!(
        (sealed.name.as_str(), sealed.version),
        ("app/db-password", 2)
    );
    let info = attest::release::release_info("app/db-password", 2, WORKLOAD).unwrap();
    assert_eq!(
        sealed.info, info,
        "the info names the secret, version and caller"
    );
    let opened = workload
        .kem
        .open(
            &attest::release::Sealed {
                enc: sealed.enc.clone(),
                ciphertext: sealed.ciphertext.clone(),
            },
            &info,
        )
        .unwrap();
    assert_eq!(opened.as_slice(), b"battery staple");

    // The independent implementation opens it with the workload's KEM key...
    let out = python_open(&workload.kem.private_bytes(), &sealed);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        hex::encode(b"battery staple")
    );
    // ...and not with another one.
    let out = python_open(&KemKeyPair::generate().private_bytes(), &sealed);
    assert!(!out.status.success(), "{out:?}");

    // An older version, asked for by number.
    let old = get(
        &broker,
        "holder",
        Some(&workload.token),
        "app/db-password",
        1,
    )
    .await
    .unwrap();
    let out = python_open(&workload.kem.private_bytes(), &old);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        hex::encode(b"correct horse")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_attests_and_writes_the_secret_to_a_0600_file() {
    use std::os::unix::fs::PermissionsExt;
    let broker = BrokerProcess::start();
    put(&broker, "app/api-token", b"tok-123").await;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("api-token");
    let run = common::workload::dev_agent_command(&broker, TRUSTED_MEASUREMENT)
        .args(["get-secret", "app/api-token", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    assert_eq!(std::fs::read(&file).unwrap(), b"tok-123");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(!said.contains("tok-123"), "{said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn values_rest_encrypted_under_a_key_that_never_leaves_the_token() {
    let mut broker = BrokerProcess::start();
    let value = b"canary-5f1b7e3c-at-rest";
    put(&broker, "app/at-rest", value).await;
    // The key-encryption key was made in the token, sensitive and never extractable.
    let token = common::fill::TokenFiller::open(
        broker.hsm.module_path(),
        common::TOKEN_LABEL,
        common::USER_PIN,
    );
    assert_eq!(
        token.secret_key_flags(b"kbsys:secrets:kek:1"),
        [(true, false, true)],
        "(sensitive, extractable, never extractable)"
    );
    drop(token);
    // Nothing in the store's files (the database, its WAL) holds the value.
    let state = broker.dir.path().join("state");
    let mut files = 0;
    for entry in std::fs::read_dir(&state).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        files += 1;
        assert!(
            !bytes.windows(value.len()).any(|w| w == value),
            "{} holds the value",
            path.display()
        );
    }
    assert!(files > 0, "the store is in {}", state.display());
    // After a restart the same key opens it.
    broker.restart();
    let workload = attested(&broker, "holder", TRUSTED_MEASUREMENT, true).await;
    let sealed = get(&broker, "holder", Some(&workload.token), "app/at-rest", 0)
        .await
        .unwrap();
    let opened = workload
        .kem
        .open(
            &attest::release::Sealed {
                enc: sealed.enc,
                ciphertext: sealed.ciphertext,
            },
            &sealed.info,
        )
        .unwrap();
    assert_eq!(opened.as_slice(), value);
}
