//! The backend: one token, one session pool, and the operations on keys it holds.
//!
//! Operations live in sibling modules by family (`key_management`, `sign`, `encrypt`,
//! `wrap`, `random`), each an `impl HsmBackend` block.

use std::path::PathBuf;
use std::sync::Mutex;

use crate::capabilities::Capabilities;
use crate::error::{HsmError, Result};
use crate::module::{Pkcs11Module, TokenDescription, TokenSelector};
use crate::pin::Pin;
use crate::pool::{PoolConfig, SessionPool};

/// Where the token is and how to log in to it.
#[derive(Debug, Clone)]
pub struct HsmConfig {
    /// Path of the PKCS#11 module (`libsofthsm2.so`, a network HSM's client library).
    pub module: PathBuf,
    /// Which token to use.
    pub token: TokenSelector,
    /// The user PIN.
    pub user_pin: Pin,
    /// Session pool settings.
    pub pool: PoolConfig,
}

/// Keys inside one PKCS#11 token, used through a pool of logged-in sessions.
#[derive(Debug)]
pub struct HsmBackend {
    // Sessions close before the module may be finalised: keep `pool` first.
    pub(crate) pool: SessionPool,
    keygen: Mutex<()>,
    token: TokenDescription,
    capabilities: Capabilities,
    module: Pkcs11Module,
}

impl HsmBackend {
    /// Loads the module, finds the token, opens the pool and logs in.
    ///
    /// # Errors
    /// The module cannot load, the token is not found or not initialised, or the PIN is
    /// wrong or locked. Each error names what failed.
    pub fn open(config: HsmConfig) -> Result<HsmBackend> {
        let module = Pkcs11Module::load(&config.module)?;
        Self::open_with(module, &config.token, config.user_pin, config.pool)
    }

    /// Like [`HsmBackend::open`], on a module already loaded.
    ///
    /// # Errors
    /// As for [`HsmBackend::open`].
    pub fn open_with(
        module: Pkcs11Module,
        selector: &TokenSelector,
        user_pin: Pin,
        pool: PoolConfig,
    ) -> Result<HsmBackend> {
        let token = module.find_token(selector)?;
        if !token.description.user_pin_initialized {
            return Err(HsmError::UserPinNotInitialized);
        }
        let capabilities = Capabilities::discover(&module, &token)?;
        let pool = SessionPool::open(module.clone(), &token, user_pin, pool)?;
        tracing::info!(
            token = %token.description.label,
            serial = %token.description.serial,
            module = %module.path().display(),
            "HSM token opened"
        );
        Ok(HsmBackend {
            pool,
            keygen: Mutex::new(()),
            token: token.description,
            capabilities,
            module,
        })
    }

    /// What the token reports about itself.
    pub fn token(&self) -> &TokenDescription {
        &self.token
    }

    /// What the token's module can do, as it said when the backend opened.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// The loaded module.
    pub fn module(&self) -> &Pkcs11Module {
        &self.module
    }

    /// How many keys the idle sessions remember handles for, each at most
    /// [`PoolConfig::cached_keys`] (for metrics and tests).
    pub fn cached_keys(&self) -> Vec<usize> {
        self.pool.cached_keys()
    }

    /// Runs `f` while holding the key-generation lock if this token needs one.
    pub(crate) fn serialize_keygen<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if self.pool.quirks().serialize_key_generation {
            let _turn = self.keygen.lock().unwrap_or_else(|p| p.into_inner());
            f()
        } else {
            f()
        }
    }
}
