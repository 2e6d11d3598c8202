//! The registered hardware: HSM tokens and TPMs by name, opened at start from the
//! configuration and the store, and added at run time through the admin API.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Semaphore;

use hsm_backend::{HsmBackend, HsmConfig, HsmError, Pin, PoolConfig, TokenSelector};
use tpm_backend::{HierarchyAuth, HierarchyAuths, Tcti, TpmBackend, TpmConfig};

use crate::error::{BrokerError, Result};
use crate::store::BackendRecord;

/// One opened backend.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a handful of these live for the whole process
pub enum Backend {
    Hsm(HsmBackend),
    Tpm(TpmBackend),
}

impl Backend {
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Hsm(_) => "hsm",
            Backend::Tpm(_) => "tpm",
        }
    }
}

/// An opened backend with how it was described.
#[derive(Debug)]
pub struct NamedBackend {
    pub name: String,
    pub description: String,
    pub backend: Backend,
    /// HSMs: one permit per PKCS#11 session. Calls beyond the pool wait here as tasks,
    /// not as blocking-pool threads parked in the session pool.
    sessions: Option<Arc<Semaphore>>,
}

/// All backends, by name.
#[derive(Debug, Default)]
pub struct Backends {
    by_name: RwLock<BTreeMap<String, Arc<NamedBackend>>>,
}

/// How many PKCS#11 sessions a backend registered through the API gets.
const REGISTERED_SESSIONS: usize = 4;
/// How long an HSM call waits for a free session before the HSM counts as busy.
const SESSION_WAIT: Duration = Duration::from_secs(5);

impl Backends {
    /// A backend by name.
    ///
    /// # Errors
    /// [`BrokerError::UnknownBackend`].
    pub fn get(&self, name: &str) -> Result<Arc<NamedBackend>> {
        self.by_name
            .read()
            .map_err(|_| BrokerError::Internal("backend registry poisoned".into()))?
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownBackend(name.to_string()))
    }

    /// Every backend, by name.
    pub fn all(&self) -> Vec<Arc<NamedBackend>> {
        self.by_name
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Adds an opened backend.
    ///
    /// # Errors
    /// The name is taken.
    pub fn insert(&self, backend: NamedBackend) -> Result<Arc<NamedBackend>> {
        let mut map = self
            .by_name
            .write()
            .map_err(|_| BrokerError::Internal("backend registry poisoned".into()))?;
        if map.contains_key(&backend.name) {
            return Err(BrokerError::InvalidArgument(format!(
                "backend {:?} is already registered",
                backend.name
            )));
        }
        let backend = Arc::new(backend);
        map.insert(backend.name.clone(), backend.clone());
        Ok(backend)
    }
}

/// Opens an HSM token (blocking: loads the module and logs in).
///
/// # Errors
/// The module, token or PIN is wrong; the message names which.
pub fn open_hsm(
    name: &str,
    module: &Path,
    token_label: &str,
    pin: Pin,
    sessions: usize,
) -> Result<NamedBackend> {
    let config = HsmConfig {
        module: module.to_path_buf(),
        token: TokenSelector::Label(token_label.to_string()),
        user_pin: pin,
        pool: PoolConfig {
            size: sessions,
            checkout_timeout: SESSION_WAIT,
        },
    };
    let backend = HsmBackend::open(config).map_err(|e| {
        BrokerError::FailedPrecondition(format!("cannot open HSM backend {name:?}: {e}"))
    })?;
    Ok(NamedBackend {
        name: name.to_string(),
        description: format!("{} token {token_label:?}", module.display()),
        backend: Backend::Hsm(backend),
        sessions: Some(Arc::new(Semaphore::new(sessions))),
    })
}

/// Connects to a TPM.
///
/// # Errors
/// The TCTI is malformed or the TPM does not answer.
pub fn open_tpm(name: &str, tcti: &str) -> Result<NamedBackend> {
    open_tpm_with(name, tcti, HierarchyAuths::default())
}

/// As [`open_tpm`], presenting these hierarchy auth values.
///
/// # Errors
/// As [`open_tpm`].
pub fn open_tpm_with(name: &str, tcti: &str, auths: HierarchyAuths) -> Result<NamedBackend> {
    let parsed = Tcti::new(tcti).map_err(|e| BrokerError::InvalidArgument(e.to_string()))?;
    let mut config = TpmConfig::new(parsed);
    config.hierarchy_auth = auths;
    let backend = TpmBackend::connect(config).map_err(|e| {
        BrokerError::FailedPrecondition(format!("cannot open TPM backend {name:?}: {e}"))
    })?;
    Ok(NamedBackend {
        name: name.to_string(),
        description: format!("TPM {tcti}"),
        backend: Backend::Tpm(backend),
        sessions: None,
    })
}

/// Opens a backend registered through the admin API.
///
/// # Errors
/// As for [`open_hsm`] and [`open_tpm`]; the PIN source cannot be read.
pub fn open_record(record: &BackendRecord) -> Result<NamedBackend> {
    match record {
        BackendRecord::Hsm {
            name,
            module_path,
            token_label,
            user_pin_file,
            user_pin_env,
        } => {
            let pin = read_pin(
                user_pin_file.as_deref().map(Path::new),
                user_pin_env.as_deref(),
            )?;
            open_hsm(
                name,
                Path::new(module_path),
                token_label,
                pin,
                REGISTERED_SESSIONS,
            )
        }
        BackendRecord::Tpm { name, tcti } => open_tpm(name, tcti),
    }
}

/// Reads a PIN from exactly one of a file or an environment variable.
///
/// # Errors
/// Neither or both given; the source cannot be read or is readable by others.
/// Reads a TPM hierarchy auth value: hex text in a file that group and others cannot read.
///
/// # Errors
/// The file is missing, too open, not hex, or the value is empty or too long; the message
/// names the file but never shows its content.
pub fn read_tpm_auth(path: &Path) -> Result<HierarchyAuth> {
    let bad = |why: String| BrokerError::FailedPrecondition(format!("{}: {why}", path.display()));
    let bytes = crate::tls::read_secret_file(path).map_err(|e| bad(e.to_string()))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("not hex text".into()))?;
    let decoded =
        zeroize::Zeroizing::new(hex::decode(text.trim()).map_err(|_| bad("not hex text".into()))?);
    HierarchyAuth::new(decoded).map_err(|e| bad(e.to_string()))
}

pub fn read_pin(file: Option<&Path>, env: Option<&str>) -> Result<Pin> {
    let pin = match (file, env) {
        (Some(file), None) => Pin::from_file(file),
        (None, Some(var)) => Pin::from_env(var),
        _ => {
            return Err(BrokerError::InvalidArgument(
                "give exactly one of a PIN file or a PIN environment variable".into(),
            ));
        }
    };
    pin.map_err(|e| BrokerError::FailedPrecondition(e.to_string()))
}

/// Runs a blocking PKCS#11 call on tokio's blocking pool, once one of the backend's
/// sessions is free: no more blocking threads than sessions work on one token.
///
/// # Errors
/// `f`'s error; [`BrokerError::ResourceExhausted`] (via `PoolExhausted`) when no session
/// frees up in time; [`BrokerError::Internal`] if the backend is not an HSM.
pub async fn on_hsm<T: Send + 'static>(
    backend: Arc<NamedBackend>,
    f: impl FnOnce(&HsmBackend) -> Result<T> + Send + 'static,
) -> Result<T> {
    let permit = match &backend.sessions {
        Some(sessions) => {
            let turn = tokio::time::timeout(SESSION_WAIT, sessions.clone().acquire_owned());
            match turn.await {
                Ok(Ok(permit)) => Some(permit),
                Ok(Err(_closed)) => {
                    return Err(BrokerError::Internal("HSM session gate closed".into()));
                }
                Err(_elapsed) => return Err(HsmError::PoolExhausted(SESSION_WAIT).into()),
            }
        }
        None => None,
    };
    tokio::task::spawn_blocking(move || {
        // Held until the call ends, even if the caller stopped waiting.
        let _permit = permit;
        match &backend.backend {
            Backend::Hsm(hsm) => f(hsm),
            Backend::Tpm(_) => Err(BrokerError::Internal(format!(
                "backend {:?} is not an HSM",
                backend.name
            ))),
        }
    })
    .await?
}
