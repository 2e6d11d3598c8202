//! Tests of [`SqliteStore`]: the trait's contract, the schema, and durability.

mod durability;
mod integrity;
mod keys;
mod leases;
mod listing;
mod queries;
mod schema;
mod secrets;

use std::collections::BTreeMap;

use rusqlite::Connection;

use super::SqliteStore;
use crate::store::page::MAX_PAGE_SIZE;
use crate::store::{
    Algorithm, BackendRecord, HardwareHandle, KeyQuery, KeyRecord, KeyState, KeyStore, NewKey,
    Purpose, StoreError,
};

/// The HSM backend every test key lives in unless it says otherwise.
const HSM_BACKEND: &str = "hsm-a";
/// A TPM backend.
const TPM_BACKEND: &str = "tpm-a";

fn hsm_backend(name: &str) -> BackendRecord {
    BackendRecord::Hsm {
        name: name.to_owned(),
        module_path: "/usr/lib/softhsm/libsofthsm2.so".to_owned(),
        token_label: "keybroker".to_owned(),
        user_pin_file: Some("/etc/keybroker/pin".to_owned()),
        user_pin_env: None,
    }
}

fn tpm_backend(name: &str) -> BackendRecord {
    BackendRecord::Tpm {
        name: name.to_owned(),
        tcti: "device:/dev/tpmrm0".to_owned(),
    }
}

/// Runs `f` on the writer's connection, outside any transaction: to inspect the file or
/// tamper with it as a newer broker or an editor might.
fn on_writer<T: Send + 'static>(
    store: &SqliteStore,
    f: impl FnOnce(&Connection) -> T + Send + 'static,
) -> T {
    store.writer.submit(move |conn| Ok(f(conn))).wait().unwrap()
}

/// A query for every key whose name starts with `prefix`, on one page.
fn query(prefix: &str) -> KeyQuery {
    KeyQuery {
        prefix: prefix.to_owned(),
        tags: BTreeMap::new(),
        after: None,
        page_size: MAX_PAGE_SIZE,
    }
}

/// Every key whose name starts with `prefix` (tests hold less than a page).
fn list_all(store: &SqliteStore, prefix: &str) -> Vec<KeyRecord> {
    let page = store.list(&query(prefix)).wait().unwrap();
    assert!(!page.more);
    page.keys
}

/// Registers the two test backends.
fn add_backends(store: &SqliteStore) {
    store.add_backend(&hsm_backend(HSM_BACKEND)).wait().unwrap();
    store.add_backend(&tpm_backend(TPM_BACKEND)).wait().unwrap();
}

/// An in-memory store with the test backends, protected by a store key: every test of
/// the store's contract also shows that its writes keep every row's MAC valid.
fn store() -> SqliteStore {
    let store = unprotected_store();
    store
        .protect(integrity::stored(), integrity::row_key(1))
        .wait()
        .unwrap();
    store
}

/// An in-memory store with the test backends, without a store key.
fn unprotected_store() -> SqliteStore {
    let store = SqliteStore::open_in_memory().unwrap();
    add_backends(&store);
    store
}

fn new_key(name: &str) -> NewKey {
    NewKey {
        name: name.to_owned(),
        algorithm: Algorithm::EcP256,
        purpose: Purpose::SignVerify,
        backend: HSM_BACKEND.to_owned(),
        tags: BTreeMap::from([
            ("team".to_owned(), "payments".to_owned()),
            ("env".to_owned(), "prod".to_owned()),
        ]),
        created_at: 1_000,
        releasable: false,
    }
}

fn hsm(id: &str) -> HardwareHandle {
    HardwareHandle::new("hsm", id.as_bytes().to_vec())
}

/// Creates and completes version 1 of an HSM key.
fn create(store: &SqliteStore, name: &str) -> KeyRecord {
    store
        .begin_create(&new_key(name), &hsm(&format!("{name}/1")))
        .wait()
        .unwrap();
    store
        .complete_version(name, 1, &hsm(&format!("{name}/1")))
        .wait()
        .unwrap()
}

/// Adds and completes the next version, returning its number.
fn rotate(store: &SqliteStore, name: &str) -> u32 {
    let version = store
        .begin_version(name, &hsm(&format!("{name}/next")), 2_000)
        .wait()
        .unwrap();
    store
        .complete_version(name, version, &hsm(&format!("{name}/{version}")))
        .wait()
        .unwrap();
    version
}

/// Asserts a [`StoreError::StateConflict`] on `name` with `actual`.
#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(
    result: Result<T, StoreError>,
    name: &str,
    actual: KeyState,
) {
    match result {
        Err(StoreError::StateConflict {
            name: n, actual: a, ..
        }) => {
            assert_eq!((n.as_str(), a), (name, actual));
        }
        other => panic!("expected a StateConflict on {name:?} ({actual:?}), got {other:?}"),
    }
}

fn names(keys: &[KeyRecord]) -> Vec<&str> {
    keys.iter().map(|k| k.name.as_str()).collect()
}
