//! Releasing a key to a workload: the key leaves the token wrapped to the workload's P-256
//! public key, and its plaintext is never in this process.
//!
//! Only a [`KeyClass::Releasable`] key can be released: an AES-256 key generated in the
//! token sensitive, extractable and `CKA_WRAP_WITH_TRUSTED`. The token wraps such a key only
//! under a `CKA_TRUSTED` key, and only the security officer can make one, so a release goes
//! through the token's one trusted key, the release transport key (`transport.rs`, made by
//! [`crate::provision::create_release_transport_key`]). In one session, as session objects:
//!
//! 1. the releasable key K is wrapped under the transport key T;
//! 2. a fresh P-256 key pair is generated, and ECDH (`CKM_ECDH1_DERIVE`, `CKD_NULL`) with
//!    the workload's public point derives an AES-256 key-encryption key;
//! 3. K is unwrapped from step 1 under T into K', sensitive, extractable and not
//!    `CKA_WRAP_WITH_TRUSTED`, with no usage;
//! 4. K' is wrapped under the derived key (`CKM_AES_KEY_WRAP_PAD`, RFC 5649).
//!
//! Every session object (the key pair, the derived key, K') is destroyed when the release
//! ends, on every path; a crash leaves none, as session objects die with their session.
//! A standard key is refused before anything is wrapped, and the token refuses it too
//! (`CKR_KEY_UNEXTRACTABLE`).

mod transport;

pub use transport::{TRANSPORT_KEY_ID, TRANSPORT_KEY_LABEL};
pub(crate) use transport::{read_and_check as check_transport_key, template as transport_template};

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::backend::HsmBackend;
use crate::error::{HsmError, Op, Result};
use crate::key::{EcCurve, KeyClass, KeyId, KeySpec};
use crate::pool::{PooledSession, already_checked};
use crate::public_key::{curve_params, sec1_point};
use crate::quirks::Quirks;
use crate::wrap::destroy_quietly;

/// Length of a workload's public key and of the broker's ephemeral public key: an
/// uncompressed SEC1 P-256 point, `04 ‖ X ‖ Y`.
pub const RELEASE_POINT_LEN: usize = 65;

/// How the workload computes the AES-256 key that unwraps [`ReleasedKey::wrapped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReleaseKdf {
    /// ECDH on P-256 with PKCS#11's `CKD_NULL`: the key-encryption key is the X coordinate
    /// of the shared point, 32 bytes big-endian, unhashed (the only KDF SoftHSM2 2.6 offers
    /// for `CKM_ECDH1_DERIVE`; the others get `CKR_MECHANISM_PARAM_INVALID`).
    EcdhP256X,
}

impl ReleaseKdf {
    /// A stable name for the wire (`"ecdh-p256-x"`).
    pub fn name(self) -> &'static str {
        match self {
            ReleaseKdf::EcdhP256X => "ecdh-p256-x",
        }
    }
}

/// A key released to one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasedKey {
    /// The broker's ephemeral public key for this release, SEC1 uncompressed (65 bytes).
    pub ephemeral_public: Vec<u8>,
    /// The key, wrapped with AES key wrap with padding (RFC 5649) under the key that
    /// [`ReleasedKey::kdf`] derives: 40 bytes for an AES-256 key.
    pub wrapped: Vec<u8>,
    /// How the workload derives the unwrapping key.
    pub kdf: ReleaseKdf,
}

/// Checks that a workload's public key is an uncompressed P-256 point on the curve (the
/// token answers an off-curve point with `CKR_GENERAL_ERROR`, so it is refused here).
fn check_workload_point(peer: &[u8]) -> Result<()> {
    if peer.len() != RELEASE_POINT_LEN || peer.first() != Some(&0x04) {
        return Err(HsmError::InvalidInput(format!(
            "a workload public key is an uncompressed P-256 point (04 ‖ X ‖ Y, \
             {RELEASE_POINT_LEN} bytes), not {} bytes starting {:02x?}",
            peer.len(),
            peer.first()
        )));
    }
    p256::PublicKey::from_sec1_bytes(peer).map_err(|_| {
        HsmError::InvalidInput("the workload public key is not a point on P-256".into())
    })?;
    Ok(())
}

fn releasable(spec: KeySpec) -> std::result::Result<(), String> {
    match spec.class() {
        KeyClass::Releasable => Ok(()),
        KeyClass::Standard => Err(format!(
            "it is not a releasable key: the {} key was generated non-extractable and can \
             never leave the token",
            spec.algorithm()
        )),
    }
}

/// Session objects made for one release, destroyed when it ends, on every path.
struct Transient<'s> {
    session: &'s Session,
    objects: Vec<ObjectHandle>,
}

impl<'s> Transient<'s> {
    fn new(session: &'s Session) -> Self {
        Transient {
            session,
            objects: Vec::with_capacity(4),
        }
    }

    fn keep(&mut self, handle: ObjectHandle) -> ObjectHandle {
        self.objects.push(handle);
        handle
    }
}

impl Drop for Transient<'_> {
    fn drop(&mut self) {
        for handle in self.objects.drain(..).rev() {
            destroy_quietly(self.session, handle);
        }
    }
}

/// The ephemeral key pair's templates: a session-only P-256 pair whose private half can
/// only derive.
fn ephemeral_templates() -> (Vec<Attribute>, Vec<Attribute>) {
    let public = vec![
        Attribute::Token(false),
        Attribute::EcParams(curve_params(EcCurve::P256)),
    ];
    let private = vec![
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Derive(true),
        Attribute::Sign(false),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Modifiable(false),
    ];
    (public, private)
}

/// A session-only AES key that can do nothing but wrap, if `wrap`: the derived
/// key-encryption key (32 bytes, wrap only) or K' (extractable, no usage).
fn session_aes_key(extractable: bool, wrap: bool) -> Vec<Attribute> {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(extractable),
        Attribute::Wrap(wrap),
        Attribute::Unwrap(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ];
    if extractable {
        // K' leaves under the derived key, which cannot be trusted.
        template.push(Attribute::WrapWithTrusted(false));
    } else {
        template.push(Attribute::ValueLen(32.into()));
    }
    // Last: SoftHSM2 applies a derive template in order, and refuses any attribute after
    // `CKA_MODIFIABLE` false with CKR_ATTRIBUTE_READ_ONLY.
    template.push(Attribute::Modifiable(false));
    template
}

/// The transport key's handle, once its attributes are checked.
fn transport_key(s: &mut PooledSession) -> Result<ObjectHandle> {
    let id = KeyId::new(TRANSPORT_KEY_ID)?;
    let read = s.with_key(
        &id,
        ObjectClass::SECRET_KEY,
        Op::General,
        &already_checked,
        |session, key| {
            session
                .get_attributes(key.handle, &transport::checked_attributes())
                .map(|attrs| (key.handle, attrs))
        },
    );
    let (handle, attrs) = match read {
        Err(HsmError::KeyNotFound(_) | HsmError::KeyUsageNotPermitted { .. }) => {
            return Err(HsmError::ReleaseNotProvisioned(format!(
                "the token has no release transport key {TRANSPORT_KEY_LABEL:?}; the \
                 security officer makes it once with provision::create_release_transport_key"
            )));
        }
        other => other?,
    };
    transport::check(&attrs)?;
    Ok(handle)
}

/// Steps 2 to 4 of the module doc, given K wrapped under T.
fn wrap_to_workload(
    session: &Session,
    quirks: &Quirks,
    transport: ObjectHandle,
    under_transport: &[u8],
    peer: &[u8],
) -> Result<ReleasedKey> {
    let map = |e| HsmError::from_pkcs11(e, Op::General, quirks);
    let mut transient = Transient::new(session);
    let (public, private) = ephemeral_templates();
    let (eph_public, eph_private) = session
        .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
        .map_err(map)?;
    transient.keep(eph_public);
    transient.keep(eph_private);
    let point = session
        .get_attributes(eph_public, &[AttributeType::EcPoint])
        .map_err(map)?;
    let ephemeral_public = match point.as_slice() {
        [Attribute::EcPoint(p)] => sec1_point(p, EcCurve::P256),
        _ => None,
    }
    .ok_or_else(|| HsmError::Pkcs11 {
        function: "C_GetAttributeValue".into(),
        rv: "the token returned an ephemeral public key that is not a P-256 point".into(),
    })?;
    let ecdh = Ecdh1DeriveParams::new(EcKdf::null(), peer);
    let kek = session
        .derive_key(
            &Mechanism::Ecdh1Derive(ecdh),
            eph_private,
            &session_aes_key(false, true),
        )
        .map_err(map)?;
    transient.keep(kek);
    let copy = session
        .unwrap_key(
            &Mechanism::AesKeyWrapPad,
            transport,
            under_transport,
            &session_aes_key(true, false),
        )
        .map_err(map)?;
    transient.keep(copy);
    let wrapped = session
        .wrap_key(&Mechanism::AesKeyWrapPad, kek, copy)
        .map_err(map)?;
    Ok(ReleasedKey {
        ephemeral_public,
        wrapped,
        kdf: ReleaseKdf::EcdhP256X,
    })
}

/// The first 8 bytes of SHA-256 of the workload's point, in hex: names it in the log.
fn fingerprint(peer: &[u8]) -> String {
    Sha256::digest(peer)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl HsmBackend {
    /// Releases a [`KeyClass::Releasable`] key to a workload, wrapped to its P-256 public
    /// key (`peer`: uncompressed SEC1, 65 bytes) inside the token; see the module doc
    /// for the steps, and [`ReleasedKey`] for what the workload gets.
    ///
    /// # Errors
    /// [`HsmError::InvalidInput`] if `peer` is not an uncompressed P-256 point on the curve;
    /// [`HsmError::KeyNotFound`]; [`HsmError::KeyUsageNotPermitted`] for a key that is not
    /// releasable (checked before anything is wrapped); [`HsmError::ReleaseNotProvisioned`]
    /// if the token's transport key is missing or not as made;
    /// [`HsmError::MechanismNotSupported`] if the token lacks ECDH or AES key wrap.
    pub fn release_key(&self, id: &KeyId, peer: &[u8]) -> Result<ReleasedKey> {
        check_workload_point(peer)?;
        self.capabilities().check_release()?;
        let released = self.serialize_keygen(|| {
            self.pool.run(|s| {
                s.key_for(id, ObjectClass::SECRET_KEY, &releasable)?;
                let transport = transport_key(s)?;
                let under_transport = Zeroizing::new(s.with_key(
                    id,
                    ObjectClass::SECRET_KEY,
                    Op::General,
                    &releasable,
                    |session, key| {
                        session.wrap_key(&Mechanism::AesKeyWrapPad, transport, key.handle)
                    },
                )?);
                wrap_to_workload(&s.session, &s.quirks, transport, &under_transport, peer)
            })
        })?;
        tracing::info!(key = %id, workload = %fingerprint(peer), "key released to a workload");
        Ok(released)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::sec1::ToEncodedPoint;

    #[test]
    fn only_uncompressed_points_on_the_curve_are_accepted() {
        let point = p256::AffinePoint::GENERATOR.to_encoded_point(false);
        check_workload_point(point.as_bytes()).unwrap();
        let compressed = p256::AffinePoint::GENERATOR.to_encoded_point(true);
        assert!(check_workload_point(compressed.as_bytes()).is_err());
        let mut off_curve = point.as_bytes().to_vec();
        off_curve[64] ^= 1;
        assert!(matches!(
            check_workload_point(&off_curve),
            Err(HsmError::InvalidInput(m)) if m.contains("not a point")
        ));
        assert!(check_workload_point(&[]).is_err());
        assert!(check_workload_point(&[0u8; RELEASE_POINT_LEN]).is_err());
    }
}
