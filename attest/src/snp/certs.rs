//! AMD endorsement certificates: the VEK's extensions and every certificate's validity.
//!
//! VCEK and VLEK certificates carry the TCB they were derived for (one extension per
//! component) and, for a VCEK, the chip's hardware id. A report is accepted only if its
//! reported TCB and chip id are the certificate's.

use std::time::SystemTime;

use der::Decode;
use der::asn1::{Ia5StringRef, ObjectIdentifier};
use x509_cert::Certificate;

use crate::error::{AttestError, Result};

const OID_PRODUCT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.2");
const OID_BL_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
const OID_TEE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
const OID_SNP_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
const OID_UCODE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
const OID_FMC_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.9");
const OID_HWID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4");

/// The TCB a VEK certificate was issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CertTcb {
    /// PSP bootloader SVN.
    pub bootloader: u8,
    /// PSP OS SVN.
    pub tee: u8,
    /// SNP firmware SVN.
    pub snp: u8,
    /// Microcode SVN.
    pub microcode: u8,
    /// FMC SVN (Turin and later).
    pub fmc: Option<u8>,
}

/// What a VEK certificate says about the chip and TCB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VekInfo {
    pub(crate) hwid: Option<Vec<u8>>,
    pub(crate) tcb: CertTcb,
    pub(crate) product: Option<String>,
}

fn extension(cert: &Certificate, oid: ObjectIdentifier) -> Option<&[u8]> {
    cert.tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == oid)
        .map(|e| e.extn_value.as_bytes())
}

fn spl(cert: &Certificate, oid: ObjectIdentifier, name: &str) -> Result<Option<u8>> {
    extension(cert, oid)
        .map(|bytes| {
            u8::from_der(bytes).map_err(|_| {
                AttestError::Chain(format!("the VEK's {name} SPL extension is malformed"))
            })
        })
        .transpose()
}

pub(crate) fn vek_info(cert: &Certificate) -> Result<VekInfo> {
    let required = |oid, name| {
        spl(cert, oid, name)?
            .ok_or_else(|| AttestError::Chain(format!("the VEK has no {name} SPL extension")))
    };
    Ok(VekInfo {
        hwid: extension(cert, OID_HWID).map(<[u8]>::to_vec),
        tcb: CertTcb {
            bootloader: required(OID_BL_SPL, "bootloader")?,
            tee: required(OID_TEE_SPL, "TEE")?,
            snp: required(OID_SNP_SPL, "SNP")?,
            microcode: required(OID_UCODE_SPL, "microcode")?,
            fmc: spl(cert, OID_FMC_SPL, "FMC")?,
        },
        product: extension(cert, OID_PRODUCT_NAME)
            .and_then(|b| Ia5StringRef::from_der(b).ok())
            .map(|s| s.as_str().to_string()),
    })
}

/// Fails unless `now` is within the certificate's validity.
pub(crate) fn check_validity(cert: &Certificate, what: &str, now: SystemTime) -> Result<()> {
    let validity = &cert.tbs_certificate.validity;
    let (from, until) = (
        validity.not_before.to_system_time(),
        validity.not_after.to_system_time(),
    );
    if now < from {
        return Err(AttestError::Chain(format!(
            "the {what} certificate is not valid yet"
        )));
    }
    if now > until {
        return Err(AttestError::Chain(format!(
            "the {what} certificate has expired"
        )));
    }
    Ok(())
}
