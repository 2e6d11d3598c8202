//! Connection settings and schema migrations. The schema version is `PRAGMA
//! user_version`: migration `n` (1-based) takes the database from version `n - 1` to `n`,
//! in its own transaction, so a crash leaves the database at a whole version.

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::Sql;
use crate::store::{Result, StoreError};

/// The embedded migrations, oldest first. Append only: never edit a released one.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_initial.sql"),
    include_str!("../migrations/0002_ca.sql"),
    include_str!("../migrations/0003_secrets.sql"),
    include_str!("../migrations/0004_leases.sql"),
    include_str!("../migrations/0005_releasable_keys.sql"),
    include_str!("../migrations/0006_store_key.sql"),
];

/// How long a call waits for another process (e.g. the CLI) holding the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema version this code writes and reads.
pub(super) fn latest() -> u32 {
    u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX)
}

/// Sets the per-connection pragmas. `wal` is false for in-memory databases, which have
/// no write-ahead log.
pub(super) fn configure(conn: &Connection, wal: bool) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT).sql()?;
    if wal {
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .sql()?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database(format!(
                "journal_mode is {mode:?}, not \"wal\""
            )));
        }
    }
    conn.pragma_update(None, "synchronous", "FULL").sql()?;
    conn.pragma_update(None, "foreign_keys", "ON").sql()?;
    Ok(())
}

/// The database's schema version.
pub(super) fn version(conn: &Connection) -> Result<u32> {
    let raw: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .sql()?;
    u32::try_from(raw).map_err(|_| StoreError::Database(format!("invalid schema version {raw}")))
}

/// Brings the schema up to [`latest`].
///
/// # Errors
/// [`StoreError::SchemaTooNew`] if a newer broker already migrated this database.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    loop {
        // The version is read inside the write transaction, so two processes opening a
        // fresh database at once do not both apply the same migration.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .sql()?;
        let found = version(&tx)?;
        if found > latest() {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: latest(),
            });
        }
        let Some(sql) = usize::try_from(found)
            .ok()
            .and_then(|index| MIGRATIONS.get(index))
        else {
            return Ok(());
        };
        let next = found.saturating_add(1);
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Database(format!("migration to version {next}: {e}")))?;
        tx.pragma_update(None, "user_version", next).sql()?;
        tx.commit().sql()?;
    }
}
