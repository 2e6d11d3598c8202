//! The `secrets` and `secret_versions` tables (`migrations/0003_secrets.sql`).

use rusqlite::{OptionalExtension, Transaction};

use super::{Sql, SqliteStore};
use crate::store::{
    Result, SecretStore, SecretSummary, SecretVersionRecord, SecretVersionSummary, StoreCall,
    StoreError,
};

const VERSION_COLUMNS: &str =
    "name, version, enabled, kek, wrapped_dek, nonce, ciphertext, created_at";

fn version_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SecretVersionRecord> {
    Ok(SecretVersionRecord {
        name: row.get(0)?,
        version: row.get(1)?,
        enabled: row.get(2)?,
        kek: row.get(3)?,
        wrapped_dek: row.get(4)?,
        nonce: row.get(5)?,
        ciphertext: row.get(6)?,
        created_at: row.get(7)?,
    })
}

fn insert_version(tx: &Transaction<'_>, r: &SecretVersionRecord) -> Result<()> {
    tx.execute(
        &format!("INSERT INTO secret_versions ({VERSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
        rusqlite::params![
            r.name,
            r.version,
            r.enabled,
            r.kek,
            r.wrapped_dek,
            r.nonce,
            r.ciphertext,
            r.created_at
        ],
    )
    .sql()
    .map(drop)
}

/// The newest version number of `name`; `SecretNotFound` without the secret.
pub(super) fn latest_version(tx: &Transaction<'_>, name: &str) -> Result<u32> {
    let exists: Option<i64> = tx
        .query_row("SELECT 1 FROM secrets WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()
        .sql()?;
    if exists.is_none() {
        return Err(StoreError::SecretNotFound(name.to_string()));
    }
    let latest: Option<u32> = tx
        .query_row(
            "SELECT MAX(version) FROM secret_versions WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .sql()?;
    Ok(latest.unwrap_or(0))
}

/// A new secret with its first version.
pub(super) fn create(
    tx: &Transaction<'_>,
    description: &str,
    first: &SecretVersionRecord,
) -> Result<()> {
    let inserted = tx
        .execute(
            "INSERT INTO secrets (name, description, created_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO NOTHING",
            rusqlite::params![first.name, description, first.created_at],
        )
        .sql()?;
    if inserted == 0 {
        return Err(StoreError::SecretExists(first.name.clone()));
    }
    insert_version(tx, first)
}

/// The next version: `r.version` must be one past the newest, else `SecretVersionRace`
/// (another writer got there first; the value was encrypted for a version number that is
/// now taken).
pub(super) fn add_version(tx: &Transaction<'_>, r: &SecretVersionRecord) -> Result<()> {
    let latest = latest_version(tx, &r.name)?;
    if r.version != latest.saturating_add(1) {
        return Err(StoreError::SecretVersionRace {
            name: r.name.clone(),
            version: r.version,
        });
    }
    insert_version(tx, r)
}

/// One version, or with `None` the newest enabled one.
pub(super) fn version(
    tx: &Transaction<'_>,
    name: &str,
    version: Option<u32>,
) -> Result<SecretVersionRecord> {
    latest_version(tx, name)?;
    let found = match version {
        Some(v) => tx
            .query_row(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM secret_versions WHERE name = ?1 AND version = ?2"
                ),
                rusqlite::params![name, v],
                version_row,
            )
            .optional()
            .sql()?,
        None => tx
            .query_row(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM secret_versions WHERE name = ?1 AND enabled = 1 \
                     ORDER BY version DESC LIMIT 1"
                ),
                [name],
                version_row,
            )
            .optional()
            .sql()?,
    };
    found.ok_or_else(|| StoreError::SecretVersionNotFound {
        name: name.to_string(),
        version,
    })
}

/// Enables or disables one version; the version after the change.
pub(super) fn set_enabled(
    tx: &Transaction<'_>,
    name: &str,
    number: u32,
    enabled: bool,
) -> Result<SecretVersionRecord> {
    let changed = tx
        .execute(
            "UPDATE secret_versions SET enabled = ?3 WHERE name = ?1 AND version = ?2",
            rusqlite::params![name, number, enabled],
        )
        .sql()?;
    if changed == 0 {
        latest_version(tx, name)?;
        return Err(StoreError::SecretVersionNotFound {
            name: name.to_string(),
            version: Some(number),
        });
    }
    version(tx, name, Some(number))
}

/// Deletes a secret and every version.
pub(super) fn delete(tx: &Transaction<'_>, name: &str) -> Result<()> {
    let deleted = tx
        .execute("DELETE FROM secrets WHERE name = ?1", [name])
        .sql()?;
    if deleted == 0 {
        return Err(StoreError::SecretNotFound(name.to_string()));
    }
    Ok(())
}

/// At most `limit` secrets whose names start with `prefix` and sort after `after`, by name,
/// with their versions' metadata.
pub(super) fn list(
    tx: &Transaction<'_>,
    prefix: &str,
    after: &str,
    limit: usize,
) -> Result<Vec<SecretSummary>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut statement = tx
        .prepare(
            // As the key listing: a byte-wise prefix (no LIKE, which folds case).
            "SELECT name, description, created_at FROM secrets WHERE name >= ?1 \
             AND substr(CAST(name AS BLOB), 1, length(?2)) = ?2 AND name > ?3 \
             ORDER BY name LIMIT ?4",
        )
        .sql()?;
    let heads = statement
        .query_map(
            rusqlite::params![prefix, prefix.as_bytes(), after, limit],
            |row| {
                Ok(SecretSummary {
                    name: row.get(0)?,
                    description: row.get(1)?,
                    created_at: row.get(2)?,
                    versions: Vec::new(),
                })
            },
        )
        .sql()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .sql()?;
    let mut versions = tx
        .prepare(
            "SELECT version, enabled, created_at FROM secret_versions WHERE name = ?1 \
             ORDER BY version",
        )
        .sql()?;
    heads
        .into_iter()
        .map(|mut head| {
            head.versions = versions
                .query_map([&head.name], |row| {
                    Ok(SecretVersionSummary {
                        version: row.get(0)?,
                        enabled: row.get(1)?,
                        created_at: row.get(2)?,
                    })
                })
                .sql()?
                .collect::<rusqlite::Result<Vec<_>>>()
                .sql()?;
            Ok(head)
        })
        .collect()
}

impl SecretStore for SqliteStore {
    fn create_secret(&self, description: &str, first: &SecretVersionRecord) -> StoreCall<()> {
        let (description, first) = (description.to_string(), first.clone());
        self.write("create_secret", move |tx| create(tx, &description, &first))
    }

    fn latest_secret_version(&self, name: &str) -> StoreCall<u32> {
        let name = name.to_string();
        self.read("latest_secret_version", move |tx| latest_version(tx, &name))
    }

    fn add_secret_version(&self, record: &SecretVersionRecord) -> StoreCall<()> {
        let record = record.clone();
        self.write("add_secret_version", move |tx| add_version(tx, &record))
    }

    fn secret_version(&self, name: &str, version: Option<u32>) -> StoreCall<SecretVersionRecord> {
        let name = name.to_string();
        self.read("secret_version", move |tx| {
            self::version(tx, &name, version)
        })
    }

    fn set_secret_version_enabled(
        &self,
        name: &str,
        version: u32,
        enabled: bool,
    ) -> StoreCall<SecretVersionRecord> {
        let name = name.to_string();
        self.write("set_secret_version_enabled", move |tx| {
            set_enabled(tx, &name, version, enabled)
        })
    }

    fn delete_secret(&self, name: &str) -> StoreCall<()> {
        let name = name.to_string();
        self.write("delete_secret", move |tx| delete(tx, &name))
    }

    fn list_secrets(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> StoreCall<Vec<SecretSummary>> {
        let (prefix, after) = (prefix.to_string(), after.to_string());
        self.read("list_secrets", move |tx| list(tx, &prefix, &after, limit))
    }
}
