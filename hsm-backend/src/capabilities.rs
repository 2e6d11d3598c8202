//! What a token's module can do, asked of the module itself once, when the backend opens:
//! `C_GetMechanismList`, then `C_GetMechanismInfo` for each mechanism (key sizes, and
//! whether it generates, signs, encrypts or wraps).
//!
//! Every key the backend would make, and every signature scheme, is checked against this
//! set before the token is touched, so that what a module lacks is refused up front with
//! the name of the missing mechanism, and nothing is created. No module is named here:
//! behaviour that the mechanism list cannot reveal lives in `quirks.rs`.

use std::collections::BTreeMap;

use cryptoki::mechanism::{MechanismInfo, MechanismType};

use crate::error::{HsmError, Result};
use crate::key::{EcCurve, KeyAlgorithm, KeyClass, KeySpec, KeyUsage};
use crate::module::{Pkcs11Module, Token};
use crate::quirks::Quirks;
use crate::sign::SignatureAlgorithm;

/// What one mechanism may be used for, as `CK_MECHANISM_INFO` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MechanismUse {
    /// Smallest key size (bits or bytes, as the mechanism defines).
    pub min_key_size: usize,
    /// Largest key size.
    pub max_key_size: usize,
    /// `CKF_GENERATE`.
    pub generate: bool,
    /// `CKF_GENERATE_KEY_PAIR`.
    pub generate_key_pair: bool,
    /// `CKF_SIGN`.
    pub sign: bool,
    /// `CKF_ENCRYPT` and `CKF_DECRYPT`.
    pub encrypt_decrypt: bool,
    /// `CKF_WRAP` and `CKF_UNWRAP`.
    pub wrap_unwrap: bool,
    /// `CKF_DERIVE`.
    pub derive: bool,
}

impl From<MechanismInfo> for MechanismUse {
    fn from(info: MechanismInfo) -> Self {
        MechanismUse {
            min_key_size: info.min_key_size(),
            max_key_size: info.max_key_size(),
            generate: info.generate(),
            generate_key_pair: info.generate_key_pair(),
            sign: info.sign(),
            encrypt_decrypt: info.encrypt() && info.decrypt(),
            wrap_unwrap: info.wrap() && info.unwrap(),
            derive: info.derive(),
        }
    }
}

/// A mechanism's number, as a map key (`CK_ULONG` is `u64` here, `u32` on some targets).
#[allow(clippy::useless_conversion)]
fn code(mechanism: MechanismType) -> u64 {
    u64::from(*mechanism)
}

/// Which flag an operation needs of a mechanism.
#[derive(Debug, Clone, Copy)]
enum Need {
    Generate,
    GenerateKeyPair,
    Sign,
    EncryptDecrypt,
    WrapUnwrap,
    Derive,
}

/// The mechanisms a token offers, with what each may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    offered: BTreeMap<u64, (MechanismType, MechanismUse)>,
    quirks: Quirks,
}

impl Capabilities {
    /// Asks the module what the token offers (once per backend).
    ///
    /// # Errors
    /// The module cannot list its mechanisms.
    pub(crate) fn discover(module: &Pkcs11Module, token: &Token) -> Result<Capabilities> {
        let ctx = module.context();
        let list = ctx
            .get_mechanism_list(token.slot)
            .map_err(|e| module.error(e))?;
        let mut offered = Vec::with_capacity(list.len());
        for mechanism in list {
            // A mechanism the module lists but cannot describe counts as not offered.
            match ctx.get_mechanism_info(token.slot, mechanism) {
                Ok(info) => offered.push((mechanism, MechanismUse::from(info))),
                Err(e) => tracing::warn!(%mechanism, error = %e, "C_GetMechanismInfo failed"),
            }
        }
        Ok(Capabilities::from_offered(
            offered,
            token.description.quirks(),
        ))
    }

    /// A capability set from a mechanism list (for tests and tooling).
    pub fn from_offered(
        offered: impl IntoIterator<Item = (MechanismType, MechanismUse)>,
        quirks: Quirks,
    ) -> Capabilities {
        Capabilities {
            offered: offered
                .into_iter()
                .map(|(m, u)| (code(m), (m, u)))
                .collect(),
            quirks,
        }
    }

    /// The mechanisms offered, by name (`CKM_ECDSA`, ...).
    pub fn mechanism_names(&self) -> Vec<String> {
        self.offered.values().map(|(m, _)| m.to_string()).collect()
    }

    /// The RSA modulus sizes the token generates, `(min, max)` bits.
    pub fn rsa_key_bits(&self) -> Option<(usize, usize)> {
        self.offered
            .get(&code(MechanismType::RSA_PKCS_KEY_PAIR_GEN))
            .filter(|(_, u)| u.generate_key_pair)
            .map(|(_, u)| (u.min_key_size, u.max_key_size))
    }

    /// Whether the token can make and use a key of this spec.
    ///
    /// # Errors
    /// [`HsmError::MechanismNotSupported`] naming the first mechanism that is missing, or
    /// the key size it does not cover.
    pub fn check_key(&self, spec: KeySpec) -> Result<()> {
        use KeyAlgorithm as A;
        use KeyUsage as U;
        let what = format!("{} keys for {:?}", spec.algorithm(), spec.usage());
        match (spec.algorithm(), spec.usage()) {
            (A::Ec(curve), _) => {
                let bits = match curve {
                    EcCurve::P256 => 256,
                    EcCurve::P384 => 384,
                };
                let gen_ = self.require(
                    MechanismType::ECC_KEY_PAIR_GEN,
                    Need::GenerateKeyPair,
                    &what,
                )?;
                self.require_size(MechanismType::ECC_KEY_PAIR_GEN, gen_, &[bits], &what)?;
                self.require(MechanismType::ECDSA, Need::Sign, &what)?;
            }
            (A::Rsa(bits), usage) => {
                let gen_ = self.require(
                    MechanismType::RSA_PKCS_KEY_PAIR_GEN,
                    Need::GenerateKeyPair,
                    &what,
                )?;
                let bits = bits as usize;
                self.require_size(MechanismType::RSA_PKCS_KEY_PAIR_GEN, gen_, &[bits], &what)?;
                if usage == U::SignVerify {
                    let pss = self
                        .check_signature(SignatureAlgorithm::RsaPss(crate::HashAlgorithm::Sha256));
                    let pkcs1 = self.check_signature(SignatureAlgorithm::RsaPkcs1v15(
                        crate::HashAlgorithm::Sha256,
                    ));
                    pss.or(pkcs1)?;
                } else {
                    self.require(MechanismType::RSA_PKCS_OAEP, Need::EncryptDecrypt, &what)?;
                }
            }
            (A::Aes256, usage) => {
                let gen_ = self.require(MechanismType::AES_KEY_GEN, Need::Generate, &what)?;
                // AES key sizes are bytes by the standard; some modules give bits.
                self.require_size(MechanismType::AES_KEY_GEN, gen_, &[32, 256], &what)?;
                match usage {
                    U::WrapUnwrap => {
                        self.require(MechanismType::AES_KEY_WRAP_PAD, Need::WrapUnwrap, &what)?;
                    }
                    _ => {
                        self.require(MechanismType::AES_GCM, Need::EncryptDecrypt, &what)?;
                    }
                }
            }
            (A::HmacSha256, _) => {
                self.require(MechanismType::GENERIC_SECRET_KEY_GEN, Need::Generate, &what)?;
                self.require(MechanismType::SHA256_HMAC, Need::Sign, &what)?;
            }
        }
        if spec.class() == KeyClass::Releasable {
            self.check_release()?;
        }
        Ok(())
    }

    /// Whether the token can release a key to a workload: a P-256 ephemeral key pair,
    /// ECDH with the workload's public key, and AES key wrap with padding.
    ///
    /// # Errors
    /// [`HsmError::MechanismNotSupported`] naming the first mechanism that is missing.
    pub fn check_release(&self) -> Result<()> {
        let what = "releasing keys to workloads";
        let gen_ = self.require(MechanismType::ECC_KEY_PAIR_GEN, Need::GenerateKeyPair, what)?;
        self.require_size(MechanismType::ECC_KEY_PAIR_GEN, gen_, &[256], what)?;
        self.require(MechanismType::ECDH1_DERIVE, Need::Derive, what)?;
        self.require(MechanismType::AES_KEY_WRAP_PAD, Need::WrapUnwrap, what)?;
        Ok(())
    }

    /// Whether the token can make this signature over a digest the backend is given.
    ///
    /// # Errors
    /// [`HsmError::MechanismNotSupported`] naming the mechanism, and what to use instead.
    pub fn check_signature(&self, alg: SignatureAlgorithm) -> Result<()> {
        let what = format!("{alg:?} signatures");
        match alg {
            SignatureAlgorithm::EcdsaP256Sha256 | SignatureAlgorithm::EcdsaP384Sha384 => {
                self.require(MechanismType::ECDSA, Need::Sign, &what)?;
            }
            SignatureAlgorithm::RsaPss(_) => {
                self.require(MechanismType::RSA_PKCS_PSS, Need::Sign, &what)?;
            }
            SignatureAlgorithm::RsaPkcs1v15(_) => {
                // Over a digest, PKCS#1 v1.5 is CKM_RSA_PKCS on the DigestInfo; the
                // CKM_SHA*_RSA_PKCS mechanisms hash the message themselves.
                self.require(MechanismType::RSA_PKCS, Need::Sign, &what)?;
                if self.quirks.raw_rsa_pkcs_sign_needs_decrypt {
                    return Err(HsmError::MechanismNotSupported(format!(
                        "CKM_RSA_PKCS for {what}: this module signs a prepared digest only \
                         with keys that may also decrypt, and a key here has one usage; \
                         its CKM_SHA*_RSA_PKCS hash the message themselves, and the broker \
                         signs digests. Use RSA-PSS"
                    )));
                }
            }
        }
        Ok(())
    }

    fn require(&self, mechanism: MechanismType, need: Need, what: &str) -> Result<MechanismUse> {
        let missing = |why: &str| {
            HsmError::MechanismNotSupported(format!("{mechanism} ({why}, needed for {what})"))
        };
        let (_, found) = self
            .offered
            .get(&code(mechanism))
            .ok_or_else(|| missing("not offered by the token"))?;
        let (ok, flag) = match need {
            Need::Generate => (found.generate, "CKF_GENERATE"),
            Need::GenerateKeyPair => (found.generate_key_pair, "CKF_GENERATE_KEY_PAIR"),
            Need::Sign => (found.sign, "CKF_SIGN"),
            Need::EncryptDecrypt => (found.encrypt_decrypt, "CKF_ENCRYPT and CKF_DECRYPT"),
            Need::WrapUnwrap => (found.wrap_unwrap, "CKF_WRAP and CKF_UNWRAP"),
            Need::Derive => (found.derive, "CKF_DERIVE"),
        };
        if ok {
            Ok(*found)
        } else {
            Err(missing(&format!("offered without {flag}")))
        }
    }

    /// Checks that one of `sizes` is in the mechanism's range (a range of 0..0 says
    /// nothing, and passes).
    fn require_size(
        &self,
        mechanism: MechanismType,
        found: MechanismUse,
        sizes: &[usize],
        what: &str,
    ) -> Result<()> {
        let (min, max) = (found.min_key_size, found.max_key_size);
        if max == 0 || sizes.iter().any(|s| (min..=max).contains(s)) {
            return Ok(());
        }
        Err(HsmError::MechanismNotSupported(format!(
            "{mechanism} for {what}: the token's key sizes are {min} to {max}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HashAlgorithm;

    fn offered(list: &[(MechanismType, usize, usize, &str)]) -> Vec<(MechanismType, MechanismUse)> {
        list.iter()
            .map(|(m, min, max, flags)| {
                let has = |f: &str| flags.split(',').any(|x| x == f);
                let u = MechanismUse {
                    min_key_size: *min,
                    max_key_size: *max,
                    generate: has("gen"),
                    generate_key_pair: has("pair"),
                    sign: has("sign"),
                    encrypt_decrypt: has("enc"),
                    wrap_unwrap: has("wrap"),
                    derive: has("derive"),
                };
                (*m, u)
            })
            .collect()
    }

    /// What tpm2-pkcs11 1.9 answers on swtpm (measured; docs/operations.md).
    fn tpm2_like(quirks: Quirks) -> Capabilities {
        use MechanismType as M;
        Capabilities::from_offered(
            offered(&[
                (M::RSA_PKCS_KEY_PAIR_GEN, 1024, 3072, "pair"),
                (M::RSA_PKCS, 1024, 3072, "sign,enc"),
                (M::RSA_PKCS_PSS, 1024, 3072, "sign"),
                (M::RSA_PKCS_OAEP, 1024, 3072, "enc"),
                (M::ECC_KEY_PAIR_GEN, 192, 638, "pair"),
                (M::ECDSA, 192, 638, "sign"),
                (M::AES_KEY_GEN, 16, 32, "gen"),
                (M::AES_CBC, 16, 32, "enc"),
            ]),
            quirks,
        )
    }

    fn spec(a: KeyAlgorithm, u: KeyUsage) -> KeySpec {
        KeySpec::new(a, u).unwrap()
    }

    fn refusal(r: Result<()>) -> String {
        match r {
            Err(HsmError::MechanismNotSupported(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn what_the_module_offers_is_accepted() {
        let caps = tpm2_like(Quirks::STANDARD);
        for s in [
            spec(KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::SignVerify),
            spec(KeyAlgorithm::Ec(EcCurve::P384), KeyUsage::SignVerify),
            spec(KeyAlgorithm::Rsa(2048), KeyUsage::SignVerify),
            spec(KeyAlgorithm::Rsa(3072), KeyUsage::EncryptDecrypt),
        ] {
            caps.check_key(s).unwrap();
        }
        assert_eq!(caps.rsa_key_bits(), Some((1024, 3072)));
    }

    #[test]
    fn a_missing_mechanism_or_size_is_refused_by_name() {
        let caps = tpm2_like(Quirks::STANDARD);
        let aes = refusal(caps.check_key(spec(KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt)));
        assert!(aes.starts_with("CKM_AES_GCM (not offered"), "{aes}");
        let kwp = refusal(caps.check_key(spec(KeyAlgorithm::Aes256, KeyUsage::WrapUnwrap)));
        assert!(kwp.starts_with("CKM_AES_KEY_WRAP_PAD"), "{kwp}");
        let rsa = refusal(caps.check_key(spec(KeyAlgorithm::Rsa(4096), KeyUsage::SignVerify)));
        assert!(
            rsa.contains("CKM_RSA_PKCS_KEY_PAIR_GEN") && rsa.contains("1024 to 3072"),
            "{rsa}"
        );
        let hmac = refusal(caps.check_key(spec(KeyAlgorithm::HmacSha256, KeyUsage::Mac)));
        assert!(hmac.starts_with("CKM_GENERIC_SECRET_KEY_GEN"), "{hmac}");
    }

    #[test]
    fn releasable_keys_need_ecdh_and_key_wrap_with_padding() {
        use MechanismType as M;
        let releasable =
            KeySpec::releasable(KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt).unwrap();
        let mut list = vec![
            (M::AES_KEY_GEN, 16, 32, "gen"),
            (M::AES_GCM, 16, 32, "enc"),
            (M::AES_KEY_WRAP_PAD, 1, 1 << 31, "wrap"),
            (M::ECC_KEY_PAIR_GEN, 112, 521, "pair"),
        ];
        let caps = Capabilities::from_offered(offered(&list), Quirks::STANDARD);
        caps.check_key(spec(KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt))
            .unwrap();
        let m = refusal(caps.check_key(releasable));
        assert!(m.starts_with("CKM_ECDH1_DERIVE (not offered"), "{m}");
        list.push((M::ECDH1_DERIVE, 112, 521, ""));
        let caps = Capabilities::from_offered(offered(&list), Quirks::STANDARD);
        let m = refusal(caps.check_release());
        assert!(m.contains("without CKF_DERIVE"), "{m}");
        list.pop();
        list.push((M::ECDH1_DERIVE, 112, 521, "derive"));
        let caps = Capabilities::from_offered(offered(&list), Quirks::STANDARD);
        caps.check_key(releasable).unwrap();
    }

    #[test]
    fn a_mechanism_without_the_needed_flag_is_refused() {
        use MechanismType as M;
        let caps = Capabilities::from_offered(
            offered(&[(M::AES_KEY_GEN, 16, 32, "gen"), (M::AES_GCM, 16, 32, "")]),
            Quirks::STANDARD,
        );
        let m = refusal(caps.check_key(spec(KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt)));
        assert!(m.contains("without CKF_ENCRYPT"), "{m}");
    }

    #[test]
    fn pkcs1v15_over_a_digest_is_refused_where_raw_rsa_needs_decrypt() {
        let quirky = Quirks {
            raw_rsa_pkcs_sign_needs_decrypt: true,
            ..Quirks::STANDARD
        };
        let caps = tpm2_like(quirky);
        let m =
            refusal(caps.check_signature(SignatureAlgorithm::RsaPkcs1v15(HashAlgorithm::Sha256)));
        assert!(m.contains("Use RSA-PSS"), "{m}");
        caps.check_signature(SignatureAlgorithm::RsaPss(HashAlgorithm::Sha256))
            .unwrap();
        // PSS is enough to make RSA signing keys.
        caps.check_key(spec(KeyAlgorithm::Rsa(2048), KeyUsage::SignVerify))
            .unwrap();
        tpm2_like(Quirks::STANDARD)
            .check_signature(SignatureAlgorithm::RsaPkcs1v15(HashAlgorithm::Sha256))
            .unwrap();
    }
}
