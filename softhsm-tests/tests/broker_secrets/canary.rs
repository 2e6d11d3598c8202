//! The canary: a secret with a value found nowhere else is put and released, then looked
//! for in the broker's log, its store files and a core dump of the running process
//! (`gcore`, from Debian's `gdb`). It must be in none of them.

use std::process::Command;

use super::*;

/// Whether `needle` is anywhere in `haystack`.
fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_released_canary_is_nowhere_in_logs_store_files_or_a_core_dump() {
    let broker = BrokerProcess::start();
    // Unique to this run: nothing else in the process could hold these bytes.
    let canary = format!("canary-{:032x}", fastrand::u128(..));
    put(&broker, "app/canary", canary.as_bytes()).await;
    let workload = attested(&broker, "holder", TRUSTED_MEASUREMENT, true).await;
    for _ in 0..3 {
        let sealed = get(&broker, "holder", Some(&workload.token), "app/canary", 0)
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
        assert_eq!(opened.as_slice(), canary.as_bytes(), "it was released");
    }

    assert!(!broker.log().contains(&canary), "the log holds the canary");
    for entry in std::fs::read_dir(broker.dir.path().join("state")).unwrap() {
        let path = entry.unwrap().path();
        assert!(
            !holds(&std::fs::read(&path).unwrap(), canary.as_bytes()),
            "{} holds the canary",
            path.display()
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("core");
    let pid = broker.pid().unwrap();
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
    assert!(
        !holds(&dump, canary.as_bytes()),
        "the broker's memory still holds the canary after its release"
    );
}
