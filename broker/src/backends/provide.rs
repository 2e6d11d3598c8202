//! The one trait every key backend implements, in the manner of Parsec's `Provide`: each
//! operation a backend lacks answers "not supported" by default, so a backend implements
//! what its hardware can do and nothing else.
//!
//! The trait takes and returns the stored, opaque [`HardwareHandle`]; each implementation
//! decodes it into its own typed handle ([`super::TypedHandle`]) and never sees another
//! kind's. Checks that do not depend on the hardware (the key's purpose and state, `aad`
//! on RSA keys, plaintext sizes) are made once above the trait, in `crate::keys`.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use hsm_backend::Digest;
use sealed_format::{DataKey, KekKind};
use secrecy::SecretSlice;

use crate::error::{BrokerError, Result};
use crate::store::{Algorithm, HardwareHandle, KeyRecord, Purpose, VersionRecord};

/// Which signature scheme a request asked for, resolved against the key's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Ecdsa,
    RsaPkcs1v15,
    RsaPss,
}

/// A key to make: what the broker asks a backend to create.
#[derive(Debug, Clone)]
pub struct ObjectSpec {
    /// The object's name where the hardware keeps names (`kb:<key>:v<version>`); backends
    /// without names ignore it.
    pub label: String,
    pub algorithm: Algorithm,
    pub purpose: Purpose,
    /// The key class `releasable` (docs/releasable-keys.md): only an HSM makes one.
    pub releasable: bool,
}

/// A key wrapped inside the hardware for one workload (docs/releasable-keys.md).
#[derive(Debug, Clone)]
pub struct ReleasedMaterial {
    /// The hardware's one-time P-256 public key, SEC1 uncompressed.
    pub ephemeral_public: Vec<u8>,
    /// RFC 5649 output.
    pub wrapped: Vec<u8>,
    /// How the workload derives the unwrapping key: `"ecdh-p256-x"`.
    pub kdf: &'static str,
}

/// One version of a key, as a backend operation needs it.
#[derive(Debug, Clone, Copy)]
pub struct KeyRef<'a> {
    pub algorithm: Algorithm,
    pub handle: &'a HardwareHandle,
}

impl<'a> KeyRef<'a> {
    /// The version `version` of `key`.
    pub fn of(key: &KeyRecord, version: &'a VersionRecord) -> KeyRef<'a> {
        KeyRef {
            algorithm: key.algorithm,
            handle: &version.handle,
        }
    }
}

/// A data key wrapped by a key-encryption key, as a sealed envelope's header records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedDataKey {
    /// What wrapped it: the backend kind's way of wrapping.
    pub kek: KekKind,
    /// RFC 5649 output (HSM), or the TPM sealed object.
    pub bytes: Vec<u8>,
}

/// A ciphertext as a backend makes and reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The nonce (AES-GCM); empty for RSA-OAEP.
    pub iv: Vec<u8>,
    pub data: Vec<u8>,
}

/// An object a backend holds, for the orphan scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub handle: HardwareHandle,
    pub label: String,
}

/// What a backend does not do, as the caller sees it (`UNIMPLEMENTED`).
pub fn unsupported(kind: &str, what: &str) -> BrokerError {
    BrokerError::Unsupported(format!("{kind} backends cannot {what}"))
}

/// Lets the registry hand out a backend as its own type (see `Backends::get_as`).
pub trait AsAny {
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<T: Any + Send + Sync> AsAny for T {
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// A kind of hardware that holds keys. `kind` and `describe` are required; every other
/// operation defaults to [`BrokerError::Unsupported`], except `intent` (an empty handle)
/// and `list_objects` (nothing to list).
#[async_trait]
pub trait KeyBackend: AsAny + Send + Sync + fmt::Debug {
    /// The kind, stored with every handle it makes and shown by `ListBackends`.
    fn kind(&self) -> &'static str;

    /// What this backend is, for operators (`ListBackends`).
    fn describe(&self) -> String;

    /// Whether the hardware is known to answer, without asking it (`ListBackends`): a
    /// backend that is reachable once opened keeps the default.
    fn available(&self) -> bool {
        true
    }

    /// Whether the hardware answers now. Registration asks it before it records a
    /// backend; a backend that is always reachable once opened keeps the default.
    async fn probe(&self) -> Result<()> {
        Ok(())
    }

    /// Refuses, without touching the hardware, a key this backend cannot hold.
    ///
    /// # Errors
    /// Why not: `INVALID_ARGUMENT` for a purpose the algorithm cannot serve,
    /// `UNIMPLEMENTED` for an algorithm the hardware lacks.
    fn check_spec(&self, algorithm: Algorithm, purpose: Purpose) -> Result<()> {
        let _ = (algorithm, purpose);
        Err(unsupported(self.kind(), "hold keys"))
    }

    /// The handle the store records *before* the object is made, so that a crash in
    /// between leaves a trace that reconciliation resolves (`crate::keys::manager`).
    /// By default empty: the backend names the object only once it is made.
    fn intent(&self) -> HardwareHandle {
        HardwareHandle::new(self.kind(), Vec::new())
    }

    /// Makes the key named by `intent` and returns its final handle.
    ///
    /// # Errors
    /// The hardware refused.
    async fn create(&self, spec: &ObjectSpec, intent: HardwareHandle) -> Result<HardwareHandle> {
        let _ = (spec, intent);
        Err(unsupported(self.kind(), "create keys"))
    }

    /// Whether the hardware holds an object for `handle` (an intent after a crash).
    ///
    /// # Errors
    /// The hardware cannot be asked.
    async fn exists(&self, handle: &HardwareHandle) -> Result<bool> {
        let _ = handle;
        Err(unsupported(self.kind(), "look up objects"))
    }

    /// Destroys the object for `handle`; an object already gone is not an error.
    ///
    /// # Errors
    /// The hardware refused.
    async fn destroy(&self, handle: &HardwareHandle) -> Result<()> {
        let _ = handle;
        Err(unsupported(self.kind(), "destroy objects"))
    }

    /// Every object the hardware holds, for the orphan scan.
    ///
    /// # Errors
    /// The hardware cannot be asked.
    async fn list_objects(&self) -> Result<Vec<ListedObject>> {
        Ok(Vec::new())
    }

    /// Signs each digest (already checked against the key's hash) with `scheme`.
    ///
    /// # Errors
    /// The hardware refused.
    async fn sign(
        &self,
        key: KeyRef<'_>,
        scheme: Scheme,
        digests: Vec<Digest>,
    ) -> Result<Vec<Vec<u8>>> {
        let _ = (key, scheme, digests);
        Err(unsupported(self.kind(), "sign"))
    }

    /// The key's public key, SubjectPublicKeyInfo DER.
    ///
    /// # Errors
    /// The hardware cannot read it.
    async fn public_key(&self, handle: &HardwareHandle) -> Result<Vec<u8>> {
        let _ = handle;
        Err(unsupported(self.kind(), "export public keys"))
    }

    /// Whether this backend can hold releasable keys and release them (an HSM).
    fn can_release(&self) -> bool {
        false
    }

    /// Wraps the releasable key `key` inside the hardware to `peer`, a workload's P-256
    /// point (SEC1 uncompressed), as `crate::keys` release describes.
    ///
    /// # Errors
    /// The hardware refused (a key that is not releasable, no transport key).
    async fn release(&self, key: KeyRef<'_>, peer: Vec<u8>) -> Result<ReleasedMaterial> {
        let _ = (key, peer);
        Err(unsupported(self.kind(), "release keys"))
    }

    /// Encrypts `plaintext` (size and `aad` already checked).
    ///
    /// # Errors
    /// The hardware refused; the plaintext is too long for RSA-OAEP.
    async fn encrypt(
        &self,
        key: KeyRef<'_>,
        plaintext: SecretSlice<u8>,
        aad: Vec<u8>,
    ) -> Result<Sealed> {
        let _ = (key, plaintext, aad);
        Err(unsupported(self.kind(), "encrypt"))
    }

    /// Decrypts what [`KeyBackend::encrypt`] made.
    ///
    /// # Errors
    /// [`BrokerError::IntegrityFailure`] for a ciphertext that was altered or is not this
    /// key's.
    async fn decrypt(
        &self,
        key: KeyRef<'_>,
        sealed: Sealed,
        aad: Vec<u8>,
    ) -> Result<SecretSlice<u8>> {
        let _ = (key, sealed, aad);
        Err(unsupported(self.kind(), "decrypt"))
    }

    /// Wraps a data key under `key`, a key-encryption key (`WRAP_UNWRAP`), inside the
    /// hardware.
    ///
    /// # Errors
    /// The hardware refused; on a TPM, its PCRs no longer hold the version's values.
    async fn wrap_data_key(&self, key: KeyRef<'_>, data_key: &DataKey) -> Result<WrappedDataKey> {
        let _ = (key, data_key);
        Err(unsupported(self.kind(), "wrap data keys"))
    }

    /// Unwraps what [`KeyBackend::wrap_data_key`] made.
    ///
    /// # Errors
    /// [`BrokerError::IntegrityFailure`] for a wrapping that was altered or is another
    /// key's; `FAILED_PRECONDITION` for another kind's wrapping, or a TPM whose PCRs left
    /// the sealed-to state.
    async fn unwrap_data_key(&self, key: KeyRef<'_>, wrapped: &WrappedDataKey) -> Result<DataKey> {
        let _ = (key, wrapped);
        Err(unsupported(self.kind(), "unwrap data keys"))
    }

    /// Finds or makes one of the broker's own key-encryption keys, `name` (`"store"`),
    /// which no `KeyService` call can name and the orphan scan leaves alone. Returns its
    /// handle, and whether it was made by this call.
    ///
    /// # Errors
    /// The hardware failed, or holds an object under that name that is not such a key.
    async fn system_wrap_key(&self, name: &str) -> Result<(HardwareHandle, bool)> {
        let _ = name;
        Err(unsupported(
            self.kind(),
            "hold the broker's own key-encryption keys",
        ))
    }

    /// `len` random bytes, for data keys.
    ///
    /// # Errors
    /// The generator failed.
    async fn random(&self, len: usize) -> Result<SecretSlice<u8>> {
        let _ = len;
        Err(unsupported(self.kind(), "generate random bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend that implements only what is required.
    #[derive(Debug)]
    struct Bare;

    impl KeyBackend for Bare {
        fn kind(&self) -> &'static str {
            "bare"
        }
        fn describe(&self) -> String {
            "implements nothing".into()
        }
    }

    fn refused<T: fmt::Debug>(result: Result<T>) -> String {
        match result {
            Err(BrokerError::Unsupported(m)) => m,
            other => panic!("expected UNIMPLEMENTED, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn what_a_backend_does_not_implement_is_not_supported() {
        let handle = HardwareHandle::new("bare", vec![1]);
        let key = KeyRef {
            algorithm: Algorithm::EcP256,
            handle: &handle,
        };
        let spec = ObjectSpec {
            label: "kb:k:v1".into(),
            algorithm: Algorithm::EcP256,
            purpose: Purpose::SignVerify,
            releasable: false,
        };
        let secret = || SecretSlice::from(vec![1u8]);
        let sealed = Sealed {
            iv: Vec::new(),
            data: vec![1],
        };
        let messages = [
            refused(Bare.check_spec(Algorithm::EcP256, Purpose::SignVerify)),
            refused(Bare.create(&spec, handle.clone()).await),
            refused(Bare.exists(&handle).await),
            refused(Bare.destroy(&handle).await),
            refused(Bare.sign(key, Scheme::Ecdsa, Vec::new()).await),
            refused(Bare.public_key(&handle).await),
            refused(Bare.encrypt(key, secret(), Vec::new()).await),
            refused(Bare.decrypt(key, sealed, Vec::new()).await),
            refused(Bare.random(32).await),
            refused(
                Bare.wrap_data_key(key, &DataKey::from_slice(&[7; 32]).unwrap())
                    .await,
            ),
            refused(
                Bare.unwrap_data_key(
                    key,
                    &WrappedDataKey {
                        kek: KekKind::HsmAesKeyWrap,
                        bytes: vec![1; 40],
                    },
                )
                .await,
            ),
        ];
        assert!(
            messages
                .iter()
                .all(|m| m.starts_with("bare backends cannot "))
        );
    }

    #[tokio::test]
    async fn a_backend_without_objects_lists_none_and_names_an_object_once_made() {
        assert!(Bare.list_objects().await.unwrap().is_empty());
        let intent = Bare.intent();
        assert_eq!((intent.kind(), intent.bytes()), ("bare", &[][..]));
    }
}
