//! Sealing's data keys on a TPM (`TpmKeys` in `tpm.rs`). A key-encryption key there is
//! no TPM object: each version is a PCR policy ([`PcrPolicy`]), the SHA-256 values of the
//! backend's `seal_pcrs` ([`SEAL_PCRS`] unless configured) captured when the version was
//! made. Each envelope's data key is sealed
//! by the TPM to that policy, under the storage root key: the sealed object opens only
//! in this TPM, and only while those PCRs hold those values.
//!
//! A seal is refused while the PCRs hold other values: data sealed then could never be
//! opened in this boot. Rotating the key captures the values of now.

use sealed_format::{DataKey, KekKind};
use secrecy::ExposeSecret;
use tpm_backend::{PcrSelection, PcrValue, SealPolicy, SealedBlob, TpmBlob, TpmError};

use super::TypedHandle;
use super::provide::{KeyRef, WrappedDataKey};
use super::tpm::TpmKeys;
use crate::error::{BrokerError, Result};
use crate::store::HardwareHandle;

/// The PCRs a key-encryption key binds: the firmware (0), option ROMs (2), the boot
/// loader (4) and the Secure Boot policy (7), as systemd-cryptenroll and Clevis default.
pub const SEAL_PCRS: &[u8] = &[0, 2, 4, 7];

/// Starts every stored policy, so that it cannot be taken for a key blob.
const MAGIC: &[u8; 8] = b"KBPCRv1\0";

/// One version of a TPM key-encryption key: the PCRs and the values it seals to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrPolicy {
    pcrs: PcrSelection,
    values: Vec<PcrValue>,
}

impl TypedHandle for PcrPolicy {
    const KIND: &'static str = TpmBlob::KIND;

    /// The magic, the number of PCRs, their indices, then their values.
    fn to_bytes(&self) -> Vec<u8> {
        let indices = self.pcrs.indices();
        let mut out = MAGIC.to_vec();
        out.push(u8::try_from(indices.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(indices);
        self.values.iter().for_each(|v| out.extend_from_slice(v));
        out
    }

    fn from_bytes(bytes: &[u8]) -> std::result::Result<PcrPolicy, String> {
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or("not a PCR policy")?;
        let (&count, rest) = rest.split_first().ok_or("no PCR count")?;
        let (indices, values) = rest
            .split_at_checked(usize::from(count))
            .ok_or("truncated PCR indices")?;
        let pcrs = PcrSelection::sha256(indices).map_err(|e| e.to_string())?;
        if pcrs.indices() != indices || values.len() != indices.len() * 32 {
            return Err("PCR indices and values disagree".into());
        }
        let values = values
            .chunks_exact(32)
            .map(|v| <PcrValue>::try_from(v).map_err(|_| "a PCR value is not 32 bytes".to_string()))
            .collect::<std::result::Result<_, _>>()?;
        Ok(PcrPolicy { pcrs, values })
    }
}

/// A new version: the PCR values of now.
pub(super) async fn create(keys: &TpmKeys) -> Result<HardwareHandle> {
    let pcrs = keys.seal_pcrs().clone();
    let values = keys.within(keys.tpm().pcr_read(&pcrs)).await?;
    Ok(PcrPolicy { pcrs, values }.encode())
}

/// The PCRs among `policy`'s whose values are not the policy's now.
async fn changed_pcrs(keys: &TpmKeys, policy: &PcrPolicy) -> Result<Vec<u8>> {
    let now = keys.within(keys.tpm().pcr_read(&policy.pcrs)).await?;
    Ok(policy
        .pcrs
        .indices()
        .iter()
        .zip(now.iter().zip(&policy.values))
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| *i)
        .collect())
}

fn left_state(changed: &[u8]) -> BrokerError {
    BrokerError::FailedPrecondition(format!(
        "the TPM's PCRs {changed:?} no longer hold the values this key version was bound to \
         (the machine booted into another state, or a PCR was extended); data sealed to it \
         opens only in that state"
    ))
}

/// Seals `data_key` to the version's policy, if the PCRs hold its values now.
pub(super) async fn wrap(
    keys: &TpmKeys,
    key: KeyRef<'_>,
    data_key: &DataKey,
) -> Result<WrappedDataKey> {
    let policy = PcrPolicy::decode(key.handle)?;
    let changed = changed_pcrs(keys, &policy).await?;
    if !changed.is_empty() {
        return Err(left_state(&changed));
    }
    let seal = SealPolicy {
        pcrs: policy.pcrs.clone(),
        pcr_values: Some(policy.values.clone()),
        auth: None,
    };
    let sealed = keys
        .within(keys.tpm().seal(data_key.expose_secret(), seal))
        .await?;
    Ok(WrappedDataKey {
        kek: KekKind::TpmSealed,
        bytes: sealed.to_bytes(),
    })
}

/// Unseals a data key that [`wrap`] sealed under `key`.
pub(super) async fn unwrap(
    keys: &TpmKeys,
    key: KeyRef<'_>,
    wrapped: &WrappedDataKey,
) -> Result<DataKey> {
    if wrapped.kek != KekKind::TpmSealed {
        return Err(BrokerError::FailedPrecondition(format!(
            "the data key was wrapped by another kind of key ({:?}), and this key seals on a TPM",
            wrapped.kek
        )));
    }
    let policy = PcrPolicy::decode(key.handle)?;
    let altered = || {
        BrokerError::IntegrityFailure(
            "the sealed data key was altered, or sealed by another TPM".into(),
        )
    };
    let sealed = SealedBlob::from_bytes(&wrapped.bytes).map_err(|_| altered())?;
    if sealed.pcrs() != &policy.pcrs || sealed.needs_auth() {
        return Err(altered());
    }
    match keys.within(keys.tpm().unseal(&sealed, None)).await {
        Ok(bytes) => DataKey::from_slice(bytes.expose_secret()).map_err(|_| altered()),
        Err(TpmError::PcrPolicyNotSatisfied) => {
            Err(left_state(&changed_pcrs(keys, &policy).await?))
        }
        Err(TpmError::Unavailable(why)) => Err(BrokerError::Unavailable(why)),
        Err(TpmError::Tpm { .. } | TpmError::InvalidBlob(_) | TpmError::InvalidInput(_)) => {
            Err(altered())
        }
        Err(other) => Err(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_round_trips_and_damaged_bytes_are_refused() {
        let policy = PcrPolicy {
            pcrs: PcrSelection::sha256(SEAL_PCRS).unwrap(),
            values: vec![[0; 32], [1; 32], [2; 32], [3; 32]],
        };
        let bytes = policy.to_bytes();
        assert_eq!(PcrPolicy::from_bytes(&bytes).unwrap(), policy);
        for cut in 0..bytes.len() {
            assert!(
                PcrPolicy::from_bytes(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(PcrPolicy::from_bytes(&longer).is_err());
        let mut unsorted = bytes;
        unsorted.swap(9, 10);
        assert!(PcrPolicy::from_bytes(&unsorted).is_err());
    }
}
