//! TPM 2.0 wire structures a quote verifier reads: `TPMS_ATTEST` (quote) and
//! `TPMT_SIGNATURE` (ECDSA). Big-endian, length-prefixed, every read bounds-checked;
//! trailing bytes are refused. The marshalling direction exists so tests and tools can
//! build the structures a TPM would (and so an attacker's forgery can be tested).

use crate::error::{AttestError, Result};

const TPM_GENERATED_VALUE: u32 = 0xFF54_4347;
const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
const TPM_ALG_ECDSA: u16 = 0x0018;
const TPM_ALG_SHA256: u16 = 0x000B;
/// Largest TPM2B the quote structures may carry (a TPMU_HA or TPMU_NAME).
const MAX_TPM2B: usize = 68;
const MAX_SELECTIONS: u32 = 16;

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let (head, tail) = self
            .0
            .split_at_checked(n)
            .ok_or_else(|| AttestError::Malformed(format!("quote truncated in {what}")))?;
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        self.take(N, what)?
            .try_into()
            .map_err(|_| AttestError::Malformed(format!("quote truncated in {what}")))
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn tpm2b(&mut self, what: &str) -> Result<&'a [u8]> {
        let len = usize::from(self.u16(what)?);
        if len > MAX_TPM2B {
            return Err(AttestError::Malformed(format!(
                "{what} is {len} bytes, over {MAX_TPM2B}"
            )));
        }
        self.take(len, what)
    }

    fn finish(&self, what: &str) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(AttestError::Malformed(format!(
                "{} trailing bytes after {what}",
                self.0.len()
            )))
        }
    }
}

/// A PCR selection in one bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrBankSelection {
    /// `TPM_ALG_ID` of the bank.
    pub hash: u16,
    /// Selected PCR indices, ascending.
    pub pcrs: Vec<u8>,
}

/// A parsed quote (`TPMS_ATTEST` with `TPMS_QUOTE_INFO`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteInfo {
    /// Name of the signing key, as the TPM saw it.
    pub qualified_signer: Vec<u8>,
    /// The caller's qualifying data (the binding).
    pub extra_data: Vec<u8>,
    /// TPM clock (ms).
    pub clock: u64,
    /// Reset counter (TPM resets since manufacture).
    pub reset_count: u32,
    /// Restart counter.
    pub restart_count: u32,
    /// Quoted PCRs.
    pub selections: Vec<PcrBankSelection>,
    /// Digest of the quoted PCR values.
    pub pcr_digest: Vec<u8>,
}

/// Parses a marshalled `TPMS_ATTEST` that must be a quote.
///
/// # Errors
/// [`AttestError::Malformed`] naming what is wrong.
pub fn parse_quote(bytes: &[u8]) -> Result<QuoteInfo> {
    let mut r = Reader(bytes);
    if r.u32("magic")? != TPM_GENERATED_VALUE {
        return Err(AttestError::Malformed(
            "not a TPM-generated structure".into(),
        ));
    }
    if r.u16("type")? != TPM_ST_ATTEST_QUOTE {
        return Err(AttestError::Malformed(
            "the attestation is not a quote".into(),
        ));
    }
    let qualified_signer = r.tpm2b("qualifiedSigner")?.to_vec();
    let extra_data = r.tpm2b("extraData")?.to_vec();
    let clock = r.u64("clock")?;
    let reset_count = r.u32("resetCount")?;
    let restart_count = r.u32("restartCount")?;
    r.u8("safe")?;
    r.u64("firmwareVersion")?;
    let count = r.u32("pcrSelect count")?;
    if count > MAX_SELECTIONS {
        return Err(AttestError::Malformed(format!(
            "{count} PCR banks selected"
        )));
    }
    let mut selections = Vec::new();
    for _ in 0..count {
        let hash = r.u16("pcrSelect hash")?;
        let size = usize::from(r.u8("sizeofSelect")?);
        if size > 4 {
            return Err(AttestError::Malformed(format!("sizeofSelect {size}")));
        }
        let bitmap = r.take(size, "pcrSelect")?;
        let pcrs = (0..size * 8)
            .filter(|i| bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
            .filter_map(|i| u8::try_from(i).ok())
            .collect();
        selections.push(PcrBankSelection { hash, pcrs });
    }
    let pcr_digest = r.tpm2b("pcrDigest")?.to_vec();
    r.finish("the quote")?;
    Ok(QuoteInfo {
        qualified_signer,
        extra_data,
        clock,
        reset_count,
        restart_count,
        selections,
        pcr_digest,
    })
}

/// Parses a marshalled `TPMT_SIGNATURE` that must be ECDSA with SHA-256; returns (r, s)
/// left-padded to 32 bytes.
///
/// # Errors
/// [`AttestError::Malformed`] for another algorithm or a malformed structure.
pub fn parse_ecdsa_signature(bytes: &[u8]) -> Result<([u8; 32], [u8; 32])> {
    let mut r = Reader(bytes);
    if r.u16("sigAlg")? != TPM_ALG_ECDSA || r.u16("hash")? != TPM_ALG_SHA256 {
        return Err(AttestError::Malformed(
            "the signature is not ECDSA with SHA-256".into(),
        ));
    }
    let pad = |scalar: &[u8], what: &str| -> Result<[u8; 32]> {
        let mut out = [0u8; 32];
        let start = 32usize
            .checked_sub(scalar.len())
            .ok_or_else(|| AttestError::Malformed(format!("{what} longer than 32 bytes")))?;
        out.get_mut(start..)
            .ok_or_else(|| AttestError::Malformed(what.to_string()))?
            .copy_from_slice(scalar);
        Ok(out)
    };
    let sig_r = pad(r.tpm2b("signatureR")?, "signatureR")?;
    let sig_s = pad(r.tpm2b("signatureS")?, "signatureS")?;
    r.finish("the signature")?;
    Ok((sig_r, sig_s))
}

/// Marshals a quote as a TPM does (`safe` = 1, firmware version 0, which
/// [`parse_quote`] does not keep); selections name PCRs 0 to 31.
///
/// # Errors
/// [`AttestError::Malformed`] if a field is longer than a TPM2B allows.
pub fn marshal_quote(quote: &QuoteInfo) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&TPM_GENERATED_VALUE.to_be_bytes());
    out.extend_from_slice(&TPM_ST_ATTEST_QUOTE.to_be_bytes());
    tpm2b(&mut out, &quote.qualified_signer, "qualifiedSigner")?;
    tpm2b(&mut out, &quote.extra_data, "extraData")?;
    out.extend_from_slice(&quote.clock.to_be_bytes());
    out.extend_from_slice(&quote.reset_count.to_be_bytes());
    out.extend_from_slice(&quote.restart_count.to_be_bytes());
    out.push(1);
    out.extend_from_slice(&0u64.to_be_bytes());
    let count = u32::try_from(quote.selections.len())
        .map_err(|_| AttestError::Malformed("too many PCR banks".into()))?;
    out.extend_from_slice(&count.to_be_bytes());
    for bank in &quote.selections {
        out.extend_from_slice(&bank.hash.to_be_bytes());
        let mut bitmap = [0u8; 4];
        for pcr in &bank.pcrs {
            let byte = bitmap
                .get_mut(usize::from(*pcr / 8))
                .ok_or_else(|| AttestError::Malformed(format!("PCR {pcr}")))?;
            *byte |= 1 << (pcr % 8);
        }
        let size: u8 = if bitmap.last() == Some(&0) { 3 } else { 4 };
        out.push(size);
        out.extend_from_slice(bitmap.get(..usize::from(size)).unwrap_or_default());
    }
    tpm2b(&mut out, &quote.pcr_digest, "pcrDigest")?;
    Ok(out)
}

/// Marshals an ECDSA-with-SHA-256 `TPMT_SIGNATURE` from its two 32-byte scalars.
pub fn marshal_ecdsa_signature(r: &[u8; 32], s: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(72);
    out.extend_from_slice(&TPM_ALG_ECDSA.to_be_bytes());
    out.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    for scalar in [r, s] {
        out.extend_from_slice(&32u16.to_be_bytes());
        out.extend_from_slice(scalar);
    }
    out
}

fn tpm2b(out: &mut Vec<u8>, bytes: &[u8], what: &str) -> Result<()> {
    if bytes.len() > MAX_TPM2B {
        return Err(AttestError::Malformed(format!(
            "{what} is {} bytes, over {MAX_TPM2B}",
            bytes.len()
        )));
    }
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// `TPM_ALG_SHA256`, for comparing bank selections.
pub const SHA256_BANK: u16 = TPM_ALG_SHA256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_foreign_structures_are_refused() {
        assert!(parse_quote(&[]).is_err());
        assert!(parse_quote(&[0xff, 0x54, 0x43, 0x47, 0x80, 0x17]).is_err());
        assert!(parse_ecdsa_signature(&[0x00, 0x14, 0x00, 0x0b]).is_err());
        let oversized = [0x00, 0x18, 0x00, 0x0b, 0x00, 0x21]
            .iter()
            .copied()
            .chain([1u8; 33])
            .chain([0, 0])
            .collect::<Vec<_>>();
        assert!(parse_ecdsa_signature(&oversized).is_err());
    }

    #[test]
    fn marshalled_quotes_and_signatures_parse_back() {
        let quote = QuoteInfo {
            qualified_signer: vec![0x00, 0x0b, 7, 7],
            extra_data: vec![9; 32],
            clock: 1234,
            reset_count: 5,
            restart_count: 6,
            selections: vec![PcrBankSelection {
                hash: SHA256_BANK,
                pcrs: vec![0, 7, 16, 23],
            }],
            pcr_digest: vec![3; 32],
        };
        assert_eq!(parse_quote(&marshal_quote(&quote).unwrap()).unwrap(), quote);
        let (r, s) = ([1; 32], [2; 32]);
        assert_eq!(
            parse_ecdsa_signature(&marshal_ecdsa_signature(&r, &s)).unwrap(),
            (r, s)
        );
        let too_long = QuoteInfo {
            extra_data: vec![0; 69],
            ..quote
        };
        assert!(marshal_quote(&too_long).is_err());
    }
}
