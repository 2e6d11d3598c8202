//! The workload's ephemeral key: an ECDSA P-256 key made in the workload's memory (inside
//! the TEE), bound by the evidence to one challenge, and certified by the broker.
//!
//! It is written nowhere except by [`crate::files`] (mode 0600). The PKCS#8 document and its
//! PEM are wiped when the key is dropped, and `Debug` shows only the public key.
//!
//! Besides signing, the key agrees (ECDH) with a key the broker's HSM made, to open a key
//! released to this workload ([`crate::client::open_released_key`]).

use der::pem::LineEnding;
use p256::pkcs8::DecodePrivateKey;
use rcgen::{
    CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType,
};
use secrecy::{ExposeSecret, SecretString};
use zeroize::{Zeroize, Zeroizing};

/// Why a key or certification request could not be made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Generating the key pair or signing the request failed.
    #[error("ephemeral key: {0}")]
    Crypto(#[from] rcgen::Error),
    /// The PKCS#8 document could not be PEM-encoded.
    #[error("ephemeral key: PEM encoding: {0}")]
    Pem(der::pem::Error),
    /// The SPIFFE ID cannot be a URI subject alternative name.
    #[error("SPIFFE ID {0:?}: expected spiffe://trust-domain/path in ASCII")]
    SpiffeId(String),
    /// The key's PKCS#8 document is not a P-256 key that can agree (never expected: the
    /// key is made here).
    #[error("ephemeral key: not a P-256 key usable for key agreement")]
    Agreement,
}

/// An ECDSA P-256 key pair that lives only in this process.
pub struct EphemeralKey {
    pair: KeyPair,
    spki_der: Vec<u8>,
    /// The PKCS#8 PEM, encoded once (into a buffer of its final size) so that handing it out
    /// leaves no unwiped intermediate copies.
    pem: SecretString,
}

impl EphemeralKey {
    /// A new random key.
    ///
    /// # Errors
    /// [`KeyError::Crypto`] if the crypto library cannot generate a key.
    pub fn generate() -> Result<EphemeralKey, KeyError> {
        let pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let pem = der::pem::encode_string("PRIVATE KEY", LineEnding::LF, pair.serialized_der())
            .map_err(KeyError::Pem)?;
        Ok(EphemeralKey {
            spki_der: pair.subject_public_key_info(),
            pair,
            pem: SecretString::from(pem),
        })
    }

    /// The public key as a SubjectPublicKeyInfo, DER: what the evidence binds and what
    /// `AttestRequest.ephemeral_public_key` carries.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The private key as a PKCS#8 PEM document, for a TLS client identity or for
    /// [`crate::files`]. Wiped when the returned value is dropped.
    pub fn private_key_pem(&self) -> SecretString {
        SecretString::from(self.pem.expose_secret().to_owned())
    }

    /// A PKCS#10 request, DER, signed by this key (the broker's proof of possession), with
    /// an empty subject and exactly one subject alternative name: the URI `spiffe_id`.
    ///
    /// # Errors
    /// [`KeyError::SpiffeId`] if `spiffe_id` is not a `spiffe://` URI in ASCII;
    /// [`KeyError::Crypto`] if signing fails.
    pub fn csr_der(&self, spiffe_id: &str) -> Result<Vec<u8>, KeyError> {
        let refuse = || KeyError::SpiffeId(spiffe_id.to_string());
        if !spiffe_id.starts_with("spiffe://") || spiffe_id.len() <= "spiffe://".len() {
            return Err(refuse());
        }
        let uri = rcgen::string::Ia5String::try_from(spiffe_id).map_err(|_| refuse())?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri)];
        let request = params.serialize_request(&self.pair)?;
        Ok(request.der().to_vec())
    }

    /// ECDH on P-256 with `peer`: the X coordinate of the shared point, 32 bytes big-endian,
    /// as is (no KDF). Wiped on drop, like the scalar read for it.
    ///
    /// # Errors
    /// [`KeyError::Agreement`] if the key cannot be read back as a P-256 scalar.
    pub(crate) fn diffie_hellman(
        &self,
        peer: &p256::PublicKey,
    ) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        // `SecretKey` wipes itself on drop; the scalar copy is wrapped to do the same.
        let secret = p256::SecretKey::from_pkcs8_der(self.pair.serialized_der())
            .map_err(|_| KeyError::Agreement)?;
        let scalar = Zeroizing::new(secret.to_nonzero_scalar());
        let shared = p256::ecdh::diffie_hellman(&*scalar, peer.as_affine());
        let mut x = Zeroizing::new([0u8; 32]);
        x.copy_from_slice(shared.raw_secret_bytes());
        Ok(x)
    }
}

impl Drop for EphemeralKey {
    fn drop(&mut self) {
        // rcgen keeps the PKCS#8 document next to the key; the PEM wipes itself.
        self.pair.zeroize();
    }
}

impl std::fmt::Debug for EphemeralKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EphemeralKey")
            .field("algorithm", &"ECDSA P-256")
            .field("spki_der", &hex::encode(&self.spki_der))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::aws_lc_rs::default_provider;
    use rustls_pki_types::alg_id;
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;

    const ID: &str = "spiffe://test.keybroker/workload";

    /// Checks the request's signature with its own key (aws-lc-rs, through rustls' table of
    /// webpki algorithms: x509-parser 0.17 verifies only with `ring`).
    fn verify(csr: &X509CertificationRequest<'_>) -> bool {
        let info = &csr.certification_request_info;
        let p256_sha256 = default_provider()
            .signature_verification_algorithms
            .all
            .iter()
            .find(|a| {
                a.public_key_alg_id() == alg_id::ECDSA_P256
                    && a.signature_alg_id() == alg_id::ECDSA_SHA256
            })
            .unwrap();
        assert_eq!(
            csr.signature_algorithm.algorithm,
            x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256
        );
        p256_sha256
            .verify_signature(
                &info.subject_pki.subject_public_key.data,
                info.raw,
                &csr.signature_value.data,
            )
            .is_ok()
    }

    #[test]
    fn the_request_has_exactly_the_one_uri_san_and_verifies() {
        let key = EphemeralKey::generate().unwrap();
        let der = key.csr_der(ID).unwrap();
        let (rest, csr) = X509CertificationRequest::from_der(&der).unwrap();
        assert!(rest.is_empty());
        assert_eq!(csr.certification_request_info.subject.iter().count(), 0);
        assert_eq!(
            csr.certification_request_info.subject_pki.raw,
            key.spki_der()
        );
        let extensions: Vec<_> = csr.requested_extensions().unwrap().collect();
        assert_eq!(extensions.len(), 1, "{extensions:?}");
        let ParsedExtension::SubjectAlternativeName(san) = extensions[0] else {
            panic!("{extensions:?}");
        };
        assert_eq!(san.general_names, vec![GeneralName::URI(ID)]);
        assert!(verify(&csr));

        // A flipped bit in the signed part no longer verifies.
        let mut tampered = der.clone();
        let at = tampered.windows(6).position(|w| w == b"spiffe").unwrap();
        tampered[at] ^= 1;
        let (_, tampered) = X509CertificationRequest::from_der(&tampered).unwrap();
        assert!(!verify(&tampered));
    }

    #[test]
    fn ids_that_are_not_ascii_spiffe_uris_are_refused() {
        let key = EphemeralKey::generate().unwrap();
        for bad in ["", "spiffe://", "https://x/y", "spiffe://tëst/x"] {
            assert!(
                matches!(key.csr_der(bad), Err(KeyError::SpiffeId(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn both_sides_of_an_agreement_get_the_same_x_coordinate() {
        use p256::pkcs8::DecodePublicKey;
        let key = EphemeralKey::generate().unwrap();
        let peer = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let ours = key.diffie_hellman(&peer.public_key()).unwrap();
        let public = p256::PublicKey::from_public_key_der(key.spki_der()).unwrap();
        let theirs = p256::ecdh::diffie_hellman(peer.to_nonzero_scalar(), public.as_affine());
        assert_eq!(ours.as_slice(), &theirs.raw_secret_bytes()[..]);
        let other = p256::SecretKey::random(&mut rand::rngs::OsRng);
        assert_ne!(*key.diffie_hellman(&other.public_key()).unwrap(), *ours);
    }

    #[test]
    fn the_pem_is_the_key_and_debug_shows_only_the_public_half() {
        let key = EphemeralKey::generate().unwrap();
        let pem = key.private_key_pem();
        let reparsed = KeyPair::from_pem(pem.expose_secret()).unwrap();
        assert_eq!(reparsed.subject_public_key_info(), key.spki_der());
        assert_ne!(EphemeralKey::generate().unwrap().spki_der(), key.spki_der());
        // PKCS#8 of a P-256 key: the 32-byte private scalar follows `04 20` at offset 34.
        let pkcs8 = key.pair.serialized_der();
        assert_eq!(&pkcs8[34..36], &[0x04, 0x20]);
        let scalar = hex::encode(&pkcs8[36..68]);
        let debug = format!("{key:?}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
        assert!(!debug.contains(&scalar), "{debug}");
        assert!(debug.contains(&hex::encode(key.spki_der())), "{debug}");
    }
}
