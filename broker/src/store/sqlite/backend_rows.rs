//! The `backends` and `policy` tables, each row checked against its MAC
//! (`crate::store::integrity`): a backend's module path or the authorization policy
//! edited in the database file is refused, never loaded.

use rusqlite::{Connection, OptionalExtension};

use super::rows::{HSM, TPM, unknown};
use super::{Rows, Sql};
use crate::store::integrity::Canon;
use crate::store::{BackendRecord, Result, StoreError};

/// A `backends` row as stored, before decoding.
struct RawBackend {
    name: String,
    kind: String,
    module_path: Option<String>,
    token_label: Option<String>,
    user_pin_file: Option<String>,
    user_pin_env: Option<String>,
    tcti: Option<String>,
    mac: Option<Vec<u8>>,
}

/// The MAC input of a backend's row.
fn backend_canon(backend: &BackendRecord) -> Canon {
    match backend {
        BackendRecord::Hsm {
            name,
            module_path,
            token_label,
            user_pin_file,
            user_pin_env,
        } => Canon::new("backends")
            .text(name)
            .text(HSM)
            .text(module_path)
            .text(token_label)
            .opt_text(user_pin_file.as_deref())
            .opt_text(user_pin_env.as_deref()),
        BackendRecord::Tpm { name, tcti } => Canon::new("backends").text(name).text(TPM).text(tcti),
    }
}

/// Every registered backend, by name, each checked against its MAC.
pub(super) fn backends(rows: &Rows<'_>) -> Result<Vec<BackendRecord>> {
    let mut stmt = rows
        .prepare_cached(
            "SELECT name, kind, module_path, token_label, user_pin_file, user_pin_env, tcti, \
             mac FROM backends ORDER BY name",
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
                mac: row.get(7)?,
            })
        })
        .sql()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .sql()?;
    raw.into_iter()
        .map(|raw| {
            let mac = raw.mac.clone();
            let backend = decode_backend(raw)?;
            let what = || format!("backend {:?}", backend.name());
            rows.check(&what, &backend_canon(&backend), mac.as_deref())?;
            Ok(backend)
        })
        .collect()
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

/// Inserts a backend row with its MAC; [`StoreError::BackendExists`] if the name is taken.
pub(super) fn insert_backend(rows: &Rows<'_>, backend: &BackendRecord) -> Result<()> {
    match insert_backend_row(rows, backend) {
        Err(e) if super::is_unique_violation(&e) => {
            return Err(StoreError::BackendExists(backend.name().to_owned()));
        }
        other => other.sql()?,
    };
    seal_backend(rows, backend)
}

/// Writes the MAC of `backend`'s row.
fn seal_backend(rows: &Rows<'_>, backend: &BackendRecord) -> Result<()> {
    let mac = rows.mac(&backend_canon(backend))?;
    rows.execute(
        "UPDATE backends SET mac = ?2 WHERE name = ?1",
        rusqlite::params![backend.name(), mac],
    )
    .sql()
    .map(drop)
}

fn insert_backend_row(conn: &Connection, backend: &BackendRecord) -> rusqlite::Result<usize> {
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

/// The policy row's MAC input.
fn policy_canon(text: &str) -> Canon {
    Canon::new("policy").int(1).text(text)
}

/// Stores the policy text with its MAC.
pub(super) fn set_policy(rows: &Rows<'_>, text: &str) -> Result<()> {
    rows.execute(
        "INSERT INTO policy (id, text, mac) VALUES (1, ?1, ?2) \
         ON CONFLICT (id) DO UPDATE SET text = excluded.text, mac = excluded.mac",
        rusqlite::params![text, rows.mac(&policy_canon(text))?],
    )
    .sql()
    .map(drop)
}

/// The stored policy text, checked against its MAC.
pub(super) fn policy(rows: &Rows<'_>) -> Result<Option<String>> {
    let row: Option<(String, Option<Vec<u8>>)> = rows
        .query_row("SELECT text, mac FROM policy WHERE id = 1", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()
        .sql()?;
    let Some((text, mac)) = row else {
        return Ok(None);
    };
    let what = || "authorization policy".to_owned();
    rows.check(&what, &policy_canon(&text), mac.as_deref())?;
    Ok(Some(text))
}

/// MACs every backend and the policy (a store being protected: see `store_key.rs`);
/// `read` checks that none has a MAC yet.
pub(super) fn seal_all(read: &Rows<'_>, write: &Rows<'_>) -> Result<u64> {
    let backends = backends(read)?;
    for backend in &backends {
        seal_backend(write, backend)?;
    }
    let policy = policy(read)?;
    if let Some(text) = &policy {
        set_policy(write, text)?;
    }
    Ok(u64::try_from(backends.len()).unwrap_or(u64::MAX) + u64::from(policy.is_some()))
}
