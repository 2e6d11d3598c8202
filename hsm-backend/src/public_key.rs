//! Public keys: export as SubjectPublicKeyInfo (DER, PEM), and import for verification
//! or encryption. ASN.1 is done by the `der`, `spki`, `p256`, `p384` and `rsa` crates.

use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::BigUint;
use rsa::traits::PublicKeyParts;

use crate::backend::HsmBackend;
use crate::error::{HsmError, Op, Result};
use crate::key::{EcCurve, KeyAlgorithm, KeyId, KeyInfo, KeyLabel, KeySpec, KeyUsage};

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// A DER-encoded SubjectPublicKeyInfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyDer(Vec<u8>);

impl PublicKeyDer {
    /// The DER bytes.
    pub fn as_der(&self) -> &[u8] {
        &self.0
    }

    /// PEM text (`-----BEGIN PUBLIC KEY-----`).
    ///
    /// # Errors
    /// Only if the DER cannot be framed, which does not happen for keys from this crate.
    pub fn to_pem(&self) -> Result<String> {
        let doc = spki::Document::try_from(self.0.as_slice())
            .map_err(|e| HsmError::InvalidInput(format!("not DER: {e}")))?;
        doc.to_pem("PUBLIC KEY", LineEnding::LF)
            .map_err(|e| HsmError::InvalidInput(format!("PEM encoding failed: {e}")))
    }
}

/// `CKA_EC_PARAMS` for a curve: the DER of its named-curve OID.
pub(crate) fn curve_params(curve: EcCurve) -> Vec<u8> {
    let oid = match curve {
        EcCurve::P256 => OID_P256,
        EcCurve::P384 => OID_P384,
    };
    oid.to_der().unwrap_or_default()
}

/// The curve named by `CKA_EC_PARAMS`, if it is one this crate supports.
pub(crate) fn curve_from_params(params: &[u8]) -> Option<EcCurve> {
    match ObjectIdentifier::from_der(params).ok()? {
        OID_P256 => Some(EcCurve::P256),
        OID_P384 => Some(EcCurve::P384),
        _ => None,
    }
}

/// SEC1 point bytes from `CKA_EC_POINT`, which PKCS#11 wraps in a DER OCTET STRING. Some
/// modules return the bare point; both are accepted.
pub(crate) fn sec1_point(attr: &[u8], curve: EcCurve) -> Option<Vec<u8>> {
    let bare_len = 1 + 2 * curve.field_len();
    match OctetString::from_der(attr) {
        Ok(os) if os.as_bytes().len() == bare_len => Some(os.as_bytes().to_vec()),
        _ if attr.len() == bare_len && attr.first() == Some(&0x04) => Some(attr.to_vec()),
        _ => None,
    }
}

fn ec_spki(curve: EcCurve, sec1: &[u8]) -> Option<Vec<u8>> {
    let doc = match curve {
        EcCurve::P256 => p256::PublicKey::from_sec1_bytes(sec1)
            .ok()?
            .to_public_key_der(),
        EcCurve::P384 => p384::PublicKey::from_sec1_bytes(sec1)
            .ok()?
            .to_public_key_der(),
    };
    doc.ok().map(|d| d.as_bytes().to_vec())
}

fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Option<Vec<u8>> {
    let key = rsa::RsaPublicKey::new(
        BigUint::from_bytes_be(modulus),
        BigUint::from_bytes_be(exponent),
    )
    .ok()?;
    key.to_public_key_der().ok().map(|d| d.as_bytes().to_vec())
}

/// The algorithm and PKCS#11 attributes of a public key given as SPKI DER.
fn parse_spki(der: &[u8]) -> Result<(KeyAlgorithm, Vec<Attribute>)> {
    let bad = |why: String| HsmError::InvalidInput(format!("not a supported public key: {why}"));
    let info = spki::SubjectPublicKeyInfoRef::try_from(der).map_err(|e| bad(e.to_string()))?;
    match info.algorithm.oid {
        OID_EC_PUBLIC_KEY => {
            let curve = info
                .algorithm
                .parameters_oid()
                .ok()
                .and_then(|oid| curve_from_params(&oid.to_der().ok()?))
                .ok_or_else(|| bad("EC curve is not P-256 or P-384".into()))?;
            let point =
                match curve {
                    EcCurve::P256 => p256::PublicKey::from_public_key_der(der)
                        .map(|k| k.to_sec1_bytes().to_vec()),
                    EcCurve::P384 => p384::PublicKey::from_public_key_der(der)
                        .map(|k| k.to_sec1_bytes().to_vec()),
                }
                .map_err(|e| bad(e.to_string()))?;
            let wrapped = OctetString::new(point)
                .and_then(|o| o.to_der())
                .map_err(|e| bad(e.to_string()))?;
            let attrs = vec![
                Attribute::KeyType(KeyType::EC),
                Attribute::EcParams(curve_params(curve)),
                Attribute::EcPoint(wrapped),
            ];
            Ok((KeyAlgorithm::Ec(curve), attrs))
        }
        OID_RSA_ENCRYPTION => {
            let key =
                rsa::RsaPublicKey::from_public_key_der(der).map_err(|e| bad(e.to_string()))?;
            let bits = u32::try_from(key.n().bits()).unwrap_or(0);
            let attrs = vec![
                Attribute::KeyType(KeyType::RSA),
                Attribute::Modulus(key.n().to_bytes_be()),
                Attribute::PublicExponent(key.e().to_bytes_be()),
            ];
            Ok((KeyAlgorithm::Rsa(bits), attrs))
        }
        other => Err(bad(format!("algorithm {other}"))),
    }
}

impl HsmBackend {
    /// Exports a key's public half as SubjectPublicKeyInfo.
    ///
    /// # Errors
    /// [`HsmError::KeyNotFound`], or [`HsmError::KeyUsageNotPermitted`] for a secret key.
    pub fn public_key(&self, id: &KeyId) -> Result<PublicKeyDer> {
        self.pool.run(|s| {
            let key = s.key_for(id, ObjectClass::PUBLIC_KEY, &crate::pool::already_checked)?;
            let wanted = match key.spec.algorithm() {
                KeyAlgorithm::Ec(_) => vec![AttributeType::EcPoint],
                _ => vec![AttributeType::Modulus, AttributeType::PublicExponent],
            };
            let attrs = s
                .session
                .get_attributes(key.handle, &wanted)
                .map_err(|e| s.error(e, Op::General))?;
            let spki = match (key.spec.algorithm(), attrs.as_slice()) {
                (KeyAlgorithm::Ec(curve), [Attribute::EcPoint(p)]) => {
                    sec1_point(p, curve).and_then(|pt| ec_spki(curve, &pt))
                }
                (KeyAlgorithm::Rsa(_), [Attribute::Modulus(n), Attribute::PublicExponent(e)]) => {
                    rsa_spki(n, e)
                }
                _ => None,
            };
            spki.map(PublicKeyDer).ok_or_else(|| HsmError::Pkcs11 {
                function: "C_GetAttributeValue".into(),
                rv: "the token returned a public key this backend cannot encode".into(),
            })
        })
    }

    /// Imports a public key (SPKI DER) so the token can verify signatures with it
    /// ([`KeyUsage::SignVerify`]) or encrypt to it ([`KeyUsage::EncryptDecrypt`], RSA).
    ///
    /// # Errors
    /// Malformed or unsupported SPKI, a usage the algorithm cannot serve, or an id in use.
    pub fn import_public_key(
        &self,
        id: &KeyId,
        label: &KeyLabel,
        spki_der: &[u8],
        usage: KeyUsage,
    ) -> Result<KeyInfo> {
        let (algorithm, mut template) = parse_spki(spki_der)?;
        let spec = KeySpec::new(algorithm, usage)?;
        template.extend([
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Token(true),
            Attribute::Modifiable(false),
            Attribute::Private(false),
            Attribute::Id(id.as_bytes().to_vec()),
            Attribute::Label(label.as_str().as_bytes().to_vec()),
            Attribute::Verify(usage == KeyUsage::SignVerify),
            Attribute::Encrypt(usage == KeyUsage::EncryptDecrypt),
        ]);
        self.pool.run(|s| {
            crate::key_management::ensure_id_free(s, id)?;
            s.session
                .create_object(&template)
                .map_err(|e| s.error(e, Op::General))?;
            Ok(())
        })?;
        Ok(KeyInfo {
            id: id.clone(),
            label: label.as_str().to_string(),
            spec,
            protection: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_params_round_trip() {
        for curve in [EcCurve::P256, EcCurve::P384] {
            assert_eq!(curve_from_params(&curve_params(curve)), Some(curve));
        }
        assert_eq!(curve_from_params(&[0x05, 0x00]), None);
    }

    #[test]
    fn ec_point_is_accepted_wrapped_or_bare() {
        let bare = [&[0x04u8][..], &[7u8; 64][..]].concat();
        let wrapped = OctetString::new(bare.clone()).unwrap().to_der().unwrap();
        assert_eq!(sec1_point(&wrapped, EcCurve::P256), Some(bare.clone()));
        assert_eq!(sec1_point(&bare, EcCurve::P256), Some(bare));
        assert_eq!(sec1_point(&[0x04, 1, 2], EcCurve::P256), None);
    }

    #[test]
    fn garbage_spki_is_refused() {
        assert!(matches!(
            parse_spki(b"not der"),
            Err(HsmError::InvalidInput(_))
        ));
    }
}
