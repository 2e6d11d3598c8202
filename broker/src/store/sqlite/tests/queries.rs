//! The queries over many keys: listing, destruction, reconciliation.

use super::*;
use crate::store::PendingVersion;

#[test]
fn due_for_destruction_is_at_or_before_now() {
    let store = store();
    for name in ["c", "a", "b", "enabled", "disabled"] {
        create(&store, name);
    }
    let schedule = |name: &str, at: i64| {
        store
            .set_state(
                name,
                &[KeyState::Enabled],
                KeyState::PendingDestruction,
                Some(at),
            )
            .wait()
            .unwrap();
    };
    schedule("a", 100);
    schedule("b", 200);
    schedule("c", 100);
    // Stored as given, but not pending destruction.
    store
        .set_state(
            "disabled",
            &[KeyState::Enabled],
            KeyState::Disabled,
            Some(1),
        )
        .wait()
        .unwrap();
    assert!(store.due_for_destruction(99).wait().unwrap().is_empty());
    assert_eq!(
        names(&store.due_for_destruction(100).wait().unwrap()),
        ["a", "c"]
    );
    let due = store.due_for_destruction(1_000).wait().unwrap();
    assert_eq!(names(&due), ["a", "b", "c"]);
    assert!(due.iter().all(|k| k.versions.len() == 1));
}

#[test]
fn known_handles_skip_destroyed_keys_and_retired_versions() {
    let store = store();
    create(&store, "a");
    rotate(&store, "a");
    store.retire_version("a", 1).wait().unwrap();
    store
        .begin_version("a", &hsm("a/pending"), 0)
        .wait()
        .unwrap();
    store
        .begin_create(&new_key("b"), &hsm("b/pending"))
        .wait()
        .unwrap();
    create(&store, "gone");
    store
        .set_state("gone", &[KeyState::Enabled], KeyState::Destroyed, None)
        .wait()
        .unwrap();
    create(&store, "revoked");
    store
        .set_state("revoked", &[KeyState::Enabled], KeyState::Revoked, None)
        .wait()
        .unwrap();
    store.add_backend(&hsm_backend("hsm-b")).wait().unwrap();
    let other = NewKey {
        backend: "hsm-b".into(),
        ..new_key("other")
    };
    store.begin_create(&other, &hsm("other/1")).wait().unwrap();

    let ids: Vec<Vec<u8>> = ["a/2", "a/pending", "b/pending", "revoked/1"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    assert_eq!(store.known_handles(HSM_BACKEND).wait().unwrap(), ids);
    assert_eq!(
        store.known_handles("hsm-b").wait().unwrap(),
        vec![b"other/1".to_vec()]
    );
    assert!(store.known_handles("nowhere").wait().unwrap().is_empty());
}

#[test]
fn tpm_handles_round_trip() {
    let store = store();
    let key = NewKey {
        backend: TPM_BACKEND.into(),
        algorithm: Algorithm::Rsa2048,
        purpose: Purpose::EncryptDecrypt,
        ..new_key("t")
    };
    let blob = |b: &[u8]| HardwareHandle::new("tpm", b.to_vec());
    store.begin_create(&key, &blob(b"")).wait().unwrap();
    assert_eq!(
        store.pending_versions().wait().unwrap()[0].handle,
        blob(b"")
    );
    let done = store
        .complete_version("t", 1, &blob(&[0, 1, 255]))
        .wait()
        .unwrap();
    assert_eq!(done.version(1).unwrap().handle, blob(&[0, 1, 255]));
    assert_eq!(
        (done.algorithm, done.purpose),
        (Algorithm::Rsa2048, Purpose::EncryptDecrypt)
    );
    assert_eq!(
        store.known_handles(TPM_BACKEND).wait().unwrap(),
        [vec![0, 1, 255]]
    );
}

/// The store keeps a handle of a kind it has never heard of as it is: a new backend kind
/// needs no store change.
#[test]
fn handles_of_any_kind_round_trip() {
    let store = store();
    let future = HardwareHandle::new("tpm2-pkcs11", b"object 7".to_vec());
    store.begin_create(&new_key("f"), &future).wait().unwrap();
    assert_eq!(store.pending_versions().wait().unwrap()[0].handle, future);
    let done = store.complete_version("f", 1, &future).wait().unwrap();
    assert_eq!(done.version(1).unwrap().handle.kind(), "tpm2-pkcs11");
    assert_eq!(done.version(1).unwrap().handle.bytes(), b"object 7");
}

#[test]
fn list_matches_prefixes_literally() {
    let store = store();
    for name in ["b", "a%b", "a_c", "abc", "ab", "é/x", "A"] {
        create(&store, name);
    }
    store
        .begin_create(&new_key("abd"), &hsm("abd"))
        .wait()
        .unwrap();
    assert_eq!(
        names(&list_all(&store, "")),
        ["A", "a%b", "a_c", "ab", "abc", "b", "é/x"]
    );
    assert_eq!(names(&list_all(&store, "a%")), ["a%b"]);
    assert_eq!(names(&list_all(&store, "a_")), ["a_c"]);
    assert_eq!(names(&list_all(&store, "ab")), ["ab", "abc"]);
    assert_eq!(names(&list_all(&store, "é")), ["é/x"]);
    assert_eq!(names(&list_all(&store, "a")).len(), 4);
    assert!(list_all(&store, "abc/").is_empty());
    assert!(list_all(&store, "%").is_empty());
}

#[test]
fn pending_versions_lists_every_creating_version() {
    let store = store();
    create(&store, "a");
    let v2 = store.begin_version("a", &hsm("a/2"), 0).wait().unwrap();
    let tpm_key = NewKey {
        backend: TPM_BACKEND.into(),
        ..new_key("b")
    };
    let blob = HardwareHandle::new("tpm", vec![]);
    store.begin_create(&tpm_key, &blob).wait().unwrap();
    create(&store, "c");
    let pending = |name: &str, backend: &str, version, handle| PendingVersion {
        name: name.into(),
        backend: backend.into(),
        version,
        handle,
    };
    assert_eq!(
        store.pending_versions().wait().unwrap(),
        vec![
            pending("a", HSM_BACKEND, v2, hsm("a/2")),
            pending("b", TPM_BACKEND, 1, blob),
        ]
    );
}

#[test]
fn ca_versions_are_kept_in_order_replaced_by_number_and_dropped_by_age() {
    use crate::store::CaRecord;
    let store = SqliteStore::open_in_memory().unwrap();
    let record = |version: u32, certificate: &[u8]| CaRecord {
        version,
        backend: "hsm".into(),
        key_id: format!("kbsys:ca:{version}").into_bytes(),
        certificate: certificate.to_vec(),
        chain_pem: String::new(),
        created_at: 10,
        activates_at: 20,
    };
    assert!(store.ca_versions().wait().unwrap().is_empty());
    store.put_ca_version(&record(2, b"")).wait().unwrap();
    store.put_ca_version(&record(1, b"one")).wait().unwrap();
    // An intermediate CA's certificate, installed later, replaces the waiting row.
    store.put_ca_version(&record(2, b"two")).wait().unwrap();
    assert_eq!(
        store.ca_versions().wait().unwrap(),
        [record(1, b"one"), record(2, b"two")]
    );
    store.drop_ca_versions_before(2).wait().unwrap();
    assert_eq!(store.ca_versions().wait().unwrap(), [record(2, b"two")]);
}
