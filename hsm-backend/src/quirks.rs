//! Where a PKCS#11 module behaves unlike the standard, in one table.
//!
//! Every vendor difference the backend works around is a field here, chosen from the
//! token's manufacturer and model, so that the rest of the code reads as plain PKCS#11.

/// Known deviations of one token's module from PKCS#11.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quirks {
    /// A failed AES-GCM tag or AES-KWP integrity check returns `CKR_GENERAL_ERROR`
    /// (SoftHSM2 2.6) instead of `CKR_ENCRYPTED_DATA_INVALID` / `CKR_WRAPPED_KEY_INVALID`.
    pub integrity_failure_is_general_error: bool,
    /// Key generation from several sessions at once is unsafe (SoftHSMv2 #845,
    /// parsec #264), so the backend serialises key generation, and only that.
    pub serialize_key_generation: bool,
    /// RSA-OAEP works only with SHA-1 and MGF1-SHA-1 (SoftHSM2 2.6: "hashAlg must be
    /// CKM_SHA_1"); OAEP with SHA-256 is refused up front with a clear error.
    pub oaep_sha1_only: bool,
    /// `CKM_RSA_PKCS` signing of a prepared DigestInfo pads in software and then needs a
    /// key that may decrypt (tpm2-pkcs11 1.9); a sign-only key fails. PKCS#1 v1.5 over a
    /// digest is refused up front, with RSA-PSS as the way out.
    pub raw_rsa_pkcs_sign_needs_decrypt: bool,
}

impl Quirks {
    /// A module that follows the standard.
    pub const STANDARD: Quirks = Quirks {
        integrity_failure_is_general_error: false,
        serialize_key_generation: false,
        oaep_sha1_only: false,
        raw_rsa_pkcs_sign_needs_decrypt: false,
    };

    /// SoftHSM2 2.x.
    pub const SOFTHSM2: Quirks = Quirks {
        integrity_failure_is_general_error: true,
        serialize_key_generation: true,
        oaep_sha1_only: true,
        raw_rsa_pkcs_sign_needs_decrypt: false,
    };

    /// tpm2-pkcs11 1.9 (a TPM behind a PKCS#11 face; docs/operations.md).
    pub const TPM2_PKCS11: Quirks = Quirks {
        integrity_failure_is_general_error: false,
        serialize_key_generation: false,
        oaep_sha1_only: false,
        raw_rsa_pkcs_sign_needs_decrypt: true,
    };

    /// Picks the quirks for a token from the library's `CK_INFO` manufacturer and the
    /// token's `CK_TOKEN_INFO` manufacturer and model (tpm2-pkcs11's tokens carry the
    /// TPM's vendor, so the library names it).
    pub fn for_token(library: &str, manufacturer: &str, model: &str) -> Quirks {
        if manufacturer.trim() == "SoftHSM project" || model.trim() == "SoftHSM v2" {
            Quirks::SOFTHSM2
        } else if library.trim() == "tpm2-software.github.io" {
            Quirks::TPM2_PKCS11
        } else {
            Quirks::STANDARD
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softhsm_and_tpm2_pkcs11_are_recognised_and_others_are_standard() {
        assert_eq!(
            Quirks::for_token("SoftHSM", "SoftHSM project", "SoftHSM v2"),
            Quirks::SOFTHSM2
        );
        assert_eq!(
            Quirks::for_token("tpm2-software.github.io", "IBM", "SW   TPM"),
            Quirks::TPM2_PKCS11
        );
        assert_eq!(
            Quirks::for_token("Thales", "Thales", "Luna K7"),
            Quirks::STANDARD
        );
    }
}
