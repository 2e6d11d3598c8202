//! The lease table: renewal only while live, revocation kept, the sweep's list, listing by
//! role prefix.

use super::*;
use crate::store::{LeaseRecord, LeaseStore};

pub(super) fn lease(id: &str, role: &str, expires_at: i64) -> LeaseRecord {
    LeaseRecord {
        id: id.to_owned(),
        role: role.to_owned(),
        owner: "spiffe://td/w".to_owned(),
        handle: String::new(),
        created_at: 100,
        expires_at,
        max_expires_at: 1_000,
        revoked_at: None,
    }
}

#[test]
fn a_live_lease_renews_and_a_revoked_or_expired_one_does_not() {
    let store = store();
    store
        .create_lease(&lease("r/a", "r", 200), 100)
        .wait()
        .unwrap();
    store
        .create_lease(&lease("r/b", "r", 200), 100)
        .wait()
        .unwrap();
    let renewed = store.extend_lease("r/a", 500, 150).wait().unwrap();
    assert_eq!(renewed.expires_at, 500);
    // Expired at `now`: refused, unchanged.
    assert!(matches!(
        store.extend_lease("r/b", 900, 200).wait(),
        Err(StoreError::LeaseNotLive { why: "expired", .. })
    ));
    assert_eq!(store.lease("r/b").wait().unwrap().expires_at, 200);
    // Revoked: kept revoked at its first time, and refused.
    assert_eq!(
        store.revoke_lease("r/a", 160).wait().unwrap().revoked_at,
        Some(160)
    );
    assert_eq!(
        store.revoke_lease("r/a", 170).wait().unwrap().revoked_at,
        Some(160)
    );
    assert!(matches!(
        store.extend_lease("r/a", 900, 180).wait(),
        Err(StoreError::LeaseNotLive { why: "revoked", .. })
    ));
    assert!(matches!(
        store.lease("r/none").wait(),
        Err(StoreError::LeaseNotFound(_))
    ));
}

#[test]
fn the_sweep_gets_revoked_and_expired_leases_and_forgets_them() {
    let store = store();
    for (id, expires) in [("r/live", 900), ("r/old", 150), ("r/revoked", 900)] {
        store
            .create_lease(&lease(id, "r", expires), 100)
            .wait()
            .unwrap();
    }
    store.revoke_lease("r/revoked", 120).wait().unwrap();
    let due: Vec<String> = store
        .due_leases(200, 10)
        .wait()
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(due, ["r/revoked", "r/old"]);
    assert_eq!(store.due_leases(200, 1).wait().unwrap().len(), 1);
    for id in &due {
        store.forget_lease(id).wait().unwrap();
    }
    store.forget_lease("r/old").wait().unwrap();
    assert!(store.due_leases(200, 10).wait().unwrap().is_empty());
    assert_eq!(store.lease("r/live").wait().unwrap().expires_at, 900);
}

#[test]
fn a_role_is_revoked_at_once_and_leases_list_by_role_prefix() {
    let store = store();
    for (id, role) in [
        ("db/a/1", "db/a"),
        ("db/a/2", "db/a"),
        ("db/b/1", "db/b"),
        ("Db/1", "Db"),
    ] {
        store
            .create_lease(&lease(id, role, 900), 100)
            .wait()
            .unwrap();
    }
    assert_eq!(store.revoke_role_leases("db/a", 300).wait().unwrap(), 2);
    assert_eq!(store.revoke_role_leases("db/a", 301).wait().unwrap(), 0);
    let ids = |prefix: &str, after: &str| -> Vec<String> {
        store
            .list_leases(prefix, after, 10)
            .wait()
            .unwrap()
            .into_iter()
            .map(|l| l.id)
            .collect()
    };
    assert_eq!(ids("db/", ""), ["db/a/1", "db/a/2", "db/b/1"]);
    assert_eq!(ids("db/", "db/a/1"), ["db/a/2", "db/b/1"]);
    assert_eq!(ids("D", ""), ["Db/1"], "byte-wise, not case-folded");
}

#[test]
fn a_caller_holds_at_most_its_limit_of_live_leases_on_a_role() {
    let store = store();
    store
        .create_lease(&lease("r/1", "r", 900), 2)
        .wait()
        .unwrap();
    store
        .create_lease(&lease("r/2", "r", 900), 2)
        .wait()
        .unwrap();
    assert!(matches!(
        store.create_lease(&lease("r/3", "r", 900), 2).wait(),
        Err(StoreError::LeaseLimit { held: 2, .. })
    ));
    assert!(matches!(
        store.lease("r/3").wait(),
        Err(StoreError::LeaseNotFound(_))
    ));
    // Another role, or another caller, has its own count.
    store
        .create_lease(&lease("s/1", "s", 900), 2)
        .wait()
        .unwrap();
    let mut other = lease("r/4", "r", 900);
    other.owner = "spiffe://td/other".to_owned();
    store.create_lease(&other, 2).wait().unwrap();
    // A revoked or expired lease no longer counts.
    store.revoke_lease("r/1", 150).wait().unwrap();
    store
        .create_lease(&lease("r/5", "r", 900), 2)
        .wait()
        .unwrap();
    store
        .create_lease(&lease("r/6", "r", 90), 3)
        .wait()
        .unwrap();
    let mut later = lease("r/7", "r", 900);
    later.created_at = 95;
    store.create_lease(&later, 3).wait().unwrap();
}
