//! The `leases` table (`migrations/0004_leases.sql`), each row checked against its MAC
//! (`crate::store::integrity`): a lease moved to another owner or given a longer life in
//! the database file is refused.

use rusqlite::Params;

use super::{Rows, Sql, SqliteStore};
use crate::store::integrity::Canon;
use crate::store::{LeaseRecord, LeaseStore, Result, StoreCall, StoreError};

const COLUMNS: &str = "id, role, owner, handle, created_at, expires_at, max_expires_at, revoked_at";

/// The MAC input of a lease's row.
fn canon(l: &LeaseRecord) -> Canon {
    Canon::new("leases")
        .text(&l.id)
        .text(&l.role)
        .text(&l.owner)
        .text(&l.handle)
        .int(l.created_at)
        .int(l.expires_at)
        .int(l.max_expires_at)
        .opt_int(l.revoked_at)
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The leases `sql` (a `WHERE` and what follows, with `params`) selects, each checked.
pub(super) fn select(rows: &Rows<'_>, sql: &str, params: impl Params) -> Result<Vec<LeaseRecord>> {
    let mut statement = rows
        .prepare(&format!("SELECT {COLUMNS}, mac FROM leases {sql}"))
        .sql()?;
    let read = statement
        .query_map(params, |row| {
            let lease = LeaseRecord {
                id: row.get(0)?,
                role: row.get(1)?,
                owner: row.get(2)?,
                handle: row.get(3)?,
                created_at: row.get(4)?,
                expires_at: row.get(5)?,
                max_expires_at: row.get(6)?,
                revoked_at: row.get(7)?,
            };
            Ok((lease, row.get::<_, Option<Vec<u8>>>(8)?))
        })
        .sql()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .sql()?;
    read.into_iter()
        .map(|(lease, mac)| {
            rows.check(
                &|| format!("lease {:?}", lease.id),
                &canon(&lease),
                mac.as_deref(),
            )?;
            Ok(lease)
        })
        .collect()
}

/// Writes `l` over its row (which exists), with its MAC.
fn put(rows: &Rows<'_>, l: &LeaseRecord) -> Result<()> {
    rows.execute(
        "UPDATE leases SET expires_at = ?2, revoked_at = ?3, mac = ?4 WHERE id = ?1",
        rusqlite::params![l.id, l.expires_at, l.revoked_at, rows.mac(&canon(l))?],
    )
    .sql()
    .map(drop)
}

fn insert(rows: &Rows<'_>, l: &LeaseRecord, max_live: u64) -> Result<()> {
    let held: u64 = rows
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
    rows.execute(
        &format!("INSERT INTO leases ({COLUMNS}, mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
        rusqlite::params![
            l.id,
            l.role,
            l.owner,
            l.handle,
            l.created_at,
            l.expires_at,
            l.max_expires_at,
            l.revoked_at,
            rows.mac(&canon(l))?
        ],
    )
    .sql()
    .map(drop)
}

fn get(rows: &Rows<'_>, id: &str) -> Result<LeaseRecord> {
    select(rows, "WHERE id = ?1", [id])?
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::LeaseNotFound(id.to_string()))
}

fn extend(rows: &Rows<'_>, id: &str, expires_at: i64, now: i64) -> Result<LeaseRecord> {
    let mut lease = get(rows, id)?;
    let why = match lease.revoked_at {
        Some(_) => "revoked",
        None if lease.expires_at <= now => "expired",
        None => {
            lease.expires_at = expires_at;
            put(rows, &lease)?;
            return Ok(lease);
        }
    };
    Err(StoreError::LeaseNotLive {
        id: id.to_string(),
        why,
    })
}

fn revoke(rows: &Rows<'_>, id: &str, now: i64) -> Result<LeaseRecord> {
    let mut lease = get(rows, id)?;
    if lease.revoked_at.is_none() {
        lease.revoked_at = Some(now);
        put(rows, &lease)?;
    }
    Ok(lease)
}

fn due(rows: &Rows<'_>, now: i64, n: usize) -> Result<Vec<LeaseRecord>> {
    select(
        rows,
        "WHERE revoked_at IS NOT NULL OR expires_at <= ?1 \
         ORDER BY MIN(expires_at, COALESCE(revoked_at, expires_at)) LIMIT ?2",
        rusqlite::params![now, limit(n)],
    )
}

fn list(rows: &Rows<'_>, prefix: &str, after: &str, n: usize) -> Result<Vec<LeaseRecord>> {
    select(
        rows,
        // A byte-wise prefix, as the key and secret listings (LIKE folds case).
        "WHERE role >= ?1 AND substr(CAST(role AS BLOB), 1, length(?2)) = ?2 AND id > ?3 \
         ORDER BY id LIMIT ?4",
        rusqlite::params![prefix, prefix.as_bytes(), after, limit(n)],
    )
}

/// MACs every lease (a store being protected: see `store_key.rs`); `read` checks that
/// none has a MAC yet.
pub(super) fn seal_all(read: &Rows<'_>, write: &Rows<'_>) -> Result<u64> {
    let leases = select(read, "", [])?;
    for lease in &leases {
        put(write, lease)?;
    }
    Ok(u64::try_from(leases.len()).unwrap_or(u64::MAX))
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
            let live = select(
                tx,
                "WHERE role = ?1 AND revoked_at IS NULL",
                rusqlite::params![role],
            )?;
            for mut lease in live.iter().cloned() {
                lease.revoked_at = Some(now);
                put(tx, &lease)?;
            }
            Ok(u64::try_from(live.len()).unwrap_or(u64::MAX))
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
