//! The `ca_versions` table (`migrations/0002_ca.sql`): the workload CA's versions.

use rusqlite::Transaction;

use super::Sql;
use crate::store::{CaRecord, Result};

/// Every version, oldest first.
pub(super) fn select(tx: &Transaction<'_>) -> Result<Vec<CaRecord>> {
    let mut statement = tx
        .prepare(
            "SELECT version, backend, key_id, certificate, chain_pem, created_at, \
             activates_at FROM ca_versions ORDER BY version",
        )
        .sql()?;
    let rows = statement
        .query_map([], |row| {
            Ok(CaRecord {
                version: row.get(0)?,
                backend: row.get(1)?,
                key_id: row.get(2)?,
                certificate: row.get(3)?,
                chain_pem: row.get(4)?,
                created_at: row.get(5)?,
                activates_at: row.get(6)?,
            })
        })
        .sql()?;
    rows.collect::<rusqlite::Result<Vec<_>>>().sql()
}

/// Inserts `r`, or replaces the version of the same number.
pub(super) fn upsert(tx: &Transaction<'_>, r: &CaRecord) -> Result<()> {
    tx.execute(
        "INSERT INTO ca_versions (version, backend, key_id, certificate, chain_pem, \
         created_at, activates_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (version) DO UPDATE SET backend = excluded.backend, \
         key_id = excluded.key_id, certificate = excluded.certificate, \
         chain_pem = excluded.chain_pem, created_at = excluded.created_at, \
         activates_at = excluded.activates_at",
        rusqlite::params![
            r.version,
            r.backend,
            r.key_id,
            r.certificate,
            r.chain_pem,
            r.created_at,
            r.activates_at
        ],
    )
    .sql()
    .map(drop)
}

/// Forgets the versions older than `version`.
pub(super) fn delete_before(tx: &Transaction<'_>, version: u32) -> Result<()> {
    tx.execute("DELETE FROM ca_versions WHERE version < ?1", [version])
        .sql()
        .map(drop)
}
