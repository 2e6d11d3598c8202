//! PCR selections in the SHA-256 bank, reading and extending.

use tss_esapi::abstraction::pcr;
use tss_esapi::handles::PcrHandle;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::{Digest, DigestValues, PcrSelectionList, PcrSlot};

use crate::error::{Result, TpmError, TssResultExt};
use crate::worker::{Pending, Retry, TpmBackend};

/// Highest PCR index on a PC-client TPM.
pub const MAX_PCR_INDEX: u8 = 23;

/// A PCR value in the SHA-256 bank.
pub type PcrValue = [u8; 32];

/// A non-empty set of PCRs in the SHA-256 bank, in ascending order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PcrSelection(Vec<u8>);

impl PcrSelection {
    /// Selects PCRs by index (duplicates are merged).
    ///
    /// # Errors
    /// [`TpmError::InvalidInput`] for an empty selection or an index over 23.
    pub fn sha256(indices: &[u8]) -> Result<PcrSelection> {
        let mut sorted = indices.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.is_empty() || sorted.iter().any(|i| *i > MAX_PCR_INDEX) {
            return Err(TpmError::InvalidInput(format!(
                "a PCR selection names 1 or more PCRs from 0 to {MAX_PCR_INDEX}"
            )));
        }
        Ok(PcrSelection(sorted))
    }

    /// The selected indices, ascending.
    pub fn indices(&self) -> &[u8] {
        &self.0
    }

    /// The 3-byte `pcrSelect` bitmap.
    pub(crate) fn bitmap(&self) -> [u8; 3] {
        let mut map = [0u8; 3];
        for i in &self.0 {
            if let Some(byte) = map.get_mut(usize::from(i / 8)) {
                *byte |= 1 << (i % 8);
            }
        }
        map
    }

    pub(crate) fn slots(&self) -> Result<Vec<PcrSlot>> {
        self.0
            .iter()
            .map(|i| PcrSlot::try_from(1u32 << i).during("PCR selection"))
            .collect()
    }

    pub(crate) fn tss(&self) -> Result<PcrSelectionList> {
        PcrSelectionList::builder()
            .with_selection(HashingAlgorithm::Sha256, &self.slots()?)
            .build()
            .during("PCR selection")
    }

    /// Stored form: the bitmap.
    pub(crate) fn to_bytes(&self) -> [u8; 3] {
        self.bitmap()
    }

    pub(crate) fn from_bitmap(map: [u8; 3]) -> Result<PcrSelection> {
        let indices: Vec<u8> = (0..=MAX_PCR_INDEX)
            .filter(|i| {
                map.get(usize::from(i / 8))
                    .is_some_and(|b| b & (1 << (i % 8)) != 0)
            })
            .collect();
        PcrSelection::sha256(&indices)
    }
}

/// Reads the selected PCRs, in selection order, on an open connection.
pub(crate) fn read(
    ctx: &mut tss_esapi::Context,
    selection: &PcrSelection,
) -> Result<Vec<PcrValue>> {
    let list = selection.tss()?;
    let data = ctx
        .execute_without_session(|c| pcr::read_all(c, list))
        .during("read PCRs")?;
    let bank = data
        .pcr_bank(HashingAlgorithm::Sha256)
        .ok_or_else(|| TpmError::Unsupported("the TPM has no SHA-256 PCR bank".into()))?;
    selection
        .slots()?
        .into_iter()
        .map(|slot| {
            let digest = bank.get_digest(slot).ok_or_else(|| {
                TpmError::Unsupported("the TPM did not return every selected PCR".into())
            })?;
            <[u8; 32]>::try_from(digest.value())
                .map_err(|_| TpmError::Unsupported("a SHA-256 PCR is not 32 bytes".into()))
        })
        .collect()
}

impl TpmBackend {
    /// Reads PCR values in the SHA-256 bank.
    pub fn pcr_read(&self, selection: &PcrSelection) -> Pending<Vec<PcrValue>> {
        let selection = selection.clone();
        self.submit(Retry::Safe, move |c| read(&mut c.ctx, &selection))
    }

    /// Extends one PCR with a SHA-256 digest: `new = SHA-256(old ‖ digest)`. Never
    /// retried, so a lost connection cannot extend twice.
    pub fn pcr_extend(&self, index: u8, digest: PcrValue) -> Pending<()> {
        self.submit(Retry::Never, move |c| {
            if index > MAX_PCR_INDEX {
                return Err(TpmError::InvalidInput(format!(
                    "PCR {index} does not exist"
                )));
            }
            let handle = PcrHandle::try_from(u32::from(index)).during("PCR handle")?;
            let mut values = DigestValues::new();
            values.set(
                HashingAlgorithm::Sha256,
                Digest::try_from(digest.to_vec()).during("extend")?,
            );
            c.ctx.pcr_extend(handle, values).during("extend a PCR")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_are_sorted_deduplicated_and_bounded() {
        let s = PcrSelection::sha256(&[16, 0, 7, 16]).unwrap();
        assert_eq!(s.indices(), &[0, 7, 16]);
        assert_eq!(s.bitmap(), [0b1000_0001, 0, 0b0000_0001]);
        assert_eq!(PcrSelection::from_bitmap(s.bitmap()).unwrap(), s);
        assert!(PcrSelection::sha256(&[]).is_err());
        assert!(PcrSelection::sha256(&[24]).is_err());
    }
}
