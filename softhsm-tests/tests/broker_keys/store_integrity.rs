//! The broker's own rows at rest (docs/sealing.md, "The broker's own data at rest"),
//! attacked as someone who can write the database file but not use the hardware: an
//! edited row is refused, a store sealed to the TPM stays shut after a PCR extend, and a
//! protected store is never read without its store key.

use keybroker_api::v1 as pb;
use pb::KeyAlgorithm as A;
use pb::KeyPurpose as P;
use tonic::Code;

use super::common::{BrokerOptions, BrokerProcess, create, keybroker_binary};
use super::sign_req;

/// Runs `sql` on the broker's database file, as an editor would.
fn edit_store(broker: &BrokerProcess, sql: &str) {
    let db = rusqlite::Connection::open(broker.dir.path().join("state/keybroker.db")).unwrap();
    db.execute_batch(sql).unwrap();
}

/// One value from the broker's database file.
fn query_store<T: rusqlite::types::FromSql>(broker: &BrokerProcess, sql: &str) -> T {
    let db = rusqlite::Connection::open(broker.dir.path().join("state/keybroker.db")).unwrap();
    db.query_row(sql, [], |row| row.get(0)).unwrap()
}

/// `keybroker store verify` on the broker's configuration: (success, stdout, stderr).
fn store_verify(broker: &BrokerProcess) -> (bool, String, String) {
    let out = std::process::Command::new(keybroker_binary(false))
        .args(["store", "verify", "--config"])
        .arg(broker.config_path())
        .env("SOFTHSM2_CONF", broker.hsm.conf_path())
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn set_protect_with(broker: &BrokerProcess, line: &str) {
    let config = std::fs::read_to_string(broker.config_path()).unwrap();
    let (head, tail) = config.split_once("[policy]").unwrap();
    let head: String = head
        .lines()
        .filter(|l| !l.starts_with("protect_with"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        broker.config_path(),
        format!("{head}{line}\n\n[policy]{tail}"),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unprotected_store_is_tagged_once_then_an_edited_row_is_refused() {
    let mut broker = BrokerProcess::start_with(BrokerOptions {
        store_lines: "",
        ..BrokerOptions::default()
    });
    let mut keys = broker.keys("admin").await;
    for name in ["ledger", "payroll"] {
        keys.create_key(create(name, A::EcP256, P::SignVerify, "softhsm"))
            .await
            .unwrap();
    }
    assert!(broker.log().contains("protect_with is not set"));
    assert_eq!(
        query_store::<i64>(&broker, "SELECT COUNT(mac) FROM keys"),
        0
    );

    // Protected from now on: the rows already there are trusted once, and say so.
    broker.stop();
    set_protect_with(&broker, "protect_with = \"softhsm\"");
    broker.spawn();
    let made = broker
        .log()
        .lines()
        .find(|l| l.contains("store key made"))
        .unwrap_or_default()
        .to_string();
    assert!(
        made.contains("keys=2") && made.contains("trusted as they are now"),
        "{made}"
    );
    assert_eq!(
        query_store::<i64>(&broker, "SELECT COUNT(mac) FROM keys"),
        2
    );
    // The store key is only wrapped (RFC 5649: 40 bytes) by a wrap-only key in the HSM.
    assert_eq!(
        query_store::<i64>(&broker, "SELECT length(wrapped) FROM store_key"),
        40
    );
    let kek = broker.pkcs11_tool(&[
        "--list-objects",
        "--type",
        "secrkey",
        "--label",
        "kbsys:store:kek:v1",
    ]);
    assert!(
        kek.contains("never extractable") && kek.contains("wrap"),
        "{kek}"
    );
    let mut keys = broker.keys("admin").await;
    keys.sign(sign_req("ledger", b"m", pb::SignatureScheme::Default))
        .await
        .unwrap();
    let (ok, out, err) = store_verify(&broker);
    assert!(ok && out.contains("every MAC verifies"), "{out}{err}");

    // The attacker gives "ledger" another team: the policy would read the tag.
    broker.stop();
    edit_store(
        &broker,
        "UPDATE key_tags SET value = 'admins' WHERE key_name = 'ledger'",
    );
    let (ok, out, err) = store_verify(&broker);
    assert!(!ok, "{out}{err}");
    assert!(
        out.contains("refused: the stored key \"ledger\" fails its integrity check")
            && !out.contains("payroll")
            && err.contains("1 of"),
        "{out}{err}"
    );
    broker.spawn();
    let mut keys = broker.keys("admin").await;
    let refused = keys
        .get_key(pb::KeyRef {
            name: "ledger".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::DataLoss, "{refused:?}");
    assert!(
        refused.message().contains("failed its integrity check"),
        "{refused:?}"
    );
    assert!(
        broker
            .log()
            .contains("the stored key \"ledger\" fails its integrity check"),
        "the log names the row: {}",
        broker.log()
    );
    // The other key is served.
    keys.sign(sign_req("payroll", b"m", pb::SignatureScheme::Default))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_protected_store_is_not_opened_without_its_store_key() {
    let mut broker = BrokerProcess::start();
    broker.stop();

    // Without protect_with, the broker does not read the store unchecked.
    set_protect_with(&broker, "");
    let status = broker.try_spawn(&[]).unwrap_err();
    assert!(!status.success());
    assert!(
        broker
            .log()
            .contains("store.protect_with: the store is protected"),
        "{}",
        broker.log()
    );

    // An edited store key does not unwrap.
    set_protect_with(&broker, "protect_with = \"softhsm\"");
    edit_store(&broker, "UPDATE store_key SET wrapped = zeroblob(40)");
    broker.try_spawn(&[]).unwrap_err();
    assert!(
        broker
            .log()
            .contains("the store key cannot be unwrapped by backend \"softhsm\""),
        "{}",
        broker.log()
    );

    // Its row deleted (and every MAC with it), the store is not protected afresh over
    // the rows: the HSM still holds the key-encryption key.
    edit_store(&broker, "DELETE FROM store_key; UPDATE keys SET mac = NULL");
    broker.try_spawn(&[]).unwrap_err();
    assert!(
        broker.log().contains("the store has no store key"),
        "{}",
        broker.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_sealed_to_the_tpm_stays_shut_after_a_pcr_extend() {
    let mut broker = BrokerProcess::start_with(BrokerOptions {
        store_lines: "protect_with = \"swtpm\"",
        ..BrokerOptions::default()
    });
    let mut keys = broker.keys("admin").await;
    keys.create_key(create("boot", A::EcP256, P::SignVerify, "softhsm"))
        .await
        .unwrap();
    // Sealed by the TPM (kek kind 0x02), and it opens again in the same boot state.
    assert_eq!(
        query_store::<i64>(&broker, "SELECT wrapping FROM store_key"),
        2
    );
    broker.restart();
    let mut keys = broker.keys("admin").await;
    keys.sign(sign_req("boot", b"m", pb::SignatureScheme::Default))
        .await
        .unwrap();

    broker.stop();
    broker
        .tpm
        .tpm2_tool(&["tpm2_pcrextend", &format!("16:sha256={}", "cd".repeat(32))]);
    let status = broker.try_spawn(&[]).unwrap_err();
    assert!(!status.success());
    let log = broker.log();
    assert!(
        log.contains("the store key cannot be unwrapped by backend \"swtpm\"")
            && log.contains("PCRs [16]"),
        "{log}"
    );
}
