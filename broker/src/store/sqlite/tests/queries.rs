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
        .unwrap();
    assert!(store.due_for_destruction(99).unwrap().is_empty());
    assert_eq!(names(&store.due_for_destruction(100).unwrap()), ["a", "c"]);
    let due = store.due_for_destruction(1_000).unwrap();
    assert_eq!(names(&due), ["a", "b", "c"]);
    assert!(due.iter().all(|k| k.versions.len() == 1));
}

#[test]
fn known_handles_skip_destroyed_keys_and_retired_versions() {
    let store = store();
    create(&store, "a");
    rotate(&store, "a");
    store.retire_version("a", 1).unwrap();
    store.begin_version("a", &hsm("a/pending"), 0).unwrap();
    store
        .begin_create(&new_key("b"), &hsm("b/pending"))
        .unwrap();
    create(&store, "gone");
    store
        .set_state("gone", &[KeyState::Enabled], KeyState::Destroyed, None)
        .unwrap();
    create(&store, "revoked");
    store
        .set_state("revoked", &[KeyState::Enabled], KeyState::Revoked, None)
        .unwrap();
    store.add_backend(&hsm_backend("hsm-b")).unwrap();
    let other = NewKey {
        backend: "hsm-b".into(),
        ..new_key("other")
    };
    store.begin_create(&other, &hsm("other/1")).unwrap();

    let ids: Vec<Vec<u8>> = ["a/2", "a/pending", "b/pending", "revoked/1"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    assert_eq!(store.known_handles(HSM_BACKEND).unwrap(), ids);
    assert_eq!(
        store.known_handles("hsm-b").unwrap(),
        vec![b"other/1".to_vec()]
    );
    assert!(store.known_handles("nowhere").unwrap().is_empty());
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
    store.begin_create(&key, &blob(b"")).unwrap();
    assert_eq!(store.pending_versions().unwrap()[0].handle, blob(b""));
    let done = store.complete_version("t", 1, &blob(&[0, 1, 255])).unwrap();
    assert_eq!(done.version(1).unwrap().handle, blob(&[0, 1, 255]));
    assert_eq!(
        (done.algorithm, done.purpose),
        (Algorithm::Rsa2048, Purpose::EncryptDecrypt)
    );
    assert_eq!(store.known_handles(TPM_BACKEND).unwrap(), [vec![0, 1, 255]]);
}

/// The store keeps a handle of a kind it has never heard of as it is: a new backend kind
/// needs no store change.
#[test]
fn handles_of_any_kind_round_trip() {
    let store = store();
    let future = HardwareHandle::new("tpm2-pkcs11", b"object 7".to_vec());
    store.begin_create(&new_key("f"), &future).unwrap();
    assert_eq!(store.pending_versions().unwrap()[0].handle, future);
    let done = store.complete_version("f", 1, &future).unwrap();
    assert_eq!(done.version(1).unwrap().handle.kind(), "tpm2-pkcs11");
    assert_eq!(done.version(1).unwrap().handle.bytes(), b"object 7");
}

#[test]
fn list_matches_prefixes_literally() {
    let store = store();
    for name in ["b", "a%b", "a_c", "abc", "ab", "é/x", "A"] {
        create(&store, name);
    }
    store.begin_create(&new_key("abd"), &hsm("abd")).unwrap();
    assert_eq!(
        names(&store.list("").unwrap()),
        ["A", "a%b", "a_c", "ab", "abc", "b", "é/x"]
    );
    assert_eq!(names(&store.list("a%").unwrap()), ["a%b"]);
    assert_eq!(names(&store.list("a_").unwrap()), ["a_c"]);
    assert_eq!(names(&store.list("ab").unwrap()), ["ab", "abc"]);
    assert_eq!(names(&store.list("é").unwrap()), ["é/x"]);
    assert_eq!(names(&store.list("a").unwrap()).len(), 4);
    assert!(store.list("abc/").unwrap().is_empty());
    assert!(store.list("%").unwrap().is_empty());
}

#[test]
fn pending_versions_lists_every_creating_version() {
    let store = store();
    create(&store, "a");
    let v2 = store.begin_version("a", &hsm("a/2"), 0).unwrap();
    let tpm_key = NewKey {
        backend: TPM_BACKEND.into(),
        ..new_key("b")
    };
    let blob = HardwareHandle::new("tpm", vec![]);
    store.begin_create(&tpm_key, &blob).unwrap();
    create(&store, "c");
    let pending = |name: &str, backend: &str, version, handle| PendingVersion {
        name: name.into(),
        backend: backend.into(),
        version,
        handle,
    };
    assert_eq!(
        store.pending_versions().unwrap(),
        vec![
            pending("a", HSM_BACKEND, v2, hsm("a/2")),
            pending("b", TPM_BACKEND, 1, blob),
        ]
    );
}
