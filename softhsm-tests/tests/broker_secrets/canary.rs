//! The canary: a secret with a value found nowhere else is put and released, random
//! secrets are leased (and one revoked), then every one of those values is looked for in
//! the broker's log, its store files and a core dump of the running process (`gcore`, from
//! Debian's `gdb`), taken once the clients have closed their connections. None may be in
//! any of them.
//!
//! The broker wipes the buffers it owns (`Zeroizing`, `secrecy`); the buffers of TLS and
//! HTTP/2 that a value passes through are wiped by its global allocator when freed
//! (`broker/src/main.rs`).

use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

/// Whether `needle` is anywhere in `haystack`.
fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The broker's open TCP connections on `port` (ESTABLISHED or CLOSE_WAIT on its side),
/// from the kernel's table.
fn server_connections(pid: u32, port: u16) -> usize {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1).is_some_and(|l| l.ends_with(&local))
                && fields.get(3).is_some_and(|s| *s == "01" || *s == "08")
        })
        .count()
}

/// Opens a release to `kem` for this test's workload.
fn open(kem: &KemKeyPair, enc: Vec<u8>, ciphertext: Vec<u8>, info: &[u8]) -> Vec<u8> {
    kem.open(&attest::release::Sealed { enc, ciphertext }, info)
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn released_and_leased_canaries_are_nowhere_in_logs_store_files_or_a_core_dump() {
    let broker = BrokerProcess::start();
    // Unique to this run: nothing else in the process could hold these bytes.
    let canary = format!("canary-{:032x}", fastrand::u128(..)).into_bytes();
    put(&broker, "app/canary", &canary).await;
    let workload = attested(&broker, "holder", TRUSTED_MEASUREMENT, true).await;
    for _ in 0..3 {
        let sealed = get(&broker, "holder", Some(&workload.token), "app/canary", 0)
            .await
            .unwrap();
        let opened = open(&workload.kem, sealed.enc, sealed.ciphertext, &sealed.info);
        assert_eq!(opened, canary, "it was released");
    }
    let mut values = vec![canary];
    let mut leases = Vec::new();
    for _ in 0..2 {
        let request = with_token(
            pb::GenerateSecretRequest {
                role: "app/token".into(),
                ttl_seconds: 0,
            },
            &workload.token,
        );
        let leased = secrets(&broker, "holder")
            .await
            .generate_secret(request)
            .await
            .unwrap()
            .into_inner();
        values.push(open(
            &workload.kem,
            leased.enc,
            leased.ciphertext,
            &leased.info,
        ));
        leases.push(leased.lease.unwrap().lease_id);
    }
    secrets(&broker, "holder")
        .await
        .revoke_lease(with_token(
            pb::RevokeLeaseRequest {
                lease_id: leases[0].clone(),
            },
            &workload.token,
        ))
        .await
        .unwrap();

    let log = broker.log();
    let state = broker.dir.path().join("state");
    let files: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for value in &values {
        assert!(!holds(log.as_bytes(), value), "the log holds a canary");
        for path in &files {
            let bytes = std::fs::read(path).unwrap();
            assert!(!holds(&bytes, value), "{} holds a canary", path.display());
        }
    }

    // Every client connection above was dropped: wait until the broker has closed its
    // side too, so that what is left is what the broker keeps, not a connection's.
    let pid = broker.pid().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server_connections(pid, broker.port()) > 0 {
        assert!(
            Instant::now() < deadline,
            "the broker kept connections open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("core");
    let out = Command::new("gcore")
        .arg("-o")
        .arg(&prefix)
        .arg(pid.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "gcore: {out:?}");
    let dump = std::fs::read(dir.path().join(format!("core.{pid}"))).unwrap();
    // The dump is searchable: the policy the broker holds in memory is in it.
    assert!(holds(&dump, b"workload-secrets-need-measurement"));
    for (i, value) in values.iter().enumerate() {
        assert!(
            !holds(&dump, value),
            "the broker's memory still holds canary {i} (0: the put secret, 1 and 2: leased \
             values) after its release"
        );
    }
}
