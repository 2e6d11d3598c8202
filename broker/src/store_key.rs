//! The store key (docs/sealing.md, "The broker's own data at rest"): made once from the
//! hardware's generator, kept in the database only wrapped by the `[store] protect_with`
//! backend (an HSM key-encryption key, `kbsys:store:kek:1`, or a TPM PCR policy), and
//! unwrapped by that hardware at every start. The rows' MACs are made with it
//! (`crate::store::integrity`); without the hardware nothing checks, so nothing is read.

use sealed_format::{DataKey, KekKind};
use secrecy::ExposeSecret;

use crate::backends::{Backends, KeyRef, WrappedDataKey};
use crate::ca::authority::unix_now;
use crate::config::Config;
use crate::error::{BrokerError, Result};
use crate::store::integrity::RowKey;
use crate::store::sqlite::{SqliteStore, StoredStoreKey};
use crate::store::{Algorithm, StoreError};

/// The name of the HSM's key-encryption key: `CKA_ID` `kbsys:store:kek:1`.
pub const KEK_NAME: &str = "store";

/// Unlocks `store` with its store key, or protects it with a new one, as `protect_with`
/// (`[store] protect_with`) says. `start_over` (`serve --orphan-all-existing-keys`: the
/// operator says the store was lost) lets a new store key be wrapped under the HSM's
/// existing key-encryption key.
///
/// # Errors
/// - the store has a store key and `protect_with` is unset or names another backend;
/// - the hardware cannot unwrap the store key (another token, a TPM whose PCRs left the
///   sealed-to state, an edited row);
/// - a new store key would replace one that was deleted: the HSM already holds
///   `kbsys:store:kek:1`, or a row already carries a MAC.
pub async fn open(
    store: &SqliteStore,
    backends: &Backends,
    protect_with: Option<&str>,
    start_over: bool,
) -> Result<()> {
    let stored = store.stored_key().await?;
    match (protect_with, stored) {
        (None, None) => {
            tracing::warn!(
                "[store] protect_with is not set: the store's rows carry no MAC, and an \
                 edit to the database file would go unnoticed"
            );
            Ok(())
        }
        (None, Some(stored)) => Err(BrokerError::FailedPrecondition(format!(
            "store.protect_with: the store is protected by a store key that backend {:?} \
             holds; set protect_with = {:?}",
            stored.backend, stored.backend
        ))),
        (Some(name), Some(stored)) if stored.backend != name => {
            Err(BrokerError::FailedPrecondition(format!(
                "store.protect_with names {name:?}, but the store key is held by {:?}",
                stored.backend
            )))
        }
        (Some(_), Some(stored)) => unlock(store, backends, &stored).await,
        (Some(name), None) => protect(store, backends, name, start_over).await,
    }
}

/// The store of `config`, for a command-line process (`keybroker ca`, `keybroker store
/// verify`): unlocked as the broker does at start, opening only the backend that
/// `[store] protect_with` names. Blocking: not for an async worker. Without
/// `may_protect`, a store that has no store key yet is refused rather than protected.
///
/// # Errors
/// As [`open`]; the store or the backend cannot be opened.
pub fn open_offline(config: &Config, may_protect: bool) -> Result<SqliteStore> {
    let store = SqliteStore::open(&config.store.path)?;
    let protect_with = config.store.protect_with.as_deref();
    if !may_protect && protect_with.is_some() && !store.protected() {
        return Err(BrokerError::FailedPrecondition(
            "the store has no store key yet: start the broker once with \
             [store] protect_with to make it"
                .into(),
        ));
    }
    let backends = match protect_with {
        Some(name) => crate::server::open_configured(config, Some(name))
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?,
        None => Backends::default(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BrokerError::Internal(format!("a runtime: {e}")))?;
    runtime.block_on(open(&store, &backends, protect_with, false))?;
    Ok(store)
}

async fn unlock(store: &SqliteStore, backends: &Backends, stored: &StoredStoreKey) -> Result<()> {
    let backend = backends.get(&stored.backend)?;
    let wrapped = WrappedDataKey {
        kek: KekKind::from_code(stored.wrapping)
            .map_err(|e| StoreError::Tampered(format!("the stored store key's wrapping: {e}")))?,
        bytes: stored.wrapped.clone(),
    };
    let key = KeyRef {
        algorithm: Algorithm::Aes256,
        handle: &stored.kek,
    };
    let data_key = backend
        .backend
        .unwrap_data_key(key, &wrapped)
        .await
        .map_err(|e| {
            BrokerError::FailedPrecondition(format!(
                "the store key cannot be unwrapped by backend {:?}: {e}",
                stored.backend
            ))
        })?;
    store.unlock(RowKey::derive(&data_key)?);
    tracing::info!(backend = %stored.backend, "store unlocked");
    Ok(())
}

async fn protect(
    store: &SqliteStore,
    backends: &Backends,
    name: &str,
    start_over: bool,
) -> Result<()> {
    let backend = backends.get(name)?;
    let (kek, made) = backend.backend.system_wrap_key(KEK_NAME).await?;
    if !made && !start_over {
        return Err(BrokerError::FailedPrecondition(format!(
            "backend {name:?} already holds the store's key-encryption key \
             (kbsys:store:kek:1), but the store has no store key: the store was lost or \
             replaced, or its store key's row was deleted. Restore the database; or, to \
             start over with this one, pass --orphan-all-existing-keys"
        )));
    }
    if !made {
        tracing::warn!(backend = %name, "a new store key, under the existing key-encryption key \
            (--orphan-all-existing-keys)");
    }
    let random = backend.backend.random(DataKey::LEN).await?;
    let data_key = DataKey::from_slice(random.expose_secret())
        .map_err(|e| BrokerError::Internal(e.to_string()))?;
    let key = KeyRef {
        algorithm: Algorithm::Aes256,
        handle: &kek,
    };
    let wrapped = backend.backend.wrap_data_key(key, &data_key).await?;
    let stored = StoredStoreKey {
        backend: name.to_owned(),
        kek,
        wrapping: wrapped.kek.code(),
        wrapped: wrapped.bytes,
        created_at: i64::try_from(unix_now()).unwrap_or(i64::MAX),
    };
    let tagged = store.protect(stored, RowKey::derive(&data_key)?).await?;
    tracing::warn!(
        backend = %name,
        keys = tagged.keys,
        settings = tagged.settings,
        ca_versions = tagged.ca_versions,
        secret_versions = tagged.secret_versions,
        leases = tagged.leases,
        "store key made: the rows already in the store are trusted as they are now, once"
    );
    Ok(())
}
