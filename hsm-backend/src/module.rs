//! Loading a PKCS#11 module, and discovering its slots, tokens and mechanisms.
//!
//! A module is initialised once per process and finalised when the last handle to it is
//! dropped: loading the same path twice returns the same context (LESSONS: one PKCS#11
//! context for the life of the process; never re-initialise under a live session).
//!
//! The one exception is recovery: a module whose token broke under it (SoftHSM2 gives up
//! on a token whose files vanished, and does not look again until `C_Initialize`) is
//! finalised and initialised again by [`Pkcs11Module::reinitialize`], which waits until no
//! call is in flight. Every call made through a session pool holds [`Pkcs11Module::calls`]
//! for its duration, and the generation it returns tells sessions opened before the
//! re-initialisation apart: their handles may have been handed out again, so they are
//! forgotten, never closed.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, Weak};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::slot::Slot;

use crate::error::{HsmError, Result};
use crate::quirks::Quirks;

/// How an operator names a token: never by slot index, which changes after initialisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    /// The token's `CKA_LABEL` (at most 32 bytes).
    Label(String),
    /// The token's serial number.
    Serial(String),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSelector::Label(l) => write!(f, "label {l:?}"),
            TokenSelector::Serial(s) => write!(f, "serial {s:?}"),
        }
    }
}

/// What a slot's token reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDescription {
    /// Slot that holds it now (informational: it may change).
    pub slot_id: u64,
    /// Label, trailing blanks removed.
    pub label: String,
    /// Serial number.
    pub serial: String,
    /// Manufacturer id.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Whether `C_InitToken` has run.
    pub initialized: bool,
    /// Whether the user PIN is set.
    pub user_pin_initialized: bool,
    /// Whether the user PIN is locked.
    pub user_pin_locked: bool,
    /// Whether the SO PIN is locked.
    pub so_pin_locked: bool,
    /// The module's `CK_INFO` manufacturer (`SoftHSM`, `tpm2-software.github.io`).
    pub library_manufacturer: String,
}

impl TokenDescription {
    /// Whether this token is the one the selector names.
    pub fn matches(&self, selector: &TokenSelector) -> bool {
        match selector {
            TokenSelector::Label(l) => self.initialized && self.label == *l,
            TokenSelector::Serial(s) => self.serial == *s,
        }
    }

    /// The vendor deviations this token's module needs worked around.
    pub fn quirks(&self) -> Quirks {
        Quirks::for_token(&self.library_manufacturer, &self.manufacturer, &self.model)
    }
}

/// A token found on a slot.
#[derive(Debug, Clone)]
pub struct Token {
    pub(crate) slot: Slot,
    /// What the token reports about itself.
    pub description: TokenDescription,
}

impl Token {
    /// The slot that holds the token now, for raw PKCS#11 through
    /// [`Pkcs11Module::context`]. Find the token again rather than keeping this.
    pub fn slot(&self) -> Slot {
        self.slot
    }
}

struct ModuleInner {
    ctx: Pkcs11,
    path: PathBuf,
    /// How many times the module was re-initialised. Readers are calls in flight.
    generation: RwLock<u64>,
}

impl Drop for ModuleInner {
    fn drop(&mut self) {
        // The last handle is gone: give the library back its resources.
        if let Err(e) = self.ctx.clone().finalize() {
            tracing::warn!(module = %self.path.display(), error = %e, "C_Finalize failed");
        }
    }
}

fn init_args() -> CInitializeArgs {
    CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)
}

static LOADED: Mutex<Option<HashMap<PathBuf, Weak<ModuleInner>>>> = Mutex::new(None);

/// A loaded and initialised PKCS#11 module. Cheap to clone.
#[derive(Clone)]
pub struct Pkcs11Module {
    inner: Arc<ModuleInner>,
}

impl fmt::Debug for Pkcs11Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Module")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl Pkcs11Module {
    /// Loads the module at `path` and initialises it for multi-threaded use, or returns the
    /// context this process already has for that path.
    ///
    /// # Errors
    /// [`HsmError::ModuleLoad`] names the path and the loader's or the module's reason.
    pub fn load(path: &Path) -> Result<Pkcs11Module> {
        let load_err = |reason: String| HsmError::ModuleLoad {
            path: path.to_path_buf(),
            reason,
        };
        let key = path.canonicalize().map_err(|e| load_err(e.to_string()))?;
        let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
        let loaded = loaded.get_or_insert_with(HashMap::new);
        if let Some(inner) = loaded.get(&key).and_then(Weak::upgrade) {
            return Ok(Pkcs11Module { inner });
        }
        let ctx = Pkcs11::new(&key).map_err(|e| load_err(e.to_string()))?;
        ctx.initialize(init_args())
            .map_err(|e| load_err(format!("C_Initialize: {e}")))?;
        let inner = Arc::new(ModuleInner {
            ctx,
            path: key.clone(),
            generation: RwLock::new(0),
        });
        loaded.insert(key, Arc::downgrade(&inner));
        Ok(Pkcs11Module { inner })
    }

    /// The path the module was loaded from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Holds off [`Pkcs11Module::reinitialize`] while a call is in flight, and says which
    /// generation of the module the call runs against.
    pub(crate) fn calls(&self) -> RwLockReadGuard<'_, u64> {
        self.inner
            .generation
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Finalises and initialises the module again, once no call is in flight, unless that
    /// already happened since `seen` (another pool recovered first). Sessions of earlier
    /// generations are dead afterwards, and so is every login.
    ///
    /// # Errors
    /// [`HsmError::ModuleLoad`] when `C_Initialize` fails: the module stays unusable, and
    /// the next recovery tries again.
    pub(crate) fn reinitialize(&self, seen: u64) -> Result<()> {
        let mut generation = self
            .inner
            .generation
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if *generation != seen {
            return Ok(());
        }
        *generation += 1;
        if let Err(e) = self.inner.ctx.clone().finalize() {
            tracing::warn!(module = %self.inner.path.display(), error = %e, "C_Finalize failed");
        }
        self.inner
            .ctx
            .initialize(init_args())
            .map_err(|e| HsmError::ModuleLoad {
                path: self.inner.path.clone(),
                reason: format!("C_Initialize after recovery: {e}"),
            })?;
        tracing::warn!(module = %self.inner.path.display(), generation = *generation,
            "PKCS#11 module re-initialised to recover a broken token");
        Ok(())
    }

    /// The serial number of the token in `slot`, if it answers `C_GetTokenInfo`: a token
    /// whose files or device went away does not, while a token that merely lacks one key
    /// does. Called by pools with [`Pkcs11Module::calls`] held.
    pub(crate) fn token_serial(&self, slot: Slot) -> Option<String> {
        let info = self.inner.ctx.get_token_info(slot).ok()?;
        Some(info.serial_number().trim_end().to_string())
    }

    /// The underlying cryptoki context, for tooling and tests that need raw PKCS#11.
    pub fn context(&self) -> &Pkcs11 {
        &self.inner.ctx
    }

    /// Every slot that holds a token, initialised or not.
    ///
    /// # Errors
    /// The module failed to list slots or read token information.
    pub fn tokens(&self) -> Result<Vec<Token>> {
        let slots = self
            .inner
            .ctx
            .get_slots_with_token()
            .map_err(|e| self.error(e))?;
        slots.into_iter().map(|slot| self.token_on(slot)).collect()
    }

    /// Finds exactly one token by label or serial.
    ///
    /// # Errors
    /// [`HsmError::TokenNotFound`] or [`HsmError::TokenAmbiguous`].
    pub fn find_token(&self, selector: &TokenSelector) -> Result<Token> {
        let mut found = self
            .tokens()?
            .into_iter()
            .filter(|t| t.description.matches(selector));
        match (found.next(), found.next()) {
            (Some(token), None) => Ok(token),
            (None, _) => Err(HsmError::TokenNotFound(selector.clone())),
            (Some(_), Some(_)) => Err(HsmError::TokenAmbiguous(selector.clone())),
        }
    }

    /// The names of the mechanisms a token offers (`CKM_ECDSA`, `CKM_AES_GCM`, ...).
    ///
    /// # Errors
    /// The module failed to list mechanisms.
    pub fn mechanisms(&self, token: &Token) -> Result<Vec<String>> {
        let list = self
            .inner
            .ctx
            .get_mechanism_list(token.slot)
            .map_err(|e| self.error(e))?;
        Ok(list.iter().map(ToString::to_string).collect())
    }

    fn token_on(&self, slot: Slot) -> Result<Token> {
        let library = self
            .inner
            .ctx
            .get_library_info()
            .map_err(|e| self.error(e))?;
        let info = self
            .inner
            .ctx
            .get_token_info(slot)
            .map_err(|e| self.error(e))?;
        Ok(Token {
            slot,
            description: TokenDescription {
                slot_id: slot.id(),
                label: info.label().trim_end().to_string(),
                serial: info.serial_number().trim_end().to_string(),
                manufacturer: info.manufacturer_id().trim_end().to_string(),
                model: info.model().trim_end().to_string(),
                initialized: info.token_initialized(),
                user_pin_initialized: info.user_pin_initialized(),
                user_pin_locked: info.user_pin_locked(),
                so_pin_locked: info.so_pin_locked(),
                library_manufacturer: library.manufacturer_id().trim_end().to_string(),
            },
        })
    }

    pub(crate) fn error(&self, e: cryptoki::error::Error) -> HsmError {
        HsmError::from_pkcs11(e, crate::error::Op::General, &Quirks::STANDARD)
    }
}
