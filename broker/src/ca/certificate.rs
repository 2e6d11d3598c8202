//! Certificates signed by a CA key that never leaves the HSM: the CA's own certificate
//! (self-signed in development) and short-lived workload certificates issued from a CSR.
//!
//! rcgen builds and encodes every certificate; the one thing it cannot do, signing, is
//! [`HsmSigner`]: the to-be-signed bytes are hashed here and the digest is signed in the
//! token (ECDSA P-256, DER). The CSR's own signature is checked by rcgen (x509-parser)
//! before anything is built: that signature is the requester's proof that it holds the
//! key it asks a certificate for.

use std::time::{Duration, SystemTime};

use hsm_backend::{Digest, HashAlgorithm, HsmBackend, KeyId, SignatureAlgorithm};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    PublicKeyData, SanType, SigningKey,
};
use rustls_pki_types::CertificateSigningRequestDer;
use spki::der::Decode as _;

use crate::identity::SpiffeId;

/// Longest a workload certificate may live (its TTL is set by policy, in minutes).
pub const MAX_WORKLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Largest CSR accepted, DER bytes.
pub const MAX_CSR_LEN: usize = 8 * 1024;
/// How far back a certificate's `notBefore` is set, for clocks slightly behind.
const BACKDATE: Duration = Duration::from_secs(60);

/// Why a certificate was not made.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The CSR is malformed, its signature does not verify, or it asks for something the
    /// caller may not have: the message says which.
    #[error("{0}")]
    BadRequest(String),
    /// The HSM or the encoding failed.
    #[error("certificate signing failed: {0}")]
    Signing(String),
}

/// A CA key in an HSM token, as rcgen's signer. Blocking: each signature is an HSM call.
#[derive(Debug)]
pub struct HsmSigner<'a> {
    hsm: &'a HsmBackend,
    id: KeyId,
    /// The uncompressed EC point (rcgen's "public key in DER format" for ECDSA).
    point: Vec<u8>,
}

impl<'a> HsmSigner<'a> {
    /// The EC P-256 key `id` in `hsm`.
    ///
    /// # Errors
    /// The key is unknown, or its public key is not a P-256 point.
    pub fn new(hsm: &'a HsmBackend, id: KeyId) -> Result<HsmSigner<'a>, CaError> {
        let spki = hsm
            .public_key(&id)
            .map_err(|e| CaError::Signing(format!("the CA key's public key: {e}")))?;
        let info = spki::SubjectPublicKeyInfoRef::from_der(spki.as_der())
            .map_err(|e| CaError::Signing(format!("the CA key's public key: {e}")))?;
        let point = info.subject_public_key.raw_bytes().to_vec();
        if point.len() != 65 || point.first() != Some(&0x04) {
            return Err(CaError::Signing("the CA key is not an EC P-256 key".into()));
        }
        Ok(HsmSigner { hsm, id, point })
    }

    /// The key `id` in `hsm`, whose uncompressed P-256 point ([`HsmSigner::point`]) is
    /// already known: no HSM call until it signs.
    pub fn with_point(hsm: &'a HsmBackend, id: KeyId, point: Vec<u8>) -> HsmSigner<'a> {
        HsmSigner { hsm, id, point }
    }

    /// The key's uncompressed EC point.
    pub fn point(&self) -> &[u8] {
        &self.point
    }
}

impl PublicKeyData for HsmSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

impl SigningKey for HsmSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let digest = Digest::of(HashAlgorithm::Sha256, msg);
        self.hsm
            .sign(&self.id, SignatureAlgorithm::EcdsaP256Sha256, &digest)
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// The distinguished name and validity of a CA certificate.
#[derive(Debug, Clone)]
pub struct CaProfile {
    /// Its common name (`Keybroker development CA`).
    pub common_name: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

fn ca_params(profile: &CaProfile) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, profile.common_name.as_str());
    params.distinguished_name = name;
    params.not_before = profile.not_before.into();
    params.not_after = profile.not_after.into();
    // Issues end-entity certificates only.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// A self-signed CA certificate for `signer`'s key (development mode), DER.
///
/// # Errors
/// The HSM refuses to sign.
pub fn self_signed(signer: &HsmSigner<'_>, profile: &CaProfile) -> Result<Vec<u8>, CaError> {
    let certificate = ca_params(profile)
        .self_signed(signer)
        .map_err(|e| CaError::Signing(e.to_string()))?;
    Ok(certificate.der().to_vec())
}

/// What a workload certificate says besides its key.
#[derive(Debug, Clone)]
pub struct WorkloadProfile<'a> {
    /// The only name it carries, as its URI SAN: the caller's own SPIFFE ID.
    pub spiffe_id: &'a SpiffeId,
    /// How long it lives from `now`, at most [`MAX_WORKLOAD_TTL`].
    pub ttl: Duration,
    pub now: SystemTime,
    /// The attestation-claims extension (docs/identity.md): its OID, and the SHA-256 of
    /// the claims the caller's attestation token carries. `None`: issued without
    /// attestation, so no such extension.
    pub claims: Option<ClaimsExtension<'a>>,
}

/// The extension that records which attestation a certificate was issued on.
#[derive(Debug, Clone, Copy)]
pub struct ClaimsExtension<'a> {
    /// Its OID's arcs (`ca.claims_extension_oid`).
    pub oid: &'a [u64],
    /// SHA-256 of the token's `attestation` claims, as JSON.
    pub claims_sha256: [u8; 32],
}

/// A certification request whose signature verified with its own key: the requester
/// holds that key. It asks for no name but the caller's.
#[derive(Debug)]
pub struct VerifiedCsr {
    csr: CertificateSigningRequestParams,
    spki_der: Vec<u8>,
}

impl VerifiedCsr {
    /// Parses `csr_der` and checks its signature with the key it carries: the proof of
    /// possession. Any subject alternative name but `spiffe_id` is refused.
    ///
    /// # Errors
    /// [`CaError::BadRequest`]: too large, malformed, not signed by its key, or asking for
    /// another name.
    pub fn parse(csr_der: &[u8], spiffe_id: &SpiffeId) -> Result<VerifiedCsr, CaError> {
        let bad = |why: String| CaError::BadRequest(why);
        if csr_der.is_empty() || csr_der.len() > MAX_CSR_LEN {
            return Err(bad(format!("csr: 1 to {MAX_CSR_LEN} bytes of DER")));
        }
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| bad(format!("csr: {e}")))?;
        let wanted = spiffe_id.as_str();
        for name in &csr.params.subject_alt_names {
            let same = matches!(name, SanType::URI(uri) if uri.as_str() == wanted);
            if !same {
                return Err(bad(format!(
                    "csr: asks for the name {name:?}; a certificate names only the caller, \
                     {wanted}"
                )));
            }
        }
        let spki_der = csr.public_key.subject_public_key_info();
        Ok(VerifiedCsr { csr, spki_der })
    }

    /// The requester's public key, SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }
}

/// Issues a certificate for the key of a verified CSR. The certificate is for mutual TLS:
/// digital signature, client and server authentication, not a CA; its only name is
/// `profile.spiffe_id`. `ca_certificate` is the CA's certificate, DER, whose key `signer`
/// is.
///
/// # Errors
/// [`CaError::BadRequest`]: a TTL of zero or above [`MAX_WORKLOAD_TTL`]. [`CaError::Signing`]:
/// the HSM refused.
pub fn issue(
    signer: &HsmSigner<'_>,
    ca_certificate: &[u8],
    csr: &VerifiedCsr,
    profile: &WorkloadProfile<'_>,
) -> Result<Vec<u8>, CaError> {
    let bad = |why: String| CaError::BadRequest(why);
    if profile.ttl.is_zero() || profile.ttl > MAX_WORKLOAD_TTL {
        return Err(bad(format!("ttl: 1 s to {} s", MAX_WORKLOAD_TTL.as_secs())));
    }
    let wanted = profile.spiffe_id.as_str();
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, wanted);
    params.distinguished_name = subject;
    params.subject_alt_names = vec![SanType::URI(
        wanted
            .try_into()
            .map_err(|_| bad(format!("{wanted}: not an IA5 string")))?,
    )];
    params.not_before = profile
        .now
        .checked_sub(BACKDATE)
        .unwrap_or(profile.now)
        .into();
    params.not_after = profile
        .now
        .checked_add(profile.ttl)
        .ok_or_else(|| bad("ttl: too far in the future".into()))?
        .into();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    if let Some(claims) = &profile.claims {
        // An OCTET STRING holding the digest, encoded by the `der` crate.
        let content = der::asn1::OctetString::new(claims.claims_sha256.as_slice())
            .and_then(|octets| der::Encode::to_der(&octets))
            .map_err(|e| CaError::Signing(format!("the claims extension: {e}")))?;
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                claims.oid, content,
            ));
    }
    let issuer = Issuer::from_ca_cert_der(&ca_certificate.into(), signer)
        .map_err(|e| CaError::Signing(format!("the CA certificate: {e}")))?;
    let certificate = params
        .signed_by(&csr.csr.public_key, &issuer)
        .map_err(|e| CaError::Signing(e.to_string()))?;
    Ok(certificate.der().to_vec())
}
