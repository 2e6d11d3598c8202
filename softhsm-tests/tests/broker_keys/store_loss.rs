//! A lost store must never cost the keys: a broker whose store is missing or empty while
//! the token holds its objects refuses to start and changes nothing, until the operator
//! says, by name, that every existing key becomes an orphan.

use keybroker_api::v1 as pb;
use pb::KeyAlgorithm as A;
use pb::KeyPurpose as P;

use super::common::{BrokerOptions, BrokerProcess, create};

/// Removes or empties the broker's database, as a lost disk or a bad restore would.
fn damage_store(broker: &BrokerProcess, truncate: bool) {
    let db = broker.dir.path().join("state/keybroker.db");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(db.with_file_name(format!("keybroker.db{suffix}")));
    }
    if truncate {
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&db)
            .unwrap();
    } else {
        std::fs::remove_file(&db).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_or_emptied_store_refuses_to_start_and_leaves_the_token_untouched() {
    // The HSM still holds the store key's key-encryption key: the store was lost.
    let refusal = "the store has no store key: the store was lost";
    lost_store_refuses(BrokerOptions::default(), refusal).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unprotected_lost_store_refuses_to_start_and_leaves_the_token_untouched() {
    let options = BrokerOptions {
        store_lines: "",
        ..BrokerOptions::default()
    };
    lost_store_refuses(options, "the store knows no keys").await;
}

/// A broker started with `options` loses its store: it refuses with `refusal` until the
/// operator passes `--orphan-all-existing-keys`, and the token is untouched.
async fn lost_store_refuses(options: BrokerOptions, refusal: &str) {
    let mut broker = BrokerProcess::start_with(options);
    let mut admin = broker.keys("admin").await;
    for name in ["ledger", "payroll", "backup"] {
        admin
            .create_key(create(name, A::EcP256, P::SignVerify, "softhsm"))
            .await
            .unwrap();
    }
    let objects = broker.broker_objects();
    assert_eq!(objects.len(), 3, "{objects:?}");

    for truncate in [false, true] {
        broker.stop();
        damage_store(&broker, truncate);
        let status = broker.try_spawn(&[]).unwrap_err();
        assert!(!status.success());
        let log = broker.log();
        assert!(
            log.contains(refusal) && log.contains("--orphan-all-existing-keys"),
            "the refusal says why and what to do: {log}"
        );
        assert_eq!(broker.broker_objects(), objects, "the token is untouched");
    }

    // Said by name, the start goes ahead: each key is reported as an orphan, and none is
    // destroyed (orphans = "report").
    broker.try_spawn(&["--orphan-all-existing-keys"]).unwrap();
    assert!(
        last_reconciliation(&broker).contains("orphans=3 orphans_destroyed=0"),
        "{}",
        broker.log()
    );
    assert_eq!(broker.broker_objects(), objects);
}

/// The last reconciliation's log line.
fn last_reconciliation(broker: &BrokerProcess) -> String {
    broker
        .log()
        .lines()
        .rev()
        .find(|l| l.contains("store and hardware reconciled"))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_start_destroys_no_more_orphans_than_its_cap() {
    let mut broker = BrokerProcess::start();
    let mut admin = broker.keys("admin").await;
    for name in ["one", "two", "three"] {
        admin
            .create_key(create(name, A::EcP256, P::SignVerify, "softhsm"))
            .await
            .unwrap();
    }
    let with_keys = |extra: &str| {
        let config = std::fs::read_to_string(broker.config_path()).unwrap();
        config.replace(
            "min_destruction_pending_days = 1",
            &format!("min_destruction_pending_days = 1\norphans = \"destroy\"\n{extra}"),
        )
    };
    let capped = with_keys("max_orphans_destroyed = 2");
    let uncapped = with_keys("max_orphans_destroyed = 3");
    broker.stop();
    damage_store(&broker, false);

    // Three orphans, two allowed: none is destroyed.
    std::fs::write(broker.config_path(), capped).unwrap();
    broker.try_spawn(&["--orphan-all-existing-keys"]).unwrap();
    assert!(
        last_reconciliation(&broker).contains("orphans=3 orphans_destroyed=0"),
        "{}",
        broker.log()
    );
    assert!(
        broker
            .log()
            .contains("more orphans than keys.max_orphans_destroyed")
    );
    assert_eq!(broker.broker_objects().len(), 3);

    // Within the cap, the operator's choice to destroy orphans is carried out.
    broker.stop();
    std::fs::write(broker.config_path(), uncapped).unwrap();
    broker.try_spawn(&["--orphan-all-existing-keys"]).unwrap();
    assert!(
        last_reconciliation(&broker).contains("orphans=3 orphans_destroyed=3"),
        "{}",
        broker.log()
    );
    assert!(broker.broker_objects().is_empty());
}
