//! `ReleaseKey` (docs/releasable-keys.md): a releasable key's material, wrapped inside the
//! HSM to the caller's attested P-256 key. Only keys created in the class `releasable`
//! take this path; the token refuses every other key too (`CKA_EXTRACTABLE` false).

use p256::pkcs8::DecodePublicKey;

use super::manager::KeyManager;
use crate::authz::Action;
use crate::backends::{KeyRef, ReleasedMaterial};
use crate::error::{BrokerError, Result};
use crate::request::Authorized;
use crate::store::KeyRecord;

/// A key released to one workload, and the version it is.
#[derive(Debug)]
pub struct Released {
    pub version: u32,
    pub key: ReleasedMaterial,
}

/// The SEC1 uncompressed point (65 bytes) of a P-256 SPKI.
fn p256_point(spki: &[u8]) -> Result<Vec<u8>> {
    let key = p256::PublicKey::from_public_key_der(spki).map_err(|_| {
        BrokerError::FailedPrecondition(
            "ReleaseKey wraps to the attested key, which must be EC P-256; this token is \
             bound to another kind of key"
                .into(),
        )
    })?;
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    Ok(key.to_encoded_point(false).as_bytes().to_vec())
}

impl KeyManager {
    /// Wraps version `version` (0: the primary) of the releasable `key` in the HSM to the
    /// attested key of `auth`.
    ///
    /// # Errors
    /// `FAILED_PRECONDITION` for a key that is not releasable, not enabled, a retired
    /// version, or a caller without an attestation token bound to a P-256 key;
    /// `UNAVAILABLE` or the token's error otherwise.
    pub async fn release(
        &self,
        auth: &Authorized,
        key: &KeyRecord,
        version: u32,
    ) -> Result<Released> {
        auth.require_key(&[Action::ReleaseKey], &key.name)?;
        if !key.releasable {
            return Err(BrokerError::FailedPrecondition(format!(
                "key {:?} is not releasable: its material never leaves the hardware",
                key.name
            )));
        }
        let attested = auth.attested_key().ok_or_else(|| {
            BrokerError::FailedPrecondition(
                "ReleaseKey needs an attestation token (x-keybroker-attestation) bound to \
                 this connection's key: the key is wrapped to that attested key"
                    .into(),
            )
        })?;
        let peer = p256_point(attested)?;
        let version = self.usable(key, version)?;
        let backend = self.backends.get(&key.backend)?;
        let released = backend
            .backend
            .release(KeyRef::of(key, &version), peer)
            .await?;
        tracing::info!(caller = %auth.caller(), key = key.name, version = version.version, "key released");
        Ok(Released {
            version: version.version,
            key: released,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_p256_keys_can_receive_a_release() {
        use p256::pkcs8::EncodePublicKey;
        let secret = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let spki = secret.public_key().to_public_key_der().unwrap();
        let point = p256_point(spki.as_bytes()).unwrap();
        assert_eq!((point.len(), point[0]), (65, 4));
        assert!(p256_point(b"not a key").is_err());
    }
}
