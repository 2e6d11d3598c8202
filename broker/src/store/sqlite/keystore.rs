//! [`KeyStore`] for [`SqliteStore`]: each method is one transaction, and every state
//! change checks the current state inside it (compare-and-set). Each copies its
//! arguments into the request it queues (`sqlite/worker.rs`), so none borrows from the
//! caller while a store thread runs it.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use rusqlite::{Connection, OptionalExtension, params};

use super::rows::{self, Text, handle_parts, load_key, seal_key, select_keys};
use super::{Sql, SqliteStore, backend_rows, ca_rows, is_unique_violation, listing};
use crate::store::{
    BackendRecord, CaRecord, HardwareHandle, KeyPage, KeyQuery, KeyRecord, KeyState, KeyStore,
    NewKey, PendingVersion, Result, StoreCall, StoreError, VersionState,
};

/// A lost compare-and-set.
fn conflict(name: &str, actual: KeyState, expected: String) -> StoreError {
    StoreError::StateConflict {
        name: name.to_owned(),
        actual,
        expected,
    }
}

/// Succeeds if `actual` is one of `expected`.
fn require(name: &str, actual: KeyState, expected: &[KeyState]) -> Result<()> {
    if expected.contains(&actual) {
        return Ok(());
    }
    let expected: Vec<String> = expected.iter().map(|s| format!("{s:?}")).collect();
    let expected = match expected.is_empty() {
        true => "(none)".to_owned(),
        false => expected.join(", "),
    };
    Err(conflict(name, actual, expected))
}

/// A version in the wrong state. [`StoreError`] has no variant for versions: this is a
/// [`StoreError::StateConflict`] whose `expected` names the version.
fn require_version(
    name: &str,
    key: KeyState,
    version: u32,
    actual: VersionState,
    expected: VersionState,
) -> Result<()> {
    if actual == expected {
        return Ok(());
    }
    Err(conflict(
        name,
        key,
        format!("version {version} to be {expected:?} (it is {actual:?})"),
    ))
}

fn insert_version(
    tx: &Connection,
    name: &str,
    version: u32,
    handle: &HardwareHandle,
    created_at: i64,
) -> Result<()> {
    let (kind, bytes) = handle_parts(handle);
    tx.execute(
        "INSERT INTO key_versions (key_name, version, state, handle_kind, handle, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            name,
            version,
            VersionState::Creating.text(),
            kind,
            bytes,
            created_at
        ],
    )
    .sql()?;
    Ok(())
}

/// The state of `key`'s version `version`.
fn version_state(key: &KeyRecord, version: u32) -> Result<VersionState> {
    key.version(version)
        .map(|v| v.state)
        .ok_or_else(|| StoreError::VersionNotFound {
            name: key.name.clone(),
            version,
        })
}

impl KeyStore for SqliteStore {
    /// Also fails with [`StoreError::Database`] if `key.backend` is not registered.
    fn begin_create(&self, key: &NewKey, handle: &HardwareHandle) -> StoreCall<()> {
        let (key, handle) = (key.clone(), handle.clone());
        self.write("begin_create", move |tx| {
            let registered = tx
                .query_row(
                    "SELECT 1 FROM backends WHERE name = ?1",
                    [&key.backend],
                    |_| Ok(()),
                )
                .optional()
                .sql()?;
            if registered.is_none() {
                return Err(StoreError::Database(format!(
                    "backend {:?} is not registered",
                    key.backend
                )));
            }
            let inserted = tx.execute(
                "INSERT INTO keys (name, algorithm, purpose, backend, state, primary_version, \
                 created_at, destroy_after, releasable) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, NULL, ?7)",
                params![
                    key.name,
                    key.algorithm.text(),
                    key.purpose.text(),
                    key.backend,
                    KeyState::Creating.text(),
                    key.created_at,
                    key.releasable
                ],
            );
            match inserted {
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::KeyExists(key.name.clone()));
                }
                other => other.sql()?,
            };
            let mut tag = tx
                .prepare_cached("INSERT INTO key_tags (key_name, tag, value) VALUES (?1, ?2, ?3)")
                .sql()?;
            for (name, value) in &key.tags {
                tag.execute(params![key.name, name, value]).sql()?;
            }
            insert_version(tx, &key.name, 1, &handle, key.created_at)?;
            seal_key(tx, &key.name).map(drop)
        })
    }

    fn begin_version(
        &self,
        name: &str,
        handle: &HardwareHandle,
        created_at: i64,
    ) -> StoreCall<u32> {
        let (name, handle) = (name.to_owned(), handle.clone());
        self.write("begin_version", move |tx| {
            require(&name, load_key(tx, &name)?.state, &[KeyState::Enabled])?;
            let next: u32 = tx
                .query_row(
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM key_versions WHERE key_name = ?1",
                    [&name],
                    |row| row.get(0),
                )
                .sql()?;
            insert_version(tx, &name, next, &handle, created_at)?;
            seal_key(tx, &name)?;
            Ok(next)
        })
    }

    /// The key must be `Creating` or `Enabled` (a rotation loses to a concurrent
    /// disable) and the version `Creating`; otherwise [`StoreError::StateConflict`].
    fn complete_version(
        &self,
        name: &str,
        version: u32,
        handle: &HardwareHandle,
    ) -> StoreCall<KeyRecord> {
        let (name, handle) = (name.to_owned(), handle.clone());
        self.write("complete_version", move |tx| {
            let key = load_key(tx, &name)?;
            let (state, current) = (key.state, version_state(&key, version)?);
            require(&name, state, &[KeyState::Creating, KeyState::Enabled])?;
            require_version(&name, state, version, current, VersionState::Creating)?;
            let (kind, bytes) = handle_parts(&handle);
            tx.execute(
                "UPDATE key_versions SET state = ?3, handle_kind = ?4, handle = ?5 \
                 WHERE key_name = ?1 AND version = ?2",
                params![name, version, VersionState::Active.text(), kind, bytes],
            )
            .sql()?;
            tx.execute(
                "UPDATE keys SET primary_version = ?2, \
                 state = CASE WHEN state = ?3 THEN ?4 ELSE state END WHERE name = ?1",
                params![
                    name,
                    version,
                    KeyState::Creating.text(),
                    KeyState::Enabled.text()
                ],
            )
            .sql()?;
            seal_key(tx, &name)
        })
    }

    /// The version must be `Creating`; otherwise [`StoreError::StateConflict`].
    fn abandon_version(&self, name: &str, version: u32) -> StoreCall<()> {
        let name = name.to_owned();
        self.write("abandon_version", move |tx| {
            let key = load_key(tx, &name)?;
            let (state, current) = (key.state, version_state(&key, version)?);
            require_version(&name, state, version, current, VersionState::Creating)?;
            if version == 1 {
                tx.execute("DELETE FROM key_tags WHERE key_name = ?1", [&name])
                    .sql()?;
                tx.execute("DELETE FROM key_versions WHERE key_name = ?1", [&name])
                    .sql()?;
                tx.execute("DELETE FROM keys WHERE name = ?1", [&name])
                    .sql()?;
            } else {
                tx.execute(
                    "DELETE FROM key_versions WHERE key_name = ?1 AND version = ?2",
                    params![name, version],
                )
                .sql()?;
                seal_key(tx, &name)?;
            }
            Ok(())
        })
    }

    fn pending_versions(&self) -> StoreCall<Vec<PendingVersion>> {
        self.read("pending_versions", rows::pending_versions)
    }

    fn get(&self, name: &str) -> StoreCall<Option<KeyRecord>> {
        let name = name.to_owned();
        self.read("get", move |tx| {
            let filter = "name = ?1 AND state <> ?2";
            let keys = select_keys(tx, filter, params![name, KeyState::Creating.text()])?;
            Ok(keys.into_iter().next())
        })
    }

    fn list(&self, query: &KeyQuery) -> StoreCall<KeyPage> {
        let query = query.clone();
        self.read("list", move |tx| listing::page(tx, &query))
    }

    fn count_keys_by_backend(&self) -> StoreCall<BTreeMap<String, u64>> {
        self.read("count_keys_by_backend", |tx| listing::count_by_backend(tx))
    }

    fn set_state(
        &self,
        name: &str,
        expected: &[KeyState],
        new: KeyState,
        destroy_after: Option<i64>,
    ) -> StoreCall<KeyRecord> {
        let (name, expected) = (name.to_owned(), expected.to_vec());
        self.write("set_state", move |tx| {
            require(&name, load_key(tx, &name)?.state, &expected)?;
            tx.execute(
                "UPDATE keys SET state = ?2, destroy_after = ?3 WHERE name = ?1",
                params![name, new.text(), destroy_after],
            )
            .sql()?;
            seal_key(tx, &name)
        })
    }

    /// Refusals (the primary, or a version not `Active`) are
    /// [`StoreError::StateConflict`].
    fn retire_version(&self, name: &str, version: u32) -> StoreCall<KeyRecord> {
        let name = name.to_owned();
        self.write("retire_version", move |tx| {
            let key = load_key(tx, &name)?;
            let current = key
                .version(version)
                .ok_or_else(|| StoreError::VersionNotFound {
                    name: name.clone(),
                    version,
                })?;
            if version == key.primary_version {
                let expected = format!("version {version} not to be the primary version");
                return Err(conflict(&name, key.state, expected));
            }
            require_version(
                &name,
                key.state,
                version,
                current.state,
                VersionState::Active,
            )?;
            tx.execute(
                "UPDATE key_versions SET state = ?3 WHERE key_name = ?1 AND version = ?2",
                params![name, version, VersionState::Retired.text()],
            )
            .sql()?;
            seal_key(tx, &name)
        })
    }

    fn due_for_destruction(&self, now: i64) -> StoreCall<Vec<KeyRecord>> {
        self.read("due_for_destruction", move |tx| {
            let filter = "state IN (?1, ?2) AND destroy_after IS NOT NULL AND destroy_after <= ?3";
            select_keys(
                tx,
                filter,
                params![
                    KeyState::PendingDestruction.text(),
                    KeyState::Revoked.text(),
                    now
                ],
            )
        })
    }

    fn known_handles(&self, backend: &str) -> StoreCall<Vec<Vec<u8>>> {
        let backend = backend.to_owned();
        self.read("known_handles", move |tx| {
            // Every key read whole and checked, whatever its backend: a handle or a
            // backend edited into the file must not make a hardware object look known,
            // or another look orphaned.
            let keys = select_keys(tx, "state <> ?1", params![KeyState::Destroyed.text()])?;
            Ok(keys
                .into_iter()
                .filter(|key| key.backend == backend)
                .flat_map(|key| key.versions)
                .filter(|v| v.state != VersionState::Retired)
                .map(|v| v.handle.bytes().to_vec())
                .collect())
        })
    }

    fn add_backend(&self, backend: &BackendRecord) -> StoreCall<()> {
        if let Err(e) = backend_rows::validate_backend(backend) {
            return StoreCall::ready(Err(e));
        }
        let backend = backend.clone();
        self.write("add_backend", move |tx| {
            backend_rows::insert_backend(tx, &backend)
        })
    }

    fn backends(&self) -> StoreCall<Vec<BackendRecord>> {
        self.read("backends", backend_rows::backends)
    }

    fn set_policy(&self, text: &str) -> StoreCall<()> {
        let text = text.to_owned();
        self.write("set_policy", move |tx| backend_rows::set_policy(tx, &text))
    }

    fn policy(&self) -> StoreCall<Option<String>> {
        self.read("policy", backend_rows::policy)
    }

    fn ca_versions(&self) -> StoreCall<Vec<CaRecord>> {
        self.read("ca_versions", ca_rows::select)
    }

    fn put_ca_version(&self, record: &CaRecord) -> StoreCall<()> {
        let record = record.clone();
        self.write("put_ca_version", move |tx| ca_rows::upsert(tx, &record))
    }

    fn drop_ca_versions_before(&self, version: u32) -> StoreCall<()> {
        self.write("drop_ca_versions_before", move |tx| {
            ca_rows::delete_before(tx, version)
        })
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}
