//! The `secrets` and `secret_versions` tables (`migrations/0003_secrets.sql`). Each
//! version's row is checked against its MAC (`crate::store::integrity`): its value is
//! sealed by the HSM already, and the MAC covers the rest (whether it is enabled).

use rusqlite::{OptionalExtension, Params, Transaction};

use super::{Rows, Sql, SqliteStore};
use crate::store::integrity::Canon;
use crate::store::{
    Result, SecretStore, SecretSummary, SecretVersionRecord, SecretVersionSummary, StoreCall,
    StoreError,
};

const VERSION_COLUMNS: &str =
    "name, version, enabled, kek, wrapped_dek, nonce, ciphertext, created_at";

/// The MAC input of a version's row.
fn canon(r: &SecretVersionRecord) -> Canon {
    Canon::new("secret_versions")
        .text(&r.name)
        .int(i64::from(r.version))
        .flag(r.enabled)
        .text(&r.kek)
        .bytes(&r.wrapped_dek)
        .bytes(&r.nonce)
        .bytes(&r.ciphertext)
        .int(r.created_at)
}

/// The versions `sql` (a `WHERE` and what follows, with `params`) selects, each checked.
pub(super) fn select(
    rows: &Rows<'_>,
    sql: &str,
    params: impl Params,
) -> Result<Vec<SecretVersionRecord>> {
    let mut statement = rows
        .prepare_cached(&format!(
            "SELECT {VERSION_COLUMNS}, mac FROM secret_versions {sql}"
        ))
        .sql()?;
    let read = statement
        .query_map(params, |row| {
            let record = SecretVersionRecord {
                name: row.get(0)?,
                version: row.get(1)?,
                enabled: row.get(2)?,
                kek: row.get(3)?,
                wrapped_dek: row.get(4)?,
                nonce: row.get(5)?,
                ciphertext: row.get(6)?,
                created_at: row.get(7)?,
            };
            Ok((record, row.get::<_, Option<Vec<u8>>>(8)?))
        })
        .sql()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .sql()?;
    read.into_iter()
        .map(|(r, mac)| {
            let what = || format!("secret {:?} version {}", r.name, r.version);
            rows.check(&what, &canon(&r), mac.as_deref())?;
            Ok(r)
        })
        .collect()
}

/// Writes `r` (new, or over its row), with its MAC.
fn put_version(rows: &Rows<'_>, r: &SecretVersionRecord) -> Result<()> {
    rows.execute(
        &format!(
            "INSERT INTO secret_versions ({VERSION_COLUMNS}, mac) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (name, version) DO UPDATE SET enabled = excluded.enabled, \
             mac = excluded.mac"
        ),
        rusqlite::params![
            r.name,
            r.version,
            r.enabled,
            r.kek,
            r.wrapped_dek,
            r.nonce,
            r.ciphertext,
            r.created_at,
            rows.mac(&canon(r))?
        ],
    )
    .sql()
    .map(drop)
}

/// MACs every version (a store being protected: see `store_key.rs`); `read` checks that
/// none has a MAC yet.
pub(super) fn seal_all(read: &Rows<'_>, write: &Rows<'_>) -> Result<u64> {
    let versions = select(read, "", [])?;
    for version in &versions {
        put_version(write, version)?;
    }
    Ok(u64::try_from(versions.len()).unwrap_or(u64::MAX))
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
pub(super) fn create(tx: &Rows<'_>, description: &str, first: &SecretVersionRecord) -> Result<()> {
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
    put_version(tx, first)
}

/// The next version: `r.version` must be one past the newest, else `SecretVersionRace`
/// (another writer got there first; the value was encrypted for a version number that is
/// now taken).
pub(super) fn add_version(tx: &Rows<'_>, r: &SecretVersionRecord) -> Result<()> {
    let latest = latest_version(tx, &r.name)?;
    if r.version != latest.saturating_add(1) {
        return Err(StoreError::SecretVersionRace {
            name: r.name.clone(),
            version: r.version,
        });
    }
    put_version(tx, r)
}

/// One version, or with `None` the newest enabled one.
pub(super) fn version(
    rows: &Rows<'_>,
    name: &str,
    version: Option<u32>,
) -> Result<SecretVersionRecord> {
    latest_version(rows, name)?;
    let found = match version {
        Some(v) => select(
            rows,
            "WHERE name = ?1 AND version = ?2",
            rusqlite::params![name, v],
        )?,
        None => select(
            rows,
            "WHERE name = ?1 AND enabled = 1 ORDER BY version DESC LIMIT 1",
            [name],
        )?,
    };
    found
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::SecretVersionNotFound {
            name: name.to_string(),
            version,
        })
}

/// Enables or disables one version; the version after the change.
pub(super) fn set_enabled(
    rows: &Rows<'_>,
    name: &str,
    number: u32,
    enabled: bool,
) -> Result<SecretVersionRecord> {
    let mut record = version(rows, name, Some(number))?;
    record.enabled = enabled;
    put_version(rows, &record)?;
    Ok(record)
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
    tx: &Rows<'_>,
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
    heads
        .into_iter()
        .map(|mut head| {
            head.versions = select(tx, "WHERE name = ?1 ORDER BY version", [&head.name])?
                .into_iter()
                .map(|v| SecretVersionSummary {
                    version: v.version,
                    enabled: v.enabled,
                    created_at: v.created_at,
                })
                .collect();
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
