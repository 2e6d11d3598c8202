//! The `ca_versions` table (`migrations/0002_ca.sql`): the workload CA's versions, each
//! row checked against its MAC (`crate::store::integrity`).

use super::{Rows, Sql};
use crate::store::integrity::Canon;
use crate::store::{CaRecord, Result};

/// The MAC input of a version's row.
fn canon(r: &CaRecord) -> Canon {
    Canon::new("ca_versions")
        .int(i64::from(r.version))
        .text(&r.backend)
        .bytes(&r.key_id)
        .bytes(&r.certificate)
        .text(&r.chain_pem)
        .int(r.created_at)
        .int(r.activates_at)
}

/// Every version, oldest first.
pub(super) fn select(rows: &Rows<'_>) -> Result<Vec<CaRecord>> {
    let mut statement = rows
        .prepare(
            "SELECT version, backend, key_id, certificate, chain_pem, created_at, \
             activates_at, mac FROM ca_versions ORDER BY version",
        )
        .sql()?;
    let read = statement
        .query_map([], |row| {
            let record = CaRecord {
                version: row.get(0)?,
                backend: row.get(1)?,
                key_id: row.get(2)?,
                certificate: row.get(3)?,
                chain_pem: row.get(4)?,
                created_at: row.get(5)?,
                activates_at: row.get(6)?,
            };
            Ok((record, row.get::<_, Option<Vec<u8>>>(7)?))
        })
        .sql()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .sql()?;
    read.into_iter()
        .map(|(record, mac)| {
            let what = || format!("CA version {}", record.version);
            rows.check(&what, &canon(&record), mac.as_deref())?;
            Ok(record)
        })
        .collect()
}

/// Inserts `r`, or replaces the version of the same number.
pub(super) fn upsert(rows: &Rows<'_>, r: &CaRecord) -> Result<()> {
    rows.execute(
        "INSERT INTO ca_versions (version, backend, key_id, certificate, chain_pem, \
         created_at, activates_at, mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT (version) DO UPDATE SET backend = excluded.backend, \
         key_id = excluded.key_id, certificate = excluded.certificate, \
         chain_pem = excluded.chain_pem, created_at = excluded.created_at, \
         activates_at = excluded.activates_at, mac = excluded.mac",
        rusqlite::params![
            r.version,
            r.backend,
            r.key_id,
            r.certificate,
            r.chain_pem,
            r.created_at,
            r.activates_at,
            rows.mac(&canon(r))?
        ],
    )
    .sql()
    .map(drop)
}

/// Forgets the versions older than `version`.
pub(super) fn delete_before(rows: &Rows<'_>, version: u32) -> Result<()> {
    rows.execute("DELETE FROM ca_versions WHERE version < ?1", [version])
        .sql()
        .map(drop)
}

/// MACs every version (a store being protected: see `store_key.rs`); `read` checks that
/// none has a MAC yet.
pub(super) fn seal_all(read: &Rows<'_>, write: &Rows<'_>) -> Result<u64> {
    let versions = select(read)?;
    for version in &versions {
        upsert(write, version)?;
    }
    Ok(u64::try_from(versions.len()).unwrap_or(u64::MAX))
}
