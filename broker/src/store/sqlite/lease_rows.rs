//! The `leases` table (`migrations/0004_leases.sql`).

use rusqlite::{OptionalExtension, Transaction};

use super::{Sql, SqliteStore};
use crate::store::{LeaseRecord, LeaseStore, Result, StoreCall, StoreError};

const COLUMNS: &str = "id, role, owner, handle, created_at, expires_at, max_expires_at, revoked_at";

fn lease_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<LeaseRecord> {
    Ok(LeaseRecord {
        id: row.get(0)?,
        role: row.get(1)?,
        owner: row.get(2)?,
        handle: row.get(3)?,
        created_at: row.get(4)?,
        expires_at: row.get(5)?,
        max_expires_at: row.get(6)?,
        revoked_at: row.get(7)?,
    })
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn insert(tx: &Transaction<'_>, l: &LeaseRecord, max_live: u64) -> Result<()> {
    let held: u64 = tx
        .query_row(
            "SELECT COUNT(*) FROM leases WHERE role = ?1 AND owner = ?2 \
             AND revoked_at IS NULL AND expires_at > ?3",
            rusqlite::params![l.role, l.owner, l.created_at],
            |r| r.get(0),
        )
        .sql()?;
    if held >= max_live {
        return Err(StoreError::LeaseLimit {
            role: l.role.clone(),
            owner: l.owner.clone(),
            held,
        });
    }
    tx.execute(
        &format!("INSERT INTO leases ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
        rusqlite::params![
            l.id,
            l.role,
            l.owner,
            l.handle,
            l.created_at,
            l.expires_at,
            l.max_expires_at,
            l.revoked_at
        ],
    )
    .sql()
    .map(drop)
}

fn get(tx: &Transaction<'_>, id: &str) -> Result<LeaseRecord> {
    tx.query_row(
        &format!("SELECT {COLUMNS} FROM leases WHERE id = ?1"),
        [id],
        lease_row,
    )
    .optional()
    .sql()?
    .ok_or_else(|| StoreError::LeaseNotFound(id.to_string()))
}

fn extend(tx: &Transaction<'_>, id: &str, expires_at: i64, now: i64) -> Result<LeaseRecord> {
    let changed = tx
        .execute(
            "UPDATE leases SET expires_at = ?2 \
             WHERE id = ?1 AND revoked_at IS NULL AND expires_at > ?3",
            rusqlite::params![id, expires_at, now],
        )
        .sql()?;
    let lease = get(tx, id)?;
    if changed == 0 {
        let why = match lease.revoked_at {
            Some(_) => "revoked",
            None => "expired",
        };
        return Err(StoreError::LeaseNotLive {
            id: id.to_string(),
            why,
        });
    }
    Ok(lease)
}

fn revoke(tx: &Transaction<'_>, id: &str, now: i64) -> Result<LeaseRecord> {
    tx.execute(
        "UPDATE leases SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        rusqlite::params![id, now],
    )
    .sql()?;
    get(tx, id)
}

fn due(tx: &Transaction<'_>, now: i64, n: usize) -> Result<Vec<LeaseRecord>> {
    let mut statement = tx
        .prepare(&format!(
            "SELECT {COLUMNS} FROM leases WHERE revoked_at IS NOT NULL OR expires_at <= ?1 \
             ORDER BY MIN(expires_at, COALESCE(revoked_at, expires_at)) LIMIT ?2"
        ))
        .sql()?;
    statement
        .query_map(rusqlite::params![now, limit(n)], lease_row)
        .sql()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .sql()
}

fn list(tx: &Transaction<'_>, prefix: &str, after: &str, n: usize) -> Result<Vec<LeaseRecord>> {
    let mut statement = tx
        .prepare(&format!(
            // A byte-wise prefix, as the key and secret listings (LIKE folds case).
            "SELECT {COLUMNS} FROM leases WHERE role >= ?1 \
             AND substr(CAST(role AS BLOB), 1, length(?2)) = ?2 AND id > ?3 \
             ORDER BY id LIMIT ?4"
        ))
        .sql()?;
    statement
        .query_map(
            rusqlite::params![prefix, prefix.as_bytes(), after, limit(n)],
            lease_row,
        )
        .sql()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .sql()
}

impl LeaseStore for SqliteStore {
    fn create_lease(&self, lease: &LeaseRecord, max_live: u64) -> StoreCall<()> {
        let lease = lease.clone();
        self.write("create_lease", move |tx| insert(tx, &lease, max_live))
    }

    fn lease(&self, id: &str) -> StoreCall<LeaseRecord> {
        let id = id.to_string();
        self.read("lease", move |tx| get(tx, &id))
    }

    fn extend_lease(&self, id: &str, expires_at: i64, now: i64) -> StoreCall<LeaseRecord> {
        let id = id.to_string();
        self.write("extend_lease", move |tx| extend(tx, &id, expires_at, now))
    }

    fn revoke_lease(&self, id: &str, now: i64) -> StoreCall<LeaseRecord> {
        let id = id.to_string();
        self.write("revoke_lease", move |tx| revoke(tx, &id, now))
    }

    fn revoke_role_leases(&self, role: &str, now: i64) -> StoreCall<u64> {
        let role = role.to_string();
        self.write("revoke_role_leases", move |tx| {
            let n = tx
                .execute(
                    "UPDATE leases SET revoked_at = ?2 WHERE role = ?1 AND revoked_at IS NULL",
                    rusqlite::params![role, now],
                )
                .sql()?;
            Ok(u64::try_from(n).unwrap_or(u64::MAX))
        })
    }

    fn due_leases(&self, now: i64, limit: usize) -> StoreCall<Vec<LeaseRecord>> {
        self.read("due_leases", move |tx| due(tx, now, limit))
    }

    fn forget_lease(&self, id: &str) -> StoreCall<()> {
        let id = id.to_string();
        self.write("forget_lease", move |tx| {
            tx.execute("DELETE FROM leases WHERE id = ?1", [&id])
                .sql()
                .map(drop)
        })
    }

    fn list_leases(&self, prefix: &str, after: &str, limit: usize) -> StoreCall<Vec<LeaseRecord>> {
        let (prefix, after) = (prefix.to_string(), after.to_string());
        self.read("list_leases", move |tx| list(tx, &prefix, &after, limit))
    }
}
