//! The secret tables: versions in order, the newest enabled one, races, deletion, and
//! listing by prefix, byte-wise.

use super::*;
use crate::store::{SecretStore, SecretVersionRecord};

fn version(name: &str, version: u32) -> SecretVersionRecord {
    SecretVersionRecord {
        name: name.to_owned(),
        version,
        enabled: true,
        kek: "hsm-a:kbsys:secrets:kek:1".to_owned(),
        wrapped_dek: vec![1; 60],
        nonce: vec![2; 12],
        ciphertext: vec![3; 20],
        created_at: 1_000 + i64::from(version),
    }
}

#[test]
fn versions_follow_each_other_and_the_newest_enabled_one_is_released() {
    let store = store();
    store.create_secret("db", &version("db", 1)).wait().unwrap();
    assert!(matches!(
        store.create_secret("again", &version("db", 1)).wait(),
        Err(StoreError::SecretExists(_))
    ));
    store.add_secret_version(&version("db", 2)).wait().unwrap();
    // A writer that read version 1 as the newest loses: version 2 is taken.
    assert!(matches!(
        store.add_secret_version(&version("db", 2)).wait(),
        Err(StoreError::SecretVersionRace { version: 2, .. })
    ));
    assert!(matches!(
        store.add_secret_version(&version("db", 4)).wait(),
        Err(StoreError::SecretVersionRace { version: 4, .. })
    ));
    assert_eq!(store.latest_secret_version("db").wait().unwrap(), 2);
    assert_eq!(store.secret_version("db", None).wait().unwrap().version, 2);

    let disabled = store
        .set_secret_version_enabled("db", 2, false)
        .wait()
        .unwrap();
    assert!(!disabled.enabled);
    assert_eq!(store.secret_version("db", None).wait().unwrap().version, 1);
    assert!(!store.secret_version("db", Some(2)).wait().unwrap().enabled);
    store
        .set_secret_version_enabled("db", 1, false)
        .wait()
        .unwrap();
    assert!(matches!(
        store.secret_version("db", None).wait(),
        Err(StoreError::SecretVersionNotFound { version: None, .. })
    ));
    assert!(matches!(
        store.set_secret_version_enabled("db", 9, true).wait(),
        Err(StoreError::SecretVersionNotFound {
            version: Some(9),
            ..
        })
    ));
    assert!(matches!(
        store.secret_version("nope", None).wait(),
        Err(StoreError::SecretNotFound(_))
    ));
    assert!(matches!(
        store.add_secret_version(&version("nope", 1)).wait(),
        Err(StoreError::SecretNotFound(_))
    ));
}

#[test]
fn deleting_a_secret_deletes_its_wrapped_keys() {
    let store = store();
    store.create_secret("", &version("db", 1)).wait().unwrap();
    store.add_secret_version(&version("db", 2)).wait().unwrap();
    store.delete_secret("db").wait().unwrap();
    assert!(matches!(
        store.delete_secret("db").wait(),
        Err(StoreError::SecretNotFound(_))
    ));
    let rows: i64 = on_writer(&store, |conn| {
        conn.query_row("SELECT COUNT(*) FROM secret_versions", [], |r| r.get(0))
            .unwrap()
    });
    assert_eq!(rows, 0);
    // The name can be used again, from version 1.
    store.create_secret("", &version("db", 1)).wait().unwrap();
}

#[test]
fn listing_is_by_name_after_a_cursor_with_a_byte_wise_prefix() {
    let store = store();
    for name in ["app/a", "app/b", "App/c", "app_x", "other"] {
        store.create_secret(name, &version(name, 1)).wait().unwrap();
    }
    store
        .add_secret_version(&version("app/b", 2))
        .wait()
        .unwrap();
    let names = |prefix: &str, after: &str, limit: usize| -> Vec<String> {
        store
            .list_secrets(prefix, after, limit)
            .wait()
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect()
    };
    assert_eq!(names("app/", "", 10), ["app/a", "app/b"]);
    assert_eq!(names("app", "", 10), ["app/a", "app/b", "app_x"]);
    assert_eq!(names("", "", 2), ["App/c", "app/a"]);
    assert_eq!(names("", "app/a", 10), ["app/b", "app_x", "other"]);
    let listed = store.list_secrets("app/b", "", 10).wait().unwrap();
    assert_eq!(listed[0].description, "app/b");
    let versions: Vec<u32> = listed[0].versions.iter().map(|v| v.version).collect();
    assert_eq!(versions, [1, 2]);
}
