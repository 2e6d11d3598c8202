//! TPM 2.0 (`tpm_backend::TpmBackend`): keys created under the storage root key and kept
//! as their TPM-wrapped blob ([`TpmBlob`]), which is only usable inside this TPM.
//!
//! The TPM holds no object for a key between calls: the blob, kept in the store, *is* the
//! key. So there is nothing to find after a crash, nothing to destroy and nothing to list.
//! Calls are queued to the TPM's own worker thread and awaited. Public-key operations (RSA
//! encryption) run in software on the blob's public half: nothing secret is involved.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use hsm_backend::Digest;
use secrecy::{ExposeSecret, SecretSlice};
use tpm_backend::{
    HierarchyAuth, HierarchyAuths, Tcti, TpmBackend, TpmBlob, TpmConfig, TpmError, TpmKeyKind,
    TpmSignScheme,
};

use super::provide::{KeyBackend, KeyRef, ObjectSpec, Scheme, Sealed};
use super::{Kind, NamedBackend, TypedHandle};
use crate::error::{BrokerError, Result};
use crate::store::{Algorithm, BackendRecord, HardwareHandle, Purpose};

/// How TPM backends register (`super::KINDS`).
pub const KIND: Kind = Kind {
    open: open_record,
    same_hardware,
};

impl TypedHandle for TpmBlob {
    const KIND: &'static str = "tpm";

    fn to_bytes(&self) -> Vec<u8> {
        TpmBlob::to_bytes(self)
    }

    fn from_bytes(bytes: &[u8]) -> std::result::Result<TpmBlob, String> {
        TpmBlob::from_bytes(bytes).map_err(|e| e.to_string())
    }
}

/// The default bound on one TPM command (`[[tpm]] command_timeout_seconds`).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
/// How often a TPM that was away at start is tried again.
const REJOIN_INTERVAL: Duration = Duration::from_secs(2);

/// One TPM.
#[derive(Debug)]
pub struct TpmKeys {
    tpm: TpmBackend,
    description: String,
    /// How long one command may take before the call gets `UNAVAILABLE`.
    deadline: Duration,
    /// Cleared when this backend is dropped: the thread that waits for a TPM that was
    /// away at start stops then.
    wanted: Arc<AtomicBool>,
    /// The PCRs a wrap-unwrap key's new versions bind (`[[tpm]] seal_pcrs`).
    seal_pcrs: tpm_backend::PcrSelection,
}

impl Drop for TpmKeys {
    fn drop(&mut self) {
        self.wanted.store(false, Ordering::Relaxed);
    }
}

/// Connects to a TPM.
///
/// # Errors
/// As [`open_with`].
pub fn open(name: &str, tcti: &str) -> Result<NamedBackend> {
    let pcrs = super::tpm_seal::SEAL_PCRS;
    open_with(
        name,
        tcti,
        HierarchyAuths::default(),
        DEFAULT_DEADLINE,
        pcrs,
    )
}

/// Opens a TPM backend presenting these hierarchy auth values, each command bounded by
/// `deadline`. A TPM that does not answer does not stop the start: the backend is
/// registered as unavailable (its calls get `UNAVAILABLE`) and joins once the TPM answers,
/// while the other backends serve.
///
/// # Errors
/// The TCTI is malformed, or the TPM answers but refuses (auth values, templates).
pub fn open_with(
    name: &str,
    tcti: &str,
    auths: HierarchyAuths,
    deadline: Duration,
    seal_pcrs: &[u8],
) -> Result<NamedBackend> {
    let seal_pcrs = tpm_backend::PcrSelection::sha256(seal_pcrs)
        .map_err(|e| BrokerError::InvalidArgument(format!("seal_pcrs: {e}")))?;
    let parsed = Tcti::new(tcti).map_err(|e| BrokerError::InvalidArgument(e.to_string()))?;
    let mut config = TpmConfig::new(parsed);
    config.hierarchy_auth = auths;
    let refused = |e: TpmError| {
        BrokerError::FailedPrecondition(format!("cannot open TPM backend {name:?} ({tcti}): {e}"))
    };
    let tpm = TpmBackend::start(config).map_err(refused)?;
    let wanted = Arc::new(AtomicBool::new(true));
    match tpm.probe().wait() {
        Ok(()) => {}
        Err(TpmError::Unavailable(why)) => {
            tracing::warn!(backend = name, tcti, %why, "TPM unavailable at start: its calls get UNAVAILABLE until it answers");
            rejoin_in_background(name, tpm.clone(), wanted.clone());
        }
        Err(e) => return Err(refused(e)),
    }
    let keys = TpmKeys {
        tpm,
        description: format!("TPM {tcti}"),
        deadline,
        wanted,
        seal_pcrs,
    };
    Ok(NamedBackend::new(name, keys))
}

/// Tries a TPM that was away at start until it answers, and says when it joined; gives
/// up when the backend is dropped (`wanted` cleared).
fn rejoin_in_background(name: &str, tpm: TpmBackend, wanted: Arc<AtomicBool>) {
    let name = name.to_string();
    let spawned = std::thread::Builder::new()
        .name("tpm-rejoin".into())
        .spawn(move || {
            loop {
                std::thread::sleep(REJOIN_INTERVAL);
                if !wanted.load(Ordering::Relaxed) {
                    return;
                }
                match tpm.probe().wait() {
                    Ok(()) => {
                        tracing::info!(backend = %name, "TPM answers: backend joined");
                        return;
                    }
                    Err(e) => tracing::debug!(backend = %name, error = %e, "TPM still away"),
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch for the TPM: it joins at its first call instead");
    }
}

impl TpmKeys {
    /// Waits for a TPM command, at most the backend's deadline: a hung TPM gives
    /// `UNAVAILABLE` rather than holding the call until the client gives up.
    pub(super) async fn within<T>(&self, pending: tpm_backend::Pending<T>) -> Result<T, TpmError> {
        bounded(self.deadline, pending).await
    }

    pub(super) fn tpm(&self) -> &TpmBackend {
        &self.tpm
    }

    pub(super) fn seal_pcrs(&self) -> &tpm_backend::PcrSelection {
        &self.seal_pcrs
    }
}

/// How long a key generation may take: RSA generation in a TPM takes seconds.
const CREATE_DEADLINE: Duration = Duration::from_secs(120);

async fn bounded<T>(deadline: Duration, pending: tpm_backend::Pending<T>) -> Result<T, TpmError> {
    match tokio::time::timeout(deadline, pending).await {
        Ok(answer) => answer,
        Err(_elapsed) => Err(TpmError::Unavailable(format!(
            "the TPM did not answer within {} s",
            deadline.as_secs()
        ))),
    }
}

/// Reads a TPM hierarchy auth value: hex text in a file that group and others cannot read.
///
/// # Errors
/// The file is missing, too open, not hex, or the value is empty or too long; the message
/// names the file but never shows its content.
pub fn read_auth(path: &std::path::Path) -> Result<HierarchyAuth> {
    let bad = |why: String| BrokerError::FailedPrecondition(format!("{}: {why}", path.display()));
    let bytes = crate::tls::read_secret_file(path).map_err(|e| bad(e.to_string()))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("not hex text".into()))?;
    let decoded =
        zeroize::Zeroizing::new(hex::decode(text.trim()).map_err(|_| bad("not hex text".into()))?);
    HierarchyAuth::new(decoded).map_err(|e| bad(e.to_string()))
}

fn open_record(record: &BackendRecord) -> Option<Result<NamedBackend>> {
    let BackendRecord::Tpm { name, tcti } = record else {
        return None;
    };
    Some(open(name, tcti))
}

fn same_hardware(a: &BackendRecord, b: &BackendRecord) -> bool {
    match (a, b) {
        (BackendRecord::Tpm { tcti: t1, .. }, BackendRecord::Tpm { tcti: t2, .. }) => t1 == t2,
        _ => false,
    }
}

/// The TPM template for an algorithm and purpose.
fn key_kind(algorithm: Algorithm, purpose: Purpose) -> Result<TpmKeyKind> {
    match (algorithm, purpose) {
        (Algorithm::EcP256, Purpose::SignVerify) => Ok(TpmKeyKind::EcP256Sign),
        (Algorithm::Rsa2048, Purpose::SignVerify) => Ok(TpmKeyKind::Rsa2048Sign),
        (Algorithm::Rsa2048, Purpose::EncryptDecrypt) => Ok(TpmKeyKind::Rsa2048Decrypt),
        _ => Err(BrokerError::Unsupported(
            "TPM backends hold EC P-256 signing keys, RSA-2048 signing or decryption keys, \
             and AES-256 wrap-unwrap keys (a PCR policy)"
                .into(),
        )),
    }
}

fn sign_scheme(scheme: Scheme) -> TpmSignScheme {
    match scheme {
        Scheme::Ecdsa => TpmSignScheme::EcdsaSha256,
        Scheme::RsaPkcs1v15 => TpmSignScheme::RsaPkcs1v15Sha256,
        Scheme::RsaPss => TpmSignScheme::RsaPssSha256,
    }
}

#[async_trait]
impl KeyBackend for TpmKeys {
    fn kind(&self) -> &'static str {
        TpmBlob::KIND
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn check_spec(&self, algorithm: Algorithm, purpose: Purpose) -> Result<()> {
        if (algorithm, purpose) == (Algorithm::Aes256, Purpose::WrapUnwrap) {
            return Ok(());
        }
        key_kind(algorithm, purpose).map(|_| ())
    }

    /// False while the TPM is away: before it first answered, and from a lost connection
    /// until the next call or the start-up watcher connects again.
    fn available(&self) -> bool {
        self.tpm.is_connected()
    }

    /// The TPM answers (connecting if it was away).
    async fn probe(&self) -> Result<()> {
        self.within(self.tpm.probe())
            .await
            .map_err(|e| BrokerError::FailedPrecondition(format!("{}: {e}", self.description)))
    }

    /// The intent is the default empty handle: the blob exists only once it is made.
    async fn create(&self, spec: &ObjectSpec, _intent: HardwareHandle) -> Result<HardwareHandle> {
        if spec.releasable {
            return Err(BrokerError::InvalidArgument(
                "releasable: a TPM key never leaves the TPM; releasable keys live in an HSM".into(),
            ));
        }
        if (spec.algorithm, spec.purpose) == (Algorithm::Aes256, Purpose::WrapUnwrap) {
            return super::tpm_seal::create(self).await;
        }
        let kind = key_kind(spec.algorithm, spec.purpose)?;
        let blob = bounded(
            CREATE_DEADLINE.max(self.deadline),
            self.tpm.create_key(kind),
        )
        .await?;
        Ok(blob.encode())
    }

    /// Never: the TPM keeps no object for a key (see the module doc).
    async fn exists(&self, _handle: &HardwareHandle) -> Result<bool> {
        Ok(false)
    }

    /// Nothing to do: the TPM keeps no object for a key (see the module doc).
    async fn destroy(&self, _handle: &HardwareHandle) -> Result<()> {
        Ok(())
    }

    async fn sign(
        &self,
        key: KeyRef<'_>,
        scheme: Scheme,
        digests: Vec<Digest>,
    ) -> Result<Vec<Vec<u8>>> {
        let blob = TpmBlob::decode(key.handle)?;
        let scheme = sign_scheme(scheme);
        let mut out = Vec::with_capacity(digests.len());
        for d in &digests {
            let bytes: [u8; 32] = d.as_bytes().try_into().map_err(|_| {
                BrokerError::InvalidArgument("TPM keys sign SHA-256 digests".into())
            })?;
            out.push(self.within(self.tpm.sign(&blob, scheme, bytes)).await?);
        }
        Ok(out)
    }

    async fn public_key(&self, handle: &HardwareHandle) -> Result<Vec<u8>> {
        Ok(TpmBlob::decode(handle)?.public_key_der()?)
    }

    /// RSA-OAEP with SHA-256, in software, with the blob's public key.
    async fn encrypt(
        &self,
        key: KeyRef<'_>,
        plaintext: SecretSlice<u8>,
        _aad: Vec<u8>,
    ) -> Result<Sealed> {
        use rsa::pkcs8::DecodePublicKey;
        let blob = TpmBlob::decode(key.handle)?;
        // Encryption needs only the public key, but a ciphertext for a key this TPM can no
        // longer load could never be decrypted: refuse it instead.
        self.within(self.tpm.check_loads(&blob))
            .await
            .map_err(|e| match BrokerError::from(e) {
                BrokerError::Internal(detail) => {
                    tracing::error!(%detail, "a TPM key no longer loads");
                    BrokerError::ObjectMissing("(its TPM blob no longer loads)".into())
                }
                other => other,
            })?;
        let spki = blob.public_key_der()?;
        let public = rsa::RsaPublicKey::from_public_key_der(&spki)
            .map_err(|e| BrokerError::Internal(format!("TPM public key: {e}")))?;
        let data = public
            .encrypt(
                &mut rand::rngs::OsRng,
                rsa::Oaep::new::<sha2::Sha256>(),
                plaintext.expose_secret(),
            )
            .map_err(|_| BrokerError::InvalidArgument("plaintext: too long for RSA-OAEP".into()))?;
        Ok(Sealed {
            iv: Vec::new(),
            data,
        })
    }

    async fn decrypt(
        &self,
        key: KeyRef<'_>,
        sealed: Sealed,
        _aad: Vec<u8>,
    ) -> Result<SecretSlice<u8>> {
        let blob = TpmBlob::decode(key.handle)?;
        self.within(self.tpm.rsa_decrypt(&blob, &sealed.data))
            .await
            .map_err(|e| match e {
                TpmError::InvalidInput(_) | TpmError::Tpm { .. } => {
                    BrokerError::IntegrityFailure("decryption failed".into())
                }
                other => other.into(),
            })
    }

    async fn wrap_data_key(
        &self,
        key: KeyRef<'_>,
        data_key: &sealed_format::DataKey,
    ) -> Result<super::WrappedDataKey> {
        super::tpm_seal::wrap(self, key, data_key).await
    }

    async fn unwrap_data_key(
        &self,
        key: KeyRef<'_>,
        wrapped: &super::WrappedDataKey,
    ) -> Result<sealed_format::DataKey> {
        super::tpm_seal::unwrap(self, key, wrapped).await
    }

    /// A PCR policy of now, as a wrap-unwrap key's new version: the TPM holds no object
    /// to find again, so it is always made by this call.
    async fn system_wrap_key(&self, _name: &str) -> Result<(HardwareHandle, bool)> {
        Ok((super::tpm_seal::create(self).await?, true))
    }

    /// From the operating system's generator: `tpm_backend` offers no random call.
    async fn random(&self, len: usize) -> Result<SecretSlice<u8>> {
        use rand::RngCore;
        let mut bytes = zeroize::Zeroizing::new(vec![0u8; len]);
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Ok(SecretSlice::from(bytes.to_vec()))
    }
}
