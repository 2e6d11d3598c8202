//! The embedded [`KeyStore`](super::KeyStore): one SQLite file, so a single broker needs
//! no database server. WAL mode with `synchronous=FULL` makes every call that returned
//! durable across a crash or power loss. One connection behind a mutex serialises the
//! broker's calls; `BEGIN IMMEDIATE` and a busy timeout serialise writes against another
//! process (the CLI) opening the same file. The schema (`migrations/`) is written for a
//! later PostgreSQL store to follow.

mod keystore;
mod rows;
mod schema;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::{Result, StoreError};

/// A [`KeyStore`](super::KeyStore) in one SQLite database file.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// `None` in memory.
    path: Option<PathBuf>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => f.debug_struct("SqliteStore").field("path", path).finish(),
            None => f.write_str("SqliteStore(in memory)"),
        }
    }
}

impl SqliteStore {
    /// Opens the database at `path`, creating it (mode 0600, and its parent directory,
    /// mode 0700, if missing) and migrating its schema to the latest version.
    ///
    /// # Errors
    /// [`StoreError::SchemaTooNew`] if a newer broker migrated the database;
    /// [`StoreError::Database`] if it cannot be created, opened or migrated.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let io = |what: &str, e: std::io::Error| {
            StoreError::Database(format!("open: {what} {}: {e}", path.display()))
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.exists()
        {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| io("creating directory", e))?;
        }
        // Created here rather than by SQLite, so it never exists with a wider mode. SQLite
        // gives the -wal and -shm files the mode of the database file.
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| io("creating", e))?;
        let conn = Connection::open(path).sql_in("open")?;
        SqliteStore::init(conn, true, Some(path.to_owned()))
    }

    /// A private database in memory, gone when the store is dropped.
    ///
    /// # Errors
    /// [`StoreError::Database`] if SQLite fails.
    pub fn open_in_memory() -> Result<SqliteStore> {
        let conn = Connection::open_in_memory().sql_in("open")?;
        SqliteStore::init(conn, false, None)
    }

    fn init(mut conn: Connection, wal: bool, path: Option<PathBuf>) -> Result<SqliteStore> {
        let prefix = |e: StoreError| match e {
            StoreError::Database(m) => StoreError::Database(format!("open: {m}")),
            other => other,
        };
        schema::configure(&conn, wal).map_err(prefix)?;
        schema::migrate(&mut conn).map_err(prefix)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// The schema version this code reads and writes.
    pub fn schema_version() -> u32 {
        schema::latest()
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic during a call dropped, so rolled back, its transaction: the connection
        // is still consistent.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` in one transaction, committed if it returns `Ok`. Database errors are
    /// prefixed with `op`.
    fn transaction<T>(
        &self,
        op: &str,
        behavior: TransactionBehavior,
        f: impl FnOnce(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.lock();
        let run = || {
            let tx = conn.transaction_with_behavior(behavior).sql()?;
            let value = f(&tx)?;
            tx.commit().sql()?;
            Ok(value)
        };
        run().map_err(|e| match e {
            StoreError::Database(m) => StoreError::Database(format!("{op}: {m}")),
            other => other,
        })
    }

    fn read<T>(&self, op: &str, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.transaction(op, TransactionBehavior::Deferred, f)
    }

    fn write<T>(&self, op: &str, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.transaction(op, TransactionBehavior::Immediate, f)
    }
}

/// rusqlite results as store results.
trait Sql<T> {
    fn sql(self) -> Result<T>;
    fn sql_in(self, op: &str) -> Result<T>;
}

impl<T> Sql<T> for rusqlite::Result<T> {
    fn sql(self) -> Result<T> {
        self.map_err(|e| StoreError::Database(e.to_string()))
    }

    fn sql_in(self, op: &str) -> Result<T> {
        self.map_err(|e| StoreError::Database(format!("{op}: {e}")))
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    e.sqlite_error().is_some_and(|e| {
        e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    })
}
