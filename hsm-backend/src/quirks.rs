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
}

impl Quirks {
    /// A module that follows the standard.
    pub const STANDARD: Quirks = Quirks {
        integrity_failure_is_general_error: false,
        serialize_key_generation: false,
        oaep_sha1_only: false,
    };

    /// SoftHSM2 2.x.
    pub const SOFTHSM2: Quirks = Quirks {
        integrity_failure_is_general_error: true,
        serialize_key_generation: true,
        oaep_sha1_only: true,
    };

    /// Picks the quirks for a token from its `CK_TOKEN_INFO` manufacturer and model.
    pub fn for_token(manufacturer: &str, model: &str) -> Quirks {
        if manufacturer.trim() == "SoftHSM project" || model.trim() == "SoftHSM v2" {
            Quirks::SOFTHSM2
        } else {
            Quirks::STANDARD
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softhsm_is_recognised_and_others_are_standard() {
        assert_eq!(
            Quirks::for_token("SoftHSM project", "SoftHSM v2"),
            Quirks::SOFTHSM2
        );
        assert_eq!(Quirks::for_token("Thales", "Luna K7"), Quirks::STANDARD);
    }
}
