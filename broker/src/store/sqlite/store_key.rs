//! The `store_key` table (`migrations/0006_store_key.sql`) and the store's protection:
//! [`SqliteStore::protect`] records a new store key and MACs every row once;
//! [`SqliteStore::unlock`] starts checking rows with a store key that the hardware
//! unwrapped (`crate::store_key` does both with the backend).

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::{Rows, Sql, SqliteStore, backend_rows, ca_rows, lease_rows, rows, secret_rows};
use crate::store::integrity::{Guard, RowKey};
use crate::store::{HardwareHandle, Result, StoreCall, StoreError};

/// The store key as the database keeps it: wrapped by, or sealed to, hardware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredStoreKey {
    /// The configured backend that holds the key-encryption key.
    pub backend: String,
    /// The key-encryption key: an HSM object's id, or a TPM's PCR policy.
    pub kek: HardwareHandle,
    /// The sealed format's kek kind code of the wrapping.
    pub wrapping: u8,
    pub wrapped: Vec<u8>,
    pub created_at: i64,
}

/// How many rows [`SqliteStore::protect`] MACed, by table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tagged {
    pub keys: u64,
    /// Backends and the policy.
    pub settings: u64,
    pub ca_versions: u64,
    pub secret_versions: u64,
    pub leases: u64,
}

/// What [`SqliteStore::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// Rows read: keys (each with its tags and versions), backends, the policy, CA
    /// versions, secret versions and leases.
    pub rows: u64,
    /// Why each refused row was refused (`the stored key "a" fails ...`), in table order.
    pub refused: Vec<String>,
}

/// Whether the database holds a store key.
pub(super) fn exists(conn: &Connection) -> Result<bool> {
    Ok(read(conn)?.is_some())
}

fn read(conn: &Connection) -> Result<Option<StoredStoreKey>> {
    conn.query_row(
        "SELECT backend, kek_kind, kek, wrapping, wrapped, created_at FROM store_key \
         WHERE id = 1",
        [],
        |row| {
            Ok(StoredStoreKey {
                backend: row.get(0)?,
                kek: HardwareHandle::new(row.get::<_, String>(1)?, row.get(2)?),
                wrapping: row.get(3)?,
                wrapped: row.get(4)?,
                created_at: row.get(5)?,
            })
        },
    )
    .optional()
    .sql()
}

fn insert(conn: &Connection, key: &StoredStoreKey) -> Result<()> {
    conn.execute(
        "INSERT INTO store_key (id, backend, kek_kind, kek, wrapping, wrapped, created_at) \
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
        rusqlite::params![
            key.backend,
            key.kek.kind(),
            key.kek.bytes(),
            key.wrapping,
            key.wrapped,
            key.created_at
        ],
    )
    .sql()
    .map(drop)
}

impl SqliteStore {
    /// The store key, if the store has one.
    pub fn stored_key(&self) -> StoreCall<Option<StoredStoreKey>> {
        self.writer.submit(|conn| {
            super::transaction(conn, "stored_key", TransactionBehavior::Deferred, |tx| {
                read(tx)
            })
        })
    }

    /// Reads every protected row in one snapshot and checks each MAC, naming every row
    /// that fails rather than stopping at the first (`keybroker store verify`).
    ///
    /// # Errors
    /// [`StoreError::Locked`] before [`SqliteStore::unlock`]; a row that does not decode.
    pub fn verify(&self) -> StoreCall<Verified> {
        self.read("verify", |rows| {
            let refused = std::cell::RefCell::new(Vec::new());
            let all = Rows {
                tx: rows.tx,
                guard: rows.guard,
                refused: Some(&refused),
            };
            let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
            let read = count(rows::select_keys(&all, "1 = 1", rusqlite::params![])?.len())
                + count(backend_rows::backends(&all)?.len())
                + u64::from(backend_rows::policy(&all)?.is_some())
                + count(ca_rows::select(&all)?.len())
                + count(secret_rows::select(&all, "", [])?.len())
                + count(lease_rows::select(&all, "", [])?.len());
            Ok(Verified {
                rows: read,
                refused: refused.into_inner(),
            })
        })
    }

    /// Whether rows are MACed (the store has a store key, unlocked or not).
    pub fn protected(&self) -> bool {
        self.guard.protected()
    }

    /// From now on rows are checked and MACed with `key`, the row key of the store key
    /// that the hardware unwrapped from [`SqliteStore::stored_key`].
    pub fn unlock(&self, key: RowKey) {
        self.guard.unlock(key);
    }

    /// Protects a store that has no store key: records `stored` and MACs every row with
    /// `key` (trusting them as they are, once), in one transaction; then behaves as
    /// [`SqliteStore::unlock`].
    ///
    /// # Errors
    /// [`StoreError::Database`] if the store has a store key already;
    /// [`StoreError::Tampered`] if a row carries a MAC (a store whose store key's row was
    /// deleted is not protected again over it).
    pub fn protect(&self, stored: StoredStoreKey, key: RowKey) -> StoreCall<Tagged> {
        let guard = self.guard.clone();
        let generation = self.generation.clone();
        self.writer.submit(move |conn| {
            let unprotected = Guard::new(false);
            let keyed = Guard::new(true);
            keyed.unlock(key.clone());
            let result =
                super::transaction(conn, "protect", TransactionBehavior::Immediate, |tx| {
                    if read(tx)?.is_some() {
                        return Err(StoreError::Database(
                            "the store has a store key already".into(),
                        ));
                    }
                    insert(tx, &stored)?;
                    let before = Rows {
                        tx,
                        guard: &unprotected,
                        refused: None,
                    };
                    let after = Rows {
                        tx,
                        guard: &keyed,
                        refused: None,
                    };
                    Ok(Tagged {
                        keys: rows::seal_all_keys(&before, &after)?,
                        settings: backend_rows::seal_all(&before, &after)?,
                        ca_versions: ca_rows::seal_all(&before, &after)?,
                        secret_versions: secret_rows::seal_all(&before, &after)?,
                        leases: lease_rows::seal_all(&before, &after)?,
                    })
                });
            if result.is_ok() {
                guard.unlock(key);
            }
            generation.fetch_add(1, std::sync::atomic::Ordering::Release);
            result
        })
    }
}
