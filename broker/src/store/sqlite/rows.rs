//! Rows to records and back: the stable text of every enumeration, and reading keys (with their
//! versions and tags), each checked against its MAC (`crate::store::integrity`). A value the code does not know is an error, never a
//! panic: it means a newer broker wrote it or the file was edited.

use std::collections::BTreeMap;

use rusqlite::{Connection, Params};

use super::{Rows, Sql};
use crate::store::integrity::Canon;
use crate::store::{
    Algorithm, HardwareHandle, KeyRecord, KeyState, PendingVersion, Purpose, Result, StoreError,
    VersionRecord, VersionState,
};

/// An enumeration stored as stable text.
pub(super) trait Text: Sized + Copy {
    /// The stored text.
    fn text(self) -> &'static str;
    /// The value for stored text.
    fn parse(text: &str) -> Result<Self>;
}

macro_rules! text_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl Text for $ty {
            fn text(self) -> &'static str {
                match self {
                    $($ty::$variant => $text,)+
                }
            }

            fn parse(text: &str) -> Result<Self> {
                match text {
                    $($text => Ok($ty::$variant),)+
                    other => Err(unknown($what, other)),
                }
            }
        }
    };
}

text_enum!(Purpose, "purpose", {
    SignVerify => "sign-verify",
    EncryptDecrypt => "encrypt-decrypt",
    WrapUnwrap => "wrap-unwrap",
});

text_enum!(Algorithm, "algorithm", {
    EcP256 => "ec-p256",
    EcP384 => "ec-p384",
    Rsa2048 => "rsa-2048",
    Rsa3072 => "rsa-3072",
    Rsa4096 => "rsa-4096",
    Aes256 => "aes-256",
});

text_enum!(KeyState, "key state", {
    Creating => "creating",
    Enabled => "enabled",
    Disabled => "disabled",
    Revoked => "revoked",
    PendingDestruction => "pending-destruction",
    Destroyed => "destroyed",
});

text_enum!(VersionState, "version state", {
    Creating => "creating",
    Active => "active",
    Retired => "retired",
});

/// `handle_kind` and `backends.kind` for an HSM.
pub(super) const HSM: &str = "hsm";
/// `handle_kind` and `backends.kind` for a TPM.
pub(super) const TPM: &str = "tpm";

pub(super) fn unknown(what: &str, text: &str) -> StoreError {
    StoreError::Database(format!("unknown {what} {text:?} in the database"))
}

/// A handle as its `handle_kind` and bytes.
pub(super) fn handle_parts(handle: &HardwareHandle) -> (&str, &[u8]) {
    (handle.kind(), handle.bytes())
}

/// A handle from its `handle_kind` and bytes. Any kind is kept as it is: the backend of
/// that kind reads the bytes, the store does not.
pub(super) fn handle_from(kind: String, bytes: Vec<u8>) -> HardwareHandle {
    HardwareHandle::new(kind, bytes)
}

/// A `keys` row as stored, before decoding.
struct RawKey {
    name: String,
    algorithm: String,
    purpose: String,
    backend: String,
    state: String,
    primary_version: u32,
    created_at: i64,
    destroy_after: Option<i64>,
    releasable: bool,
    mac: Option<Vec<u8>>,
}

/// The MAC input of a key's record: the key, its tags and its versions (`integrity`).
fn key_canon(key: &KeyRecord) -> Canon {
    let mut canon = Canon::new("keys")
        .text(&key.name)
        .text(key.algorithm.text())
        .text(key.purpose.text())
        .text(&key.backend)
        .text(key.state.text())
        .int(i64::from(key.primary_version))
        .int(key.created_at)
        .opt_int(key.destroy_after)
        .flag(key.releasable)
        .count(key.tags.len());
    for (tag, value) in &key.tags {
        canon = canon.text(tag).text(value);
    }
    canon = canon.count(key.versions.len());
    for v in &key.versions {
        canon = canon
            .int(i64::from(v.version))
            .text(v.state.text())
            .text(v.handle.kind())
            .bytes(v.handle.bytes())
            .int(v.created_at);
    }
    canon
}

/// Keys matching `filter` (a fixed SQL condition on `keys`, with `params`), by name, each
/// checked against its MAC.
pub(super) fn select_keys(
    rows: &Rows<'_>,
    filter: &'static str,
    params: impl Params,
) -> Result<Vec<KeyRecord>> {
    select_keys_sql(rows, filter, "", params)
}

/// Keys matching `filter`, by name, then `tail` (e.g. a `LIMIT`), each checked against
/// its MAC. Both are SQL built only from fixed text and placeholders; every value is in
/// `params`.
pub(super) fn select_keys_sql(
    rows: &Rows<'_>,
    filter: &str,
    tail: &str,
    params: impl Params,
) -> Result<Vec<KeyRecord>> {
    select_unchecked(rows, filter, tail, params)?
        .into_iter()
        .map(|(key, mac)| {
            rows.check(
                &|| format!("key {:?}", key.name),
                &key_canon(&key),
                mac.as_deref(),
            )?;
            Ok(key)
        })
        .collect()
}

/// As [`select_keys_sql`], with each key's stored MAC, unchecked.
fn select_unchecked(
    conn: &Connection,
    filter: &str,
    tail: &str,
    params: impl Params,
) -> Result<Vec<(KeyRecord, Option<Vec<u8>>)>> {
    let sql = format!(
        "SELECT name, algorithm, purpose, backend, state, primary_version, created_at, \
         destroy_after, releasable, mac FROM keys WHERE {filter} ORDER BY name {tail}"
    );
    let mut stmt = conn.prepare_cached(&sql).sql()?;
    let raw = stmt
        .query_map(params, |row| {
            Ok(RawKey {
                name: row.get(0)?,
                algorithm: row.get(1)?,
                purpose: row.get(2)?,
                backend: row.get(3)?,
                state: row.get(4)?,
                primary_version: row.get(5)?,
                created_at: row.get(6)?,
                destroy_after: row.get(7)?,
                releasable: row.get(8)?,
                mac: row.get(9)?,
            })
        })
        .sql()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .sql()?;
    raw.into_iter().map(|key| decode_key(conn, key)).collect()
}

/// A key in any state, `Creating` included, checked against its MAC.
///
/// # Errors
/// [`StoreError::KeyNotFound`] if there is no such key.
pub(super) fn load_key(rows: &Rows<'_>, name: &str) -> Result<KeyRecord> {
    select_keys(rows, "name = ?1", [name])?
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::KeyNotFound(name.to_owned()))
}

/// Writes the MAC of `name`'s record as it is now, after a change made in this
/// transaction (whose caller checked the record first), and returns the record.
pub(super) fn seal_key(rows: &Rows<'_>, name: &str) -> Result<KeyRecord> {
    let (key, _) = select_unchecked(rows, "name = ?1", "", [name])?
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::KeyNotFound(name.to_owned()))?;
    let mac = rows.mac(&key_canon(&key))?;
    rows.execute(
        "UPDATE keys SET mac = ?2 WHERE name = ?1",
        rusqlite::params![name, mac],
    )
    .sql()?;
    Ok(key)
}

/// MACs every key (a store being protected: see `store_key.rs`); `read` checks that
/// none has a MAC yet.
pub(super) fn seal_all_keys(read: &Rows<'_>, write: &Rows<'_>) -> Result<u64> {
    let keys = select_keys(read, "1 = 1", rusqlite::params![])?;
    for key in &keys {
        seal_key(write, &key.name)?;
    }
    Ok(u64::try_from(keys.len()).unwrap_or(u64::MAX))
}

fn decode_key(conn: &Connection, raw: RawKey) -> Result<(KeyRecord, Option<Vec<u8>>)> {
    let context = |e: StoreError| match e {
        StoreError::Database(m) => StoreError::Database(format!("key {:?}: {m}", raw.name)),
        other => other,
    };
    let versions = load_versions(conn, &raw.name).map_err(context)?;
    let tags = load_tags(conn, &raw.name).map_err(context)?;
    let key = KeyRecord {
        algorithm: Algorithm::parse(&raw.algorithm).map_err(context)?,
        purpose: Purpose::parse(&raw.purpose).map_err(context)?,
        state: KeyState::parse(&raw.state).map_err(context)?,
        name: raw.name,
        backend: raw.backend,
        primary_version: raw.primary_version,
        created_at: raw.created_at,
        destroy_after: raw.destroy_after,
        tags,
        versions,
        releasable: raw.releasable,
    };
    Ok((key, raw.mac))
}

fn load_versions(conn: &Connection, name: &str) -> Result<Vec<VersionRecord>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT version, state, handle_kind, handle, created_at FROM key_versions \
             WHERE key_name = ?1 ORDER BY version",
        )
        .sql()?;
    let raw = stmt
        .query_map([name], |row| {
            Ok((
                row.get::<_, u32>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Vec<u8>>(3)?,
                row.get::<_, i64>(4)?,
            ))
        })
        .sql()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .sql()?;
    raw.into_iter()
        .map(|(version, state, kind, handle, created_at)| {
            Ok(VersionRecord {
                version,
                state: VersionState::parse(&state)?,
                handle: handle_from(kind, handle),
                created_at,
            })
        })
        .collect()
}

fn load_tags(conn: &Connection, name: &str) -> Result<BTreeMap<String, String>> {
    let mut stmt = conn
        .prepare_cached("SELECT tag, value FROM key_tags WHERE key_name = ?1")
        .sql()?;
    stmt.query_map([name], |row| Ok((row.get(0)?, row.get(1)?)))
        .sql()?
        .collect::<rusqlite::Result<BTreeMap<_, _>>>()
        .sql()
}

/// Every `Creating` version, with its key's backend; each key checked against its MAC.
pub(super) fn pending_versions(rows: &Rows<'_>) -> Result<Vec<PendingVersion>> {
    let filter = "name IN (SELECT key_name FROM key_versions WHERE state = ?1)";
    let keys = select_keys(rows, filter, [VersionState::Creating.text()])?;
    Ok(keys
        .into_iter()
        .flat_map(|key| {
            let (name, backend) = (key.name, key.backend);
            key.versions
                .into_iter()
                .filter(|v| v.state == VersionState::Creating)
                .map(move |v| PendingVersion {
                    name: name.clone(),
                    backend: backend.clone(),
                    version: v.version,
                    handle: v.handle,
                })
        })
        .collect())
}
