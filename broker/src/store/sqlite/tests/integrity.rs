//! Row MACs (`crate::store::integrity`), attacked as someone who can write the database
//! file but not use the hardware would: each edit below is refused when the row is read,
//! and the broker's own writes keep every MAC valid. The store key here is fixed bytes:
//! wrapping it in real hardware is tested end to end (`softhsm-tests`, `broker_store`).

use sealed_format::DataKey;

use super::leases::lease;
use super::*;
use crate::store::integrity::RowKey;
use crate::store::sqlite::StoredStoreKey;
use crate::store::{CaRecord, LeaseStore, SecretStore, SecretVersionRecord};

pub(super) fn row_key(byte: u8) -> RowKey {
    RowKey::derive(&DataKey::from_slice(&[byte; 32]).unwrap()).unwrap()
}

pub(super) fn stored() -> StoredStoreKey {
    StoredStoreKey {
        backend: HSM_BACKEND.to_owned(),
        kek: hsm("kbsys:store:kek:1"),
        wrapping: 1,
        wrapped: vec![7; 40],
        created_at: 1_000,
    }
}

fn secret(version: u32) -> SecretVersionRecord {
    SecretVersionRecord {
        name: "db".to_owned(),
        version,
        enabled: true,
        kek: "hsm-a:kbsys:secrets:kek:1".to_owned(),
        wrapped_dek: vec![1; 40],
        nonce: vec![2; 12],
        ciphertext: vec![3; 20],
        created_at: 1_000,
    }
}

fn ca() -> CaRecord {
    CaRecord {
        version: 1,
        backend: HSM_BACKEND.to_owned(),
        key_id: b"kbsys:ca:1".to_vec(),
        certificate: vec![0x30, 0x03, 1, 2, 3],
        chain_pem: String::new(),
        created_at: 1_000,
        activates_at: 1_000,
    }
}

/// One row in every protected table, written before the store was protected.
fn fill(store: &SqliteStore) {
    create(store, "a");
    create(store, "b");
    store
        .create_lease(&lease("app/1", "app", 500), 10)
        .wait()
        .unwrap();
    store.create_secret("db", &secret(1)).wait().unwrap();
    store.put_ca_version(&ca()).wait().unwrap();
    store
        .set_policy("permit(principal, action, resource);")
        .wait()
        .unwrap();
}

/// A store with a row in every table, then protected.
fn protected() -> SqliteStore {
    let store = unprotected_store();
    fill(&store);
    let tagged = store.protect(stored(), row_key(1)).wait().unwrap();
    assert_eq!(
        (tagged.keys, tagged.settings, tagged.ca_versions),
        (2, 3, 1),
        "two keys; two backends and the policy; one CA version"
    );
    assert_eq!((tagged.secret_versions, tagged.leases), (1, 1));
    store
}

/// Every read of every table.
fn read_all(store: &SqliteStore) -> Result<(), StoreError> {
    store.get("a").wait()?;
    store.list(&query("")).wait()?;
    store.pending_versions().wait()?;
    store.known_handles(HSM_BACKEND).wait()?;
    store.backends().wait()?;
    store.policy().wait()?;
    store.ca_versions().wait()?;
    store.secret_version("db", None).wait()?;
    store.list_secrets("", "", 10).wait()?;
    store.lease("app/1").wait()?;
    store.due_leases(10_000, 10).wait()?;
    Ok(())
}

/// Runs `sql` on the file as an editor would, outside the broker.
fn edit(store: &SqliteStore, sql: &'static str) {
    on_writer(store, move |conn| conn.execute_batch(sql).unwrap());
}

#[track_caller]
fn assert_tampered<T: std::fmt::Debug>(result: Result<T, StoreError>, names: &str) {
    match result {
        Err(StoreError::Tampered(m)) => assert!(m.contains(names), "{m}"),
        other => panic!("expected a refused row naming {names}, got {other:?}"),
    }
}

#[test]
fn protecting_tags_every_row_and_the_store_reads_as_before() {
    let store = protected();
    read_all(&store).unwrap();
    assert_eq!(
        store.get("a").wait().unwrap().unwrap().tags["team"],
        "payments"
    );
    let untagged: i64 = on_writer(&store, |conn| {
        conn.query_row(
            "SELECT (SELECT COUNT(*) FROM keys WHERE mac IS NULL) \
             + (SELECT COUNT(*) FROM backends WHERE mac IS NULL) \
             + (SELECT COUNT(*) FROM policy WHERE mac IS NULL) \
             + (SELECT COUNT(*) FROM ca_versions WHERE mac IS NULL) \
             + (SELECT COUNT(*) FROM secret_versions WHERE mac IS NULL) \
             + (SELECT COUNT(*) FROM leases WHERE mac IS NULL)",
            [],
            |row| row.get(0),
        )
        .unwrap()
    });
    assert_eq!(untagged, 0);
}

#[test]
fn an_edited_key_row_is_refused_wherever_it_is_read() {
    for (sql, what) in [
        (
            "UPDATE keys SET state = 'enabled', releasable = 1 WHERE name = 'a'",
            "key \"a\"",
        ),
        (
            "UPDATE keys SET backend = 'tpm-a' WHERE name = 'a'",
            "key \"a\"",
        ),
        (
            "UPDATE key_tags SET value = 'admin' WHERE key_name = 'a'",
            "key \"a\"",
        ),
        (
            "DELETE FROM key_tags WHERE key_name = 'a' AND tag = 'env'",
            "key \"a\"",
        ),
        (
            "INSERT INTO key_tags VALUES ('a', 'owner', 'me')",
            "key \"a\"",
        ),
        (
            "UPDATE key_versions SET handle = X'00' WHERE key_name = 'a'",
            "key \"a\"",
        ),
        // A version made to look half-made: reconciliation would destroy its object.
        (
            "UPDATE key_versions SET state = 'creating' WHERE key_name = 'a'",
            "key \"a\"",
        ),
        ("DELETE FROM key_versions WHERE key_name = 'a'", "key \"a\""),
        // Another key's valid MAC.
        (
            "UPDATE keys SET mac = (SELECT mac FROM keys WHERE name = 'b') WHERE name = 'a'",
            "key \"a\"",
        ),
        ("UPDATE keys SET mac = NULL WHERE name = 'a'", "has no MAC"),
    ] {
        let store = protected();
        edit(&store, sql);
        assert_tampered(store.get("a").wait(), what);
        assert_tampered(store.list(&query("")).wait(), what);
        assert_tampered(store.known_handles(HSM_BACKEND).wait(), what);
        assert!(
            store.get("b").wait().unwrap().is_some(),
            "{sql}: the other key reads"
        );
    }
}

#[test]
fn a_version_edited_to_creating_is_not_handed_to_reconciliation() {
    let store = protected();
    edit(
        &store,
        "UPDATE key_versions SET state = 'creating' WHERE key_name = 'a'",
    );
    assert_tampered(store.pending_versions().wait(), "key \"a\"");
}

#[test]
fn a_copied_key_is_refused_under_its_new_name() {
    let store = protected();
    edit(
        &store,
        "INSERT INTO keys (name, algorithm, purpose, backend, state, primary_version, \
         created_at, releasable, mac) SELECT 'c', algorithm, purpose, backend, state, \
         primary_version, created_at, releasable, mac FROM keys WHERE name = 'a'",
    );
    assert_tampered(store.get("c").wait(), "key \"c\"");
}

#[test]
fn edited_rows_of_the_other_tables_are_refused() {
    let store = protected();
    edit(&store, "UPDATE leases SET owner = 'spiffe://td/thief'");
    assert_tampered(store.lease("app/1").wait(), "lease \"app/1\"");
    assert_tampered(store.due_leases(10_000, 10).wait(), "lease \"app/1\"");

    let store = protected();
    edit(&store, "UPDATE leases SET expires_at = 999999");
    assert_tampered(store.extend_lease("app/1", 900, 200).wait(), "lease");

    let store = protected();
    edit(&store, "UPDATE ca_versions SET key_id = X'01'");
    assert_tampered(store.ca_versions().wait(), "CA version 1");

    let store = protected();
    edit(&store, "UPDATE secret_versions SET enabled = 0");
    assert_tampered(
        store.secret_version("db", Some(1)).wait(),
        "secret \"db\" version 1",
    );
    assert_tampered(store.list_secrets("", "", 10).wait(), "secret \"db\"");

    let store = protected();
    edit(
        &store,
        "UPDATE policy SET text = 'permit(principal, action, resource); // more'",
    );
    assert_tampered(store.policy().wait(), "authorization policy");

    let store = protected();
    edit(
        &store,
        "UPDATE backends SET module_path = '/tmp/evil.so' WHERE name = 'hsm-a'",
    );
    assert_tampered(store.backends().wait(), "backend \"hsm-a\"");
}

#[test]
fn the_brokers_own_writes_keep_every_mac_valid() {
    let store = protected();
    let version = rotate(&store, "a");
    store.retire_version("a", 1).wait().unwrap();
    store
        .set_state("b", &[KeyState::Enabled], KeyState::Disabled, None)
        .wait()
        .unwrap();
    store.begin_version("a", &hsm("a/3"), 3_000).wait().unwrap();
    store.abandon_version("a", version + 1).wait().unwrap();
    create(&store, "c");
    store
        .begin_create(&new_key("d"), &hsm("d/1"))
        .wait()
        .unwrap();
    store.abandon_version("d", 1).wait().unwrap();
    store.extend_lease("app/1", 900, 200).wait().unwrap();
    store
        .create_lease(&lease("app/2", "app", 500), 10)
        .wait()
        .unwrap();
    store.revoke_lease("app/2", 300).wait().unwrap();
    assert_eq!(store.revoke_role_leases("app", 400).wait().unwrap(), 1);
    store.add_secret_version(&secret(2)).wait().unwrap();
    store
        .set_secret_version_enabled("db", 1, false)
        .wait()
        .unwrap();
    store
        .put_ca_version(&CaRecord { version: 2, ..ca() })
        .wait()
        .unwrap();
    store
        .set_policy("forbid(principal, action, resource);")
        .wait()
        .unwrap();
    read_all(&store).unwrap();
    assert_eq!(store.get("a").wait().unwrap().unwrap().versions.len(), 2);
    assert_eq!(store.lease("app/1").wait().unwrap().revoked_at, Some(400));
}

#[test]
fn a_reopened_store_reads_nothing_until_unlocked_and_only_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keybroker.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        add_backends(&store);
        fill(&store);
        store.protect(stored(), row_key(1)).wait().unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert!(store.protected());
    assert_eq!(store.stored_key().wait().unwrap(), Some(stored()));
    assert!(matches!(store.get("a").wait(), Err(StoreError::Locked)));
    assert!(matches!(
        store.set_policy("x").wait(),
        Err(StoreError::Locked)
    ));
    store.unlock(row_key(2));
    assert_tampered(store.get("a").wait(), "integrity check");

    let store = SqliteStore::open(&path).unwrap();
    store.unlock(row_key(1));
    read_all(&store).unwrap();
    assert!(matches!(
        store.protect(stored(), row_key(1)).wait(),
        Err(StoreError::Database(m)) if m.contains("has a store key already")
    ));
}

#[test]
fn deleting_the_store_key_does_not_make_the_rows_trusted_again() {
    let store = protected();
    edit(&store, "DELETE FROM store_key");
    let store_after = |store: &SqliteStore| store.protect(stored(), row_key(9)).wait();
    assert_tampered(store_after(&store), "no store key");
    assert!(
        store.stored_key().wait().unwrap().is_none(),
        "nothing was written"
    );
}

#[test]
fn verify_names_every_edited_row_in_one_pass() {
    let store = protected();
    assert_eq!(store.verify().wait().unwrap().refused, Vec::<String>::new());
    edit(
        &store,
        "UPDATE key_tags SET value = 'x' WHERE key_name = 'b'",
    );
    edit(&store, "UPDATE leases SET owner = 'spiffe://td/thief'");
    edit(&store, "UPDATE policy SET mac = NULL");
    let verified = store.verify().wait().unwrap();
    // Two keys, two backends, the policy, a CA version, a secret version, a lease.
    assert_eq!(verified.rows, 8);
    assert_eq!(verified.refused.len(), 3, "{:?}", verified.refused);
    for (why, names) in verified.refused.iter().zip([
        "stored key \"b\" fails",
        "stored authorization policy has no MAC",
        "stored lease \"app/1\" fails",
    ]) {
        assert!(why.contains(names), "{why}");
    }
}
