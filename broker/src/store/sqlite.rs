//! The embedded [`KeyStore`](super::KeyStore): one SQLite file, so a single broker needs
//! no database server. WAL mode with `synchronous=FULL` makes every call that returned
//! durable across a crash or power loss.
//!
//! No SQLite call runs on an async worker. One writer thread owns the only write
//! connection, so writes never wait on each other's locks inside the process; a pool of
//! reader threads, each with a read-only connection, serves reads beside it (WAL gives
//! each read transaction a snapshot and never blocks it on the writer). Callers get a
//! [`StoreCall`](super::StoreCall) at once (`sqlite/worker.rs`). `BEGIN IMMEDIATE` and a
//! busy timeout serialise writes against another process opening the same file; that
//! wait, too, is on the writer thread. The schema (`migrations/`) is written for a later
//! PostgreSQL store to follow.

mod backend_rows;
mod ca_rows;
mod keystore;
mod lease_rows;
mod listing;
mod rows;
mod schema;
mod secret_rows;
mod store_key;
#[cfg(test)]
mod tests;
mod worker;

use std::fmt;
use std::fs::{DirBuilder, OpenOptions};
use std::ops::Deref;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::integrity::{Canon, Guard};
use super::{Result, StoreCall, StoreError};
use worker::Pool;

pub use store_key::{StoredStoreKey, Tagged, Verified};

/// Reader threads (and connections) for a database file.
const READERS: usize = 2;
/// Requests that may wait for the writer, and for the readers, before callers get
/// [`StoreError::Busy`].
const QUEUE_DEPTH: usize = 1024;

/// A [`KeyStore`](super::KeyStore) in one SQLite database file.
pub struct SqliteStore {
    writer: Pool,
    /// The reader pool; in memory there is one connection, so reads go to the writer.
    readers: Option<Pool>,
    /// [`KeyStore::generation`](super::KeyStore::generation), bumped by the writer.
    generation: Arc<AtomicU64>,
    /// `None` in memory.
    path: Option<PathBuf>,
    /// Whether rows carry MACs, and the key that checks them (`super::integrity`).
    guard: Guard,
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
        let mut conn = Connection::open(path).sql_in("open")?;
        prepare(&mut conn, true)?;
        let locked = store_key::exists(&conn)?;
        let readers = (0..READERS)
            .map(|_| open_reader(path))
            .collect::<Result<Vec<_>>>()?;
        SqliteStore::start(conn, Some(readers), Some(path.to_owned()), locked)
    }

    /// A private database in memory, gone when the store is dropped.
    ///
    /// # Errors
    /// [`StoreError::Database`] if SQLite fails.
    pub fn open_in_memory() -> Result<SqliteStore> {
        let mut conn = Connection::open_in_memory().sql_in("open")?;
        prepare(&mut conn, false)?;
        SqliteStore::start(conn, None, None, false)
    }

    fn start(
        writer: Connection,
        readers: Option<Vec<Connection>>,
        path: Option<PathBuf>,
        locked: bool,
    ) -> Result<SqliteStore> {
        Ok(SqliteStore {
            writer: Pool::start("store-writer", vec![writer], QUEUE_DEPTH)?,
            readers: readers
                .map(|readers| Pool::start("store-reader", readers, QUEUE_DEPTH))
                .transpose()?,
            generation: Arc::default(),
            path,
            guard: Guard::new(locked),
        })
    }

    /// The schema version this code reads and writes.
    pub fn schema_version() -> u32 {
        schema::latest()
    }

    /// Runs `f` in one read transaction (a consistent snapshot) on a reader thread.
    /// Database errors are prefixed with `op`.
    fn read<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Rows<'_>) -> Result<T> + Send + 'static,
    ) -> StoreCall<T> {
        let pool = self.readers.as_ref().unwrap_or(&self.writer);
        let guard = self.guard.clone();
        pool.submit(move |conn| {
            transaction(conn, op, TransactionBehavior::Deferred, |tx| {
                f(&Rows {
                    tx,
                    guard: &guard,
                    refused: None,
                })
            })
        })
    }

    /// Runs `f` in one write transaction on the writer thread, committed if it returns
    /// `Ok`, then bumps the generation (before the caller can see the answer).
    fn write<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Rows<'_>) -> Result<T> + Send + 'static,
    ) -> StoreCall<T> {
        let generation = self.generation.clone();
        let guard = self.guard.clone();
        self.writer.submit(move |conn| {
            let result = transaction(conn, op, TransactionBehavior::Immediate, |tx| {
                f(&Rows {
                    tx,
                    guard: &guard,
                    refused: None,
                })
            });
            generation.fetch_add(1, Ordering::Release);
            result
        })
    }
}

/// One transaction, and the store's guard: what every row function is given. It is the
/// transaction for everything else.
pub(super) struct Rows<'t> {
    tx: &'t Transaction<'t>,
    guard: &'t Guard,
    /// Set by [`SqliteStore::verify`]: a refused row is recorded here and read on, so
    /// that one pass names every refused row.
    refused: Option<&'t std::cell::RefCell<Vec<String>>>,
}

impl<'t> Deref for Rows<'t> {
    type Target = Transaction<'t>;

    fn deref(&self) -> &Transaction<'t> {
        self.tx
    }
}

impl Rows<'_> {
    /// The MAC of a row written now (`None` in an unprotected store).
    fn mac(&self, canon: &Canon) -> Result<Option<Vec<u8>>> {
        self.guard.tag(canon)
    }

    /// Checks a row read with its MAC; `what` names it for the error.
    fn check(&self, what: &dyn Fn() -> String, canon: &Canon, mac: Option<&[u8]>) -> Result<()> {
        match (self.guard.check(what, canon, mac), self.refused) {
            (Err(StoreError::Tampered(why)), Some(refused)) => {
                refused.borrow_mut().push(why);
                Ok(())
            }
            (result, _) => result,
        }
    }
}

/// Configures a connection and migrates the schema. `wal` is false in memory.
fn prepare(conn: &mut Connection, wal: bool) -> Result<()> {
    let prefix = |e: StoreError| match e {
        StoreError::Database(m) => StoreError::Database(format!("open: {m}")),
        other => other,
    };
    schema::configure(conn, wal).map_err(prefix)?;
    schema::migrate(conn).map_err(prefix)
}

/// A read-only connection to a migrated database file.
fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).sql_in("open reader")?;
    schema::configure(&conn, true).map_err(|e| match e {
        StoreError::Database(m) => StoreError::Database(format!("open reader: {m}")),
        other => other,
    })?;
    conn.pragma_update(None, "query_only", true)
        .sql_in("open reader")?;
    Ok(conn)
}

/// Runs `f` in one transaction, committed if it returns `Ok`. Database errors are
/// prefixed with `op`.
fn transaction<T>(
    conn: &mut Connection,
    op: &str,
    behavior: TransactionBehavior,
    f: impl FnOnce(&Transaction<'_>) -> Result<T>,
) -> Result<T> {
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

/// rusqlite results as store results.
trait Sql<T> {
    fn sql(self) -> Result<T>;
    fn sql_in(self, op: &str) -> Result<T>;
}

impl<T> Sql<T> for rusqlite::Result<T> {
    fn sql(self) -> Result<T> {
        self.map_err(|e| store_error(&e, None))
    }

    fn sql_in(self, op: &str) -> Result<T> {
        self.map_err(|e| store_error(&e, Some(op)))
    }
}

/// A SQLite error as a store error: a full disk (`SQLITE_FULL`) is [`StoreError::Full`],
/// which callers can act on; the rest is [`StoreError::Database`].
fn store_error(e: &rusqlite::Error, op: Option<&str>) -> StoreError {
    if e.sqlite_error()
        .is_some_and(|e| e.code == rusqlite::ErrorCode::DiskFull)
    {
        return StoreError::Full;
    }
    match op {
        Some(op) => StoreError::Database(format!("{op}: {e}")),
        None => StoreError::Database(e.to_string()),
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    e.sqlite_error().is_some_and(|e| {
        e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    })
}
