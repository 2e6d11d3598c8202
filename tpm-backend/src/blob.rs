//! What callers store: the public and TPM-wrapped private parts of an object created under
//! the SRK. The private part is encrypted by the TPM; it is useless without that TPM.
//!
//! Never a `ContextSave` blob: those die with a reboot (LESSONS: parsec #504).

use tss_esapi::structures::{Private, Public};
use tss_esapi::traits::{Marshall, UnMarshall};

use crate::error::{Result, TpmError};

const FORMAT_VERSION: u8 = 1;

/// A TPM object as the caller keeps it: marshalled `TPMT_PUBLIC` and the `TPM2B_PRIVATE`
/// contents.
#[derive(Clone, PartialEq, Eq)]
pub struct TpmBlob {
    pub(crate) public: Vec<u8>,
    pub(crate) private: Vec<u8>,
}

impl std::fmt::Debug for TpmBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmBlob")
            .field("public_len", &self.public.len())
            .field("private_len", &self.private.len())
            .finish()
    }
}

impl TpmBlob {
    pub(crate) fn from_parts(public: &Public, private: &Private) -> Result<TpmBlob> {
        let public = public
            .marshall()
            .map_err(|e| TpmError::InvalidBlob(format!("cannot marshal the public part: {e}")))?;
        Ok(TpmBlob {
            public,
            private: private.value().to_vec(),
        })
    }

    pub(crate) fn public(&self) -> Result<Public> {
        Public::unmarshall(&self.public)
            .map_err(|e| TpmError::InvalidBlob(format!("public part: {e}")))
    }

    pub(crate) fn private(&self) -> Result<Private> {
        Private::try_from(self.private.clone())
            .map_err(|e| TpmError::InvalidBlob(format!("private part: {e}")))
    }

    /// One byte string for storage: version, then two length-prefixed parts.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.public.len() + self.private.len());
        out.push(FORMAT_VERSION);
        for part in [&self.public, &self.private] {
            // Both parts are TPM2B contents, so their lengths fit in a u16.
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// Parses [`TpmBlob::to_bytes`] output.
    ///
    /// # Errors
    /// [`TpmError::InvalidBlob`] for an unknown version, a truncated blob or trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<TpmBlob> {
        let bad = |why: &str| TpmError::InvalidBlob(why.to_string());
        let (version, mut rest) = bytes.split_first().ok_or_else(|| bad("empty"))?;
        if *version != FORMAT_VERSION {
            return Err(bad("unknown blob format version"));
        }
        let mut parts = Vec::with_capacity(2);
        for _ in 0..2 {
            let (len, tail) = rest
                .split_first_chunk::<2>()
                .ok_or_else(|| bad("truncated"))?;
            let len = usize::from(u16::from_be_bytes(*len));
            let (part, tail) = tail.split_at_checked(len).ok_or_else(|| bad("truncated"))?;
            parts.push(part.to_vec());
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        let private = parts.pop().unwrap_or_default();
        let public = parts.pop().unwrap_or_default();
        let blob = TpmBlob { public, private };
        blob.public()?;
        Ok(blob)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_truncated_blobs_are_refused() {
        assert!(TpmBlob::from_bytes(&[]).is_err());
        assert!(TpmBlob::from_bytes(&[2, 0, 0, 0, 0]).is_err());
        assert!(TpmBlob::from_bytes(&[1, 0, 5, 1]).is_err());
        assert!(
            TpmBlob::from_bytes(&[1, 0, 1, 0xff, 0, 0]).is_err(),
            "not a TPMT_PUBLIC"
        );
    }
}
