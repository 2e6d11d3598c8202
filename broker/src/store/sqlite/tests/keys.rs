//! The key lifecycle: creation, versions, states, and the queries over them.

use super::*;
use crate::store::{PendingVersion, VersionState};

#[test]
fn created_key_is_invisible_until_version_1_completes() {
    let store = store();
    store
        .begin_create(&new_key("k"), &hsm("intent"))
        .wait()
        .unwrap();
    assert_eq!(store.get("k").wait().unwrap(), None);
    assert!(list_all(&store, "").is_empty());
    assert_eq!(
        store.pending_versions().wait().unwrap(),
        vec![PendingVersion {
            name: "k".into(),
            backend: HSM_BACKEND.into(),
            version: 1,
            handle: hsm("intent"),
        }]
    );

    let done = store
        .complete_version("k", 1, &hsm("final"))
        .wait()
        .unwrap();
    assert_eq!(done.state, KeyState::Enabled);
    assert_eq!(done.primary_version, 1);
    assert_eq!(done.algorithm, Algorithm::EcP256);
    assert_eq!(done.purpose, Purpose::SignVerify);
    assert_eq!(done.backend, HSM_BACKEND);
    assert_eq!(done.created_at, 1_000);
    assert_eq!(done.destroy_after, None);
    assert_eq!(done.tags, new_key("k").tags);
    assert_eq!(done.versions.len(), 1);
    let v1 = done.version(1).unwrap();
    assert_eq!(
        (v1.state, &v1.handle, v1.created_at),
        (VersionState::Active, &hsm("final"), 1_000)
    );
    assert_eq!(store.get("k").wait().unwrap(), Some(done));
    assert!(store.pending_versions().wait().unwrap().is_empty());
}

#[test]
fn names_are_never_reused() {
    let store = store();
    store
        .begin_create(&new_key("creating"), &hsm("c"))
        .wait()
        .unwrap();
    create(&store, "enabled");
    create(&store, "destroyed");
    let all = [KeyState::Enabled, KeyState::PendingDestruction];
    store
        .set_state("destroyed", &all, KeyState::PendingDestruction, Some(5))
        .wait()
        .unwrap();
    store
        .set_state("destroyed", &all, KeyState::Destroyed, None)
        .wait()
        .unwrap();
    for name in ["creating", "enabled", "destroyed"] {
        match store.begin_create(&new_key(name), &hsm("again")).wait() {
            Err(StoreError::KeyExists(n)) => assert_eq!(n, name),
            other => panic!("{name}: {other:?}"),
        }
    }
    // The failed attempts changed nothing.
    assert_eq!(
        store
            .get("destroyed")
            .wait()
            .unwrap()
            .unwrap()
            .versions
            .len(),
        1
    );
    assert_eq!(store.pending_versions().wait().unwrap().len(), 1);
}

#[test]
fn begin_create_needs_a_registered_backend() {
    let store = store();
    let key = NewKey {
        backend: "nowhere".into(),
        ..new_key("k")
    };
    match store.begin_create(&key, &hsm("x")).wait() {
        Err(StoreError::Database(m)) => {
            assert!(m.starts_with("begin_create: "), "{m}");
            assert!(m.contains("nowhere"), "{m}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn abandoning_version_1_removes_the_key() {
    let store = store();
    store.begin_create(&new_key("k"), &hsm("x")).wait().unwrap();
    store.abandon_version("k", 1).wait().unwrap();
    assert!(store.pending_versions().wait().unwrap().is_empty());
    assert!(matches!(
        store.complete_version("k", 1, &hsm("x")).wait(),
        Err(StoreError::KeyNotFound(_))
    ));
    // The key never existed for callers, so its name was never used.
    let key = create(&store, "k");
    assert_eq!(key.tags, new_key("k").tags);
}

#[test]
fn abandoning_a_later_version_keeps_the_key() {
    let store = store();
    create(&store, "k");
    let v2 = store.begin_version("k", &hsm("k/2"), 2_000).wait().unwrap();
    assert_eq!(v2, 2);
    let pending = store.pending_versions().wait().unwrap();
    assert_eq!(
        pending,
        vec![PendingVersion {
            name: "k".into(),
            backend: HSM_BACKEND.into(),
            version: 2,
            handle: hsm("k/2"),
        }]
    );
    // A pending version is not the primary, but get shows it.
    let key = store.get("k").wait().unwrap().unwrap();
    assert_eq!(key.primary_version, 1);
    assert_eq!(key.version(2).unwrap().state, VersionState::Creating);

    store.abandon_version("k", 2).wait().unwrap();
    let key = store.get("k").wait().unwrap().unwrap();
    assert_eq!((key.state, key.primary_version), (KeyState::Enabled, 1));
    assert_eq!(key.versions.len(), 1);
    assert!(store.pending_versions().wait().unwrap().is_empty());
}

#[test]
fn abandon_version_errors() {
    let store = store();
    create(&store, "k");
    assert!(matches!(
        store.abandon_version("missing", 1).wait(),
        Err(StoreError::KeyNotFound(n)) if n == "missing"
    ));
    assert!(matches!(
        store.abandon_version("k", 7).wait(),
        Err(StoreError::VersionNotFound { name, version: 7 }) if name == "k"
    ));
    assert_conflict(store.abandon_version("k", 1).wait(), "k", KeyState::Enabled);
    assert_eq!(store.get("k").wait().unwrap().unwrap().versions.len(), 1);
}

#[test]
fn rotation_allocates_2_3_and_makes_each_primary() {
    let store = store();
    create(&store, "k");
    assert_eq!(rotate(&store, "k"), 2);
    assert_eq!(rotate(&store, "k"), 3);
    let key = store.get("k").wait().unwrap().unwrap();
    assert_eq!(key.primary_version, 3);
    let versions: Vec<_> = key.versions.iter().map(|v| (v.version, v.state)).collect();
    assert_eq!(
        versions,
        [1, 2, 3].map(|v| (v, VersionState::Active)).to_vec()
    );
    assert_eq!(key.version(3).unwrap().handle, hsm("k/3"));
    assert_eq!(key.version(3).unwrap().created_at, 2_000);
}

#[test]
fn begin_version_needs_an_enabled_key() {
    let store = store();
    assert!(matches!(
        store.begin_version("missing", &hsm("x"), 0).wait(),
        Err(StoreError::KeyNotFound(_))
    ));
    store
        .begin_create(&new_key("creating"), &hsm("c"))
        .wait()
        .unwrap();
    assert_conflict(
        store.begin_version("creating", &hsm("x"), 0).wait(),
        "creating",
        KeyState::Creating,
    );
    create(&store, "k");
    store
        .set_state("k", &[KeyState::Enabled], KeyState::Disabled, None)
        .wait()
        .unwrap();
    match store.begin_version("k", &hsm("x"), 0).wait() {
        Err(StoreError::StateConflict {
            actual, expected, ..
        }) => assert_eq!((actual, expected.as_str()), (KeyState::Disabled, "Enabled")),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.get("k").wait().unwrap().unwrap().versions.len(), 1);
}

#[test]
fn complete_version_errors() {
    let store = store();
    assert!(matches!(
        store.complete_version("missing", 1, &hsm("x")).wait(),
        Err(StoreError::KeyNotFound(_))
    ));
    create(&store, "k");
    assert!(matches!(
        store.complete_version("k", 2, &hsm("x")).wait(),
        Err(StoreError::VersionNotFound { version: 2, .. })
    ));
    // Already active.
    assert_conflict(
        store.complete_version("k", 1, &hsm("x")).wait(),
        "k",
        KeyState::Enabled,
    );
    // A rotation loses to a disable that happened meanwhile.
    let v2 = store.begin_version("k", &hsm("k/2"), 0).wait().unwrap();
    store
        .set_state("k", &[KeyState::Enabled], KeyState::Disabled, None)
        .wait()
        .unwrap();
    assert_conflict(
        store.complete_version("k", v2, &hsm("x")).wait(),
        "k",
        KeyState::Disabled,
    );
    let key = store.get("k").wait().unwrap().unwrap();
    assert_eq!(key.primary_version, 1);
    assert_eq!(key.version(1).unwrap().handle, hsm("k/1"));
}

#[test]
fn set_state_is_compare_and_set() {
    let store = store();
    assert!(matches!(
        store
            .set_state("missing", &[KeyState::Enabled], KeyState::Disabled, None)
            .wait(),
        Err(StoreError::KeyNotFound(_))
    ));
    create(&store, "k");
    let key = store
        .set_state("k", &[KeyState::Enabled], KeyState::Disabled, None)
        .wait()
        .unwrap();
    assert_eq!(key.state, KeyState::Disabled);
    match store
        .set_state(
            "k",
            &[KeyState::Enabled, KeyState::Revoked],
            KeyState::Revoked,
            None,
        )
        .wait()
    {
        Err(StoreError::StateConflict {
            name,
            actual,
            expected,
        }) => {
            assert_eq!(name, "k");
            assert_eq!(actual, KeyState::Disabled);
            assert_eq!(expected, "Enabled, Revoked");
        }
        other => panic!("{other:?}"),
    }
    assert_conflict(
        store.set_state("k", &[], KeyState::Enabled, None).wait(),
        "k",
        KeyState::Disabled,
    );
    let pending = store
        .set_state(
            "k",
            &[KeyState::Disabled],
            KeyState::PendingDestruction,
            Some(99),
        )
        .wait()
        .unwrap();
    assert_eq!(pending.destroy_after, Some(99));
    assert_eq!(store.get("k").wait().unwrap(), Some(pending));
    let back = store
        .set_state(
            "k",
            &[KeyState::PendingDestruction],
            KeyState::Disabled,
            None,
        )
        .wait()
        .unwrap();
    assert_eq!((back.state, back.destroy_after), (KeyState::Disabled, None));
}

#[test]
fn retire_version_refuses_the_primary_and_inactive_versions() {
    let store = store();
    assert!(matches!(
        store.retire_version("missing", 1).wait(),
        Err(StoreError::KeyNotFound(_))
    ));
    create(&store, "k");
    rotate(&store, "k");
    assert_conflict(store.retire_version("k", 2).wait(), "k", KeyState::Enabled);
    assert!(matches!(
        store.retire_version("k", 9).wait(),
        Err(StoreError::VersionNotFound { version: 9, .. })
    ));
    let key = store.retire_version("k", 1).wait().unwrap();
    assert_eq!(key.version(1).unwrap().state, VersionState::Retired);
    assert_eq!(key.version(2).unwrap().state, VersionState::Active);
    assert_eq!(store.get("k").wait().unwrap(), Some(key));
    assert_conflict(store.retire_version("k", 1).wait(), "k", KeyState::Enabled);
    // A pending version is not active.
    let v3 = store.begin_version("k", &hsm("k/3"), 0).wait().unwrap();
    assert_conflict(store.retire_version("k", v3).wait(), "k", KeyState::Enabled);
}

#[test]
fn concurrent_rotations_get_distinct_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    // Two stores on one file, as the broker and the CLI would be: the write lock and the
    // busy timeout, not the mutex, keep them apart.
    let stores = [
        SqliteStore::open(&path).unwrap(),
        SqliteStore::open(&path).unwrap(),
    ];
    add_backends(&stores[0]);
    create(&stores[1], "k");
    let mut versions: Vec<u32> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|i| {
                let store = &stores[i % 2];
                scope.spawn(move || {
                    (0..25)
                        .map(|_| store.begin_version("k", &hsm("k/n"), 0).wait().unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    versions.sort_unstable();
    assert_eq!(versions, (2..=101).collect::<Vec<_>>());
    assert_eq!(stores[0].pending_versions().wait().unwrap().len(), 100);
}
