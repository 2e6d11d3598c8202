//! HSM tokens through PKCS#11 (`hsm_backend::HsmBackend`): keys named by the `CKA_ID` the
//! broker chooses ([`KeyId`]), and the session gate every call to a token goes through.
//!
//! PKCS#11 calls block, so they run on tokio's blocking pool, but only once one of the
//! token's sessions is free ([`HsmKeys::run`]): calls beyond the pool wait as tasks, not as
//! blocking threads parked in the session pool.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hsm_backend::{
    AeadCiphertext, Digest, GCM_NONCE_LEN, HsmBackend, HsmConfig, HsmError, KeyId, KeyLabel,
    OaepHash, Pin, PoolConfig, TokenSelector,
};
use secrecy::{ExposeSecret, SecretSlice};
use tokio::sync::Semaphore;

use super::hsm_batch::digests_per_task;
use super::hsm_spec::{key_spec, signature_algorithm};
use super::provide::{
    KeyBackend, KeyRef, ListedObject, ObjectSpec, ReleasedMaterial, Scheme, Sealed, WrappedDataKey,
};
use super::{Kind, NamedBackend, TypedHandle};
use crate::error::{BrokerError, Result};
use crate::store::{Algorithm, BackendRecord, HardwareHandle, Purpose};

/// How HSM backends register (`super::KINDS`).
pub const KIND: Kind = Kind {
    open: open_record,
    same_hardware,
};

/// How many PKCS#11 sessions a backend registered through the API gets.
const REGISTERED_SESSIONS: usize = 4;
/// How long an HSM call waits for a free session before the HSM counts as busy.
const SESSION_WAIT: Duration = Duration::from_secs(5);
/// Length of the random `CKA_ID` of a managed key.
const OBJECT_ID_LEN: usize = 16;

impl TypedHandle for KeyId {
    const KIND: &'static str = "hsm";

    fn to_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    fn from_bytes(bytes: &[u8]) -> std::result::Result<KeyId, String> {
        KeyId::new(bytes).map_err(|e| e.to_string())
    }
}

/// One HSM token: its session pool and the gate in front of it.
#[derive(Debug)]
pub struct HsmKeys {
    hsm: Arc<HsmBackend>,
    /// One permit per PKCS#11 session.
    sessions: Arc<Semaphore>,
    description: String,
}

/// Opens an HSM token (blocking: loads the module and logs in).
///
/// # Errors
/// The module, token or PIN is wrong; the message names which.
pub fn open(
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
            ..PoolConfig::default()
        },
    };
    let hsm = HsmBackend::open(config).map_err(|e| {
        BrokerError::FailedPrecondition(format!("cannot open HSM backend {name:?}: {e}"))
    })?;
    let keys = HsmKeys {
        hsm: Arc::new(hsm),
        sessions: Arc::new(Semaphore::new(sessions.min(Semaphore::MAX_PERMITS))),
        description: format!("{} token {token_label:?}", module.display()),
    };
    Ok(NamedBackend::new(name, keys))
}

fn open_record(record: &BackendRecord) -> Option<Result<NamedBackend>> {
    let BackendRecord::Hsm {
        name,
        module_path,
        token_label,
        user_pin_file,
        user_pin_env,
    } = record
    else {
        return None;
    };
    let pin = read_pin(
        user_pin_file.as_deref().map(Path::new),
        user_pin_env.as_deref(),
    );
    Some(pin.and_then(|pin| {
        open(
            name,
            Path::new(module_path),
            token_label,
            pin,
            REGISTERED_SESSIONS,
        )
    }))
}

fn same_hardware(a: &BackendRecord, b: &BackendRecord) -> bool {
    match (a, b) {
        (
            BackendRecord::Hsm {
                module_path: m1,
                token_label: t1,
                ..
            },
            BackendRecord::Hsm {
                module_path: m2,
                token_label: t2,
                ..
            },
        ) => Path::new(m1) == Path::new(m2) && t1 == t2,
        _ => false,
    }
}

/// Reads a PIN from exactly one of a file or an environment variable
/// ([`Pin::from_file_or_env`], which the CLI uses too).
///
/// # Errors
/// Neither or both given; the source cannot be read or is open to others.
pub fn read_pin(file: Option<&Path>, env: Option<&str>) -> Result<Pin> {
    Pin::from_file_or_env(file, env).map_err(|e| match e {
        hsm_backend::HsmError::PinSourceCount { .. } => BrokerError::InvalidArgument(e.to_string()),
        other => BrokerError::FailedPrecondition(other.to_string()),
    })
}

/// A failed RSA decryption says nothing more than that: which padding check failed is
/// an oracle.
fn decryption_failed(e: HsmError) -> BrokerError {
    match e {
        HsmError::InvalidInput(_) | HsmError::Pkcs11 { .. } => {
            BrokerError::IntegrityFailure("decryption failed".into())
        }
        other => other.into(),
    }
}

impl HsmKeys {
    /// Runs a blocking PKCS#11 call on tokio's blocking pool once one of the token's
    /// sessions is free: no more blocking threads than sessions work on one token.
    ///
    /// # Errors
    /// `f`'s error; [`BrokerError::ResourceExhausted`] when no session frees up in time.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&HsmBackend) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let turn = tokio::time::timeout(SESSION_WAIT, self.sessions.clone().acquire_owned());
        let permit = match turn.await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => {
                return Err(BrokerError::Internal("HSM session gate closed".into()));
            }
            Err(_elapsed) => return Err(HsmError::PoolExhausted(SESSION_WAIT).into()),
        };
        let hsm = self.hsm.clone();
        tokio::task::spawn_blocking(move || {
            // Held until the call ends, even if the caller stopped waiting.
            let _permit = permit;
            f(&hsm)
        })
        .await?
    }

    /// The token without the gate, for start-up before the server runs (finding and
    /// making the attestation token keys, crate::attestation::token_keys). Every call
    /// made while serving goes through [`HsmKeys::run`].
    pub fn without_gate(&self) -> &HsmBackend {
        &self.hsm
    }

    /// RSA-OAEP with SHA-256, unless the token can only do SHA-1 (SoftHSM 2.6).
    fn oaep_hash(&self) -> OaepHash {
        if self.hsm.token().quirks().oaep_sha1_only {
            OaepHash::Sha1
        } else {
            OaepHash::Sha256
        }
    }
}

#[async_trait]
impl KeyBackend for HsmKeys {
    fn kind(&self) -> &'static str {
        KeyId::KIND
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    /// Refuses what the module said at open that it cannot make (`UNIMPLEMENTED`, naming
    /// the mechanism, `hsm_backend::Capabilities`): nothing is recorded or made.
    fn check_spec(&self, algorithm: Algorithm, purpose: Purpose) -> Result<()> {
        let spec = key_spec(algorithm, purpose, false)?;
        Ok(self.hsm.capabilities().check_key(spec)?)
    }

    /// A fresh random `CKA_ID`, recorded before the object exists.
    fn intent(&self) -> HardwareHandle {
        use rand::RngCore;
        let mut id = vec![0u8; OBJECT_ID_LEN];
        rand::rngs::OsRng.fill_bytes(&mut id);
        HardwareHandle::new(KeyId::KIND, id)
    }

    async fn create(&self, spec: &ObjectSpec, intent: HardwareHandle) -> Result<HardwareHandle> {
        let id = KeyId::decode(&intent)?;
        let label = KeyLabel::new(spec.label.as_str())
            .map_err(|e| BrokerError::InvalidArgument(e.to_string()))?;
        let template = key_spec(spec.algorithm, spec.purpose, spec.releasable)?;
        self.run(move |hsm| Ok(hsm.generate_key(&id, &label, template)?))
            .await?;
        Ok(intent)
    }

    async fn exists(&self, handle: &HardwareHandle) -> Result<bool> {
        let id = KeyId::decode(handle)?;
        // By id alone: a kill during generation can leave an object whose attributes were
        // not all written, which must count as made (and be destroyed), not stop the start.
        self.run(move |hsm| Ok(hsm.id_in_use(&id)?)).await
    }

    async fn destroy(&self, handle: &HardwareHandle) -> Result<()> {
        let id = KeyId::decode(handle)?;
        self.run(move |hsm| match hsm.destroy_key(&id) {
            Ok(()) | Err(HsmError::KeyNotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        })
        .await
    }

    async fn list_objects(&self) -> Result<Vec<ListedObject>> {
        // One pass over the token's objects: reconciliation needs ids and labels only.
        let keys = self.run(|hsm| Ok(hsm.list_labels()?)).await?;
        Ok(keys
            .into_iter()
            .map(|(id, label)| ListedObject {
                handle: id.encode(),
                label,
            })
            .collect())
    }

    /// A batch runs in blocking tasks of about 10 ms of work each ([`digests_per_task`]):
    /// one hand-off per task for cheap signatures, and a turn at the session gate between
    /// tasks, so that 1,024 RSA-4096 signatures do not hold a session for seconds.
    async fn sign(
        &self,
        key: KeyRef<'_>,
        scheme: Scheme,
        digests: Vec<Digest>,
    ) -> Result<Vec<Vec<u8>>> {
        let id = KeyId::decode(key.handle)?;
        let alg = signature_algorithm(key.algorithm, scheme);
        // A batch is split by cost, and each part queues for a session on its own: a
        // batch of slow signatures cannot hold a session for long while other calls wait.
        let per_task = digests_per_task(key.algorithm);
        let mut signatures = Vec::with_capacity(digests.len());
        let mut rest = digests;
        while !rest.is_empty() {
            let tail = rest.split_off(per_task.min(rest.len()));
            let part = std::mem::replace(&mut rest, tail);
            let id = id.clone();
            let signed = self
                .run(move |hsm| {
                    part.iter()
                        .map(|d| hsm.sign(&id, alg, d).map_err(BrokerError::from))
                        .collect::<Result<Vec<_>>>()
                })
                .await?;
            signatures.extend(signed);
        }
        Ok(signatures)
    }

    async fn public_key(&self, handle: &HardwareHandle) -> Result<Vec<u8>> {
        let id = KeyId::decode(handle)?;
        self.run(move |hsm| Ok(hsm.public_key(&id)?.as_der().to_vec()))
            .await
    }

    fn can_release(&self) -> bool {
        true
    }

    async fn release(&self, key: KeyRef<'_>, peer: Vec<u8>) -> Result<ReleasedMaterial> {
        let id = KeyId::decode(key.handle)?;
        let released = self
            .run(move |hsm| Ok(hsm.release_key(&id, &peer)?))
            .await?;
        Ok(ReleasedMaterial {
            ephemeral_public: released.ephemeral_public,
            wrapped: released.wrapped,
            kdf: released.kdf.name(),
        })
    }

    async fn encrypt(
        &self,
        key: KeyRef<'_>,
        plaintext: SecretSlice<u8>,
        aad: Vec<u8>,
    ) -> Result<Sealed> {
        let id = KeyId::decode(key.handle)?;
        if key.algorithm == Algorithm::Aes256 {
            let sealed = self
                .run(move |hsm| Ok(hsm.aes_gcm_encrypt(&id, plaintext.expose_secret(), &aad)?))
                .await?;
            return Ok(Sealed {
                iv: sealed.nonce.to_vec(),
                data: sealed.ciphertext,
            });
        }
        let hash = self.oaep_hash();
        let data = self
            .run(move |hsm| Ok(hsm.rsa_encrypt(&id, hash, plaintext.expose_secret())?))
            .await?;
        Ok(Sealed {
            iv: Vec::new(),
            data,
        })
    }

    async fn decrypt(
        &self,
        key: KeyRef<'_>,
        sealed: Sealed,
        aad: Vec<u8>,
    ) -> Result<SecretSlice<u8>> {
        let id = KeyId::decode(key.handle)?;
        if key.algorithm == Algorithm::Aes256 {
            let nonce: [u8; GCM_NONCE_LEN] = sealed.iv.as_slice().try_into().map_err(|_| {
                BrokerError::IntegrityFailure("ciphertext: the nonce is malformed".into())
            })?;
            let ciphertext = AeadCiphertext {
                nonce,
                ciphertext: sealed.data,
            };
            return self
                .run(move |hsm| Ok(hsm.aes_gcm_decrypt(&id, &ciphertext, &aad)?))
                .await;
        }
        let hash = self.oaep_hash();
        self.run(move |hsm| {
            hsm.rsa_decrypt(&id, hash, &sealed.data)
                .map_err(decryption_failed)
        })
        .await
    }

    async fn random(&self, len: usize) -> Result<SecretSlice<u8>> {
        self.run(move |hsm| Ok(hsm.random(len)?)).await
    }

    async fn system_wrap_key(&self, name: &str) -> Result<(HardwareHandle, bool)> {
        super::hsm_wrap::system_key(self, name).await
    }

    async fn wrap_data_key(
        &self,
        key: KeyRef<'_>,
        data_key: &sealed_format::DataKey,
    ) -> Result<WrappedDataKey> {
        super::hsm_wrap::wrap(self, key, data_key).await
    }

    async fn unwrap_data_key(
        &self,
        key: KeyRef<'_>,
        wrapped: &WrappedDataKey,
    ) -> Result<sealed_format::DataKey> {
        super::hsm_wrap::unwrap(self, key, wrapped).await
    }
}
