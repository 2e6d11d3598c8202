//! Rows to records and back: the stable text of every enumeration, and reading keys (with their
//! versions and tags) and backends. A value the code does not know is an error, never a
//! panic: it means a newer broker wrote it or the file was edited.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Params};

use super::Sql;
use crate::store::{
    Algorithm, BackendRecord, HardwareHandle, KeyRecord, KeyState, PendingVersion, Purpose, Result,
    StoreError, VersionRecord, VersionState,
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

fn unknown(what: &str, text: &str) -> StoreError {
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
}

/// Keys matching `filter` (a fixed SQL condition on `keys`, with `params`), by name.
pub(super) fn select_keys(
    conn: &Connection,
    filter: &'static str,
    params: impl Params,
) -> Result<Vec<KeyRecord>> {
    select_keys_sql(conn, filter, "", params)
}

/// Keys matching `filter`, by name, then `tail` (e.g. a `LIMIT`). Both are SQL built
/// only from fixed text and placeholders; every value is in `params`.
pub(super) fn select_keys_sql(
    conn: &Connection,
    filter: &str,
    tail: &str,
    params: impl Params,
) -> Result<Vec<KeyRecord>> {
    let sql = format!(
        "SELECT name, algorithm, purpose, backend, state, primary_version, created_at, \
         destroy_after, releasable FROM keys WHERE {filter} ORDER BY name {tail}"
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
            })
        })
        .sql()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .sql()?;
    raw.into_iter().map(|key| decode_key(conn, key)).collect()
}

/// A key in any state, `Creating` included.
pub(super) fn load_key(conn: &Connection, name: &str) -> Result<Option<KeyRecord>> {
    Ok(select_keys(conn, "name = ?1", [name])?.into_iter().next())
}

fn decode_key(conn: &Connection, raw: RawKey) -> Result<KeyRecord> {
    let context = |e: StoreError| match e {
        StoreError::Database(m) => StoreError::Database(format!("key {:?}: {m}", raw.name)),
        other => other,
    };
    let versions = load_versions(conn, &raw.name).map_err(context)?;
    let tags = load_tags(conn, &raw.name).map_err(context)?;
    Ok(KeyRecord {
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
    })
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

/// The state of a key in any state.
///
/// # Errors
/// [`StoreError::KeyNotFound`] if there is no such key.
pub(super) fn key_state(conn: &Connection, name: &str) -> Result<KeyState> {
    let state: Option<String> = conn
        .query_row("SELECT state FROM keys WHERE name = ?1", [name], |row| {
            row.get(0)
        })
        .optional()
        .sql()?;
    match state {
        Some(state) => KeyState::parse(&state),
        None => Err(StoreError::KeyNotFound(name.to_owned())),
    }
}

/// The state of one version of a key.
///
/// # Errors
/// [`StoreError::VersionNotFound`] if the key has no such version.
pub(super) fn version_state(conn: &Connection, name: &str, version: u32) -> Result<VersionState> {
    let state: Option<String> = conn
        .query_row(
            "SELECT state FROM key_versions WHERE key_name = ?1 AND version = ?2",
            rusqlite::params![name, version],
            |row| row.get(0),
        )
        .optional()
        .sql()?;
    match state {
        Some(state) => VersionState::parse(&state),
        None => Err(StoreError::VersionNotFound {
            name: name.to_owned(),
            version,
        }),
    }
}

/// A `backends` row as stored, before decoding.
struct RawBackend {
    name: String,
    kind: String,
    module_path: Option<String>,
    token_label: Option<String>,
    user_pin_file: Option<String>,
    user_pin_env: Option<String>,
    tcti: Option<String>,
}

/// Every registered backend, by name.
pub(super) fn backends(conn: &Connection) -> Result<Vec<BackendRecord>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT name, kind, module_path, token_label, user_pin_file, user_pin_env, tcti \
             FROM backends ORDER BY name",
        )
        .sql()?;
    let raw = stmt
        .query_map([], |row| {
            Ok(RawBackend {
                name: row.get(0)?,
                kind: row.get(1)?,
                module_path: row.get(2)?,
                token_label: row.get(3)?,
                user_pin_file: row.get(4)?,
                user_pin_env: row.get(5)?,
                tcti: row.get(6)?,
            })
        })
        .sql()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .sql()?;
    raw.into_iter().map(decode_backend).collect()
}

fn decode_backend(raw: RawBackend) -> Result<BackendRecord> {
    let name = raw.name;
    let missing = |column: &str| StoreError::Database(format!("backend {name:?} has no {column}"));
    match raw.kind.as_str() {
        HSM => Ok(BackendRecord::Hsm {
            module_path: raw.module_path.ok_or_else(|| missing("module_path"))?,
            token_label: raw.token_label.ok_or_else(|| missing("token_label"))?,
            user_pin_file: raw.user_pin_file,
            user_pin_env: raw.user_pin_env,
            name,
        }),
        TPM => Ok(BackendRecord::Tpm {
            tcti: raw.tcti.ok_or_else(|| missing("tcti"))?,
            name,
        }),
        other => Err(unknown("backend kind", other)),
    }
}

/// Every `Creating` version, with its key's backend.
pub(super) fn pending_versions(conn: &Connection) -> Result<Vec<PendingVersion>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT k.name, k.backend, v.version, v.handle_kind, v.handle \
             FROM key_versions v JOIN keys k ON k.name = v.key_name \
             WHERE v.state = ?1 ORDER BY k.name, v.version",
        )
        .sql()?;
    let raw = stmt
        .query_map([VersionState::Creating.text()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, u32>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, Vec<u8>>(4)?,
            ))
        })
        .sql()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .sql()?;
    raw.into_iter()
        .map(|(name, backend, version, kind, handle)| {
            Ok(PendingVersion {
                handle: handle_from(kind, handle),
                name,
                backend,
                version,
            })
        })
        .collect()
}

/// Checks what the schema cannot: an HSM backend has exactly one PIN source.
pub(super) fn validate_backend(backend: &BackendRecord) -> Result<()> {
    match backend {
        BackendRecord::Hsm {
            user_pin_file,
            user_pin_env,
            ..
        } if user_pin_file.is_some() == user_pin_env.is_some() => {
            Err(StoreError::Database(format!(
                "backend {:?} needs exactly one of user_pin_file and user_pin_env",
                backend.name()
            )))
        }
        _ => Ok(()),
    }
}

/// Inserts a backend row; the caller maps a unique violation.
pub(super) fn insert_backend(
    conn: &Connection,
    backend: &BackendRecord,
) -> rusqlite::Result<usize> {
    match backend {
        BackendRecord::Hsm {
            name,
            module_path,
            token_label,
            user_pin_file,
            user_pin_env,
        } => conn.execute(
            "INSERT INTO backends (name, kind, module_path, token_label, user_pin_file, \
             user_pin_env) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                name,
                HSM,
                module_path,
                token_label,
                user_pin_file,
                user_pin_env
            ],
        ),
        BackendRecord::Tpm { name, tcti } => conn.execute(
            "INSERT INTO backends (name, kind, tcti) VALUES (?1, ?2, ?3)",
            rusqlite::params![name, TPM, tcti],
        ),
    }
}
