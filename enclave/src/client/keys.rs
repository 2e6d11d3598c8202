//! Keys released to this workload (docs/releasable-keys.md): `KeyService.ReleaseKey` on a
//! connection with the issued certificate, presenting the attestation token. The broker's
//! HSM wraps the AES-256 key to this workload's ephemeral P-256 key: ECDH with a one-time
//! HSM key, the X coordinate of the shared point as the AES-256 key-encryption key, and
//! AES key wrap with padding (RFC 5649). The answer is checked before it is opened: it must
//! name the key asked for and use the one derivation this client knows.

use aes_kw::{KeyInit, KwpAes256};
use keybroker_api::v1 as pb;
use keybroker_api::v1::key_service_client::KeyServiceClient;
use zeroize::Zeroizing;

use super::agent::with_attestation;
use super::{Agent, ClientError, Credentials, Step};
use crate::key::EphemeralKey;

/// `ReleasedKey.kdf`: ECDH on P-256, the X coordinate as is.
pub const RELEASE_KDF: &str = "ecdh-p256-x";
/// A SEC1 uncompressed P-256 point: 0x04, X, Y.
const POINT_LEN: usize = 65;
/// RFC 5649 output for a 32-byte key: one 8-byte integrity block more.
const WRAPPED_LEN: usize = 40;

/// An AES-256 key the broker released to this workload, unwrapped. `Debug` never shows
/// the key.
pub struct ReleasedKey {
    /// The key's name.
    pub name: String,
    /// The version released (never 0: asking for 0 gets the primary version).
    pub version: u32,
    /// The AES-256 key, wiped on drop.
    pub key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ReleasedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleasedKey")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Version `version` of the releasable key `name` (0: the primary version), asked for
    /// on a connection with the issued certificate, presenting the attestation token, and
    /// unwrapped with the ephemeral key that certificate and token are bound to
    /// ([`open_released_key`]).
    ///
    /// # Errors
    /// [`ClientError`] naming [`Step::Connect`] or [`Step::Key`]: the broker refused, or its
    /// answer is not for this key or does not unwrap with this workload's key.
    pub async fn release_key(
        &self,
        creds: &Credentials,
        name: &str,
        version: u32,
    ) -> Result<ReleasedKey, ClientError> {
        let channel = self.issued_channel(creds).await?;
        let request = pb::ReleaseKeyRequest {
            name: name.to_string(),
            version,
        };
        let answer = KeyServiceClient::new(channel)
            .release_key(with_attestation(request, &creds.token, Step::Key)?)
            .await
            .map_err(ClientError::refused(Step::Key))?
            .into_inner();
        open_released_key(&creds.key, name, version, answer)
    }
}

/// Checks `answer` to a `ReleaseKey` for `asked_name` and `asked_version` (0: any), then
/// unwraps it with `key`. The answer must use [`RELEASE_KDF`], name the key asked for and a
/// version (the one asked for, if any), carry a valid uncompressed P-256 point, and its
/// wrapped key must pass the RFC 5649 integrity check and hold exactly 32 bytes.
///
/// # Errors
/// [`ClientError::Answer`] at [`Step::Key`] for an answer that fails a check or does not
/// unwrap with `key`. The message never contains key material.
pub fn open_released_key(
    key: &EphemeralKey,
    asked_name: &str,
    asked_version: u32,
    answer: pb::ReleasedKey,
) -> Result<ReleasedKey, ClientError> {
    check_names(&answer, asked_name, asked_version)?;
    let peer = hsm_public_key(&answer.ephemeral_public_key)?;
    if answer.wrapped_key.len() != WRAPPED_LEN {
        return Err(ClientError::answer(
            Step::Key,
            format!(
                "the wrapped key is {} bytes, expected {WRAPPED_LEN}",
                answer.wrapped_key.len()
            ),
        ));
    }
    let kek = key
        .diffie_hellman(&peer)
        .map_err(|source| ClientError::Key {
            step: Step::Key,
            source,
        })?;
    let unwrapped = unwrap(&kek, &answer.wrapped_key)?;
    Ok(ReleasedKey {
        name: answer.name,
        version: answer.version,
        key: unwrapped,
    })
}

/// The derivation, the name and the version of `answer`, against what was asked.
fn check_names(
    answer: &pb::ReleasedKey,
    asked_name: &str,
    asked_version: u32,
) -> Result<(), ClientError> {
    if answer.kdf != RELEASE_KDF {
        return Err(ClientError::answer(
            Step::Key,
            format!(
                "unknown key derivation {:?}, expected {RELEASE_KDF:?}",
                answer.kdf
            ),
        ));
    }
    if answer.name != asked_name {
        return Err(ClientError::answer(
            Step::Key,
            format!(
                "asked for key {asked_name:?}, the broker answered with {:?}",
                answer.name
            ),
        ));
    }
    if answer.version == 0 || (asked_version != 0 && answer.version != asked_version) {
        return Err(ClientError::answer(
            Step::Key,
            format!(
                "asked for version {asked_version} of key {asked_name:?}, the broker \
                 answered with version {}",
                answer.version
            ),
        ));
    }
    Ok(())
}

/// The HSM's one-time public key: exactly a SEC1 uncompressed point on P-256.
fn hsm_public_key(sec1: &[u8]) -> Result<p256::PublicKey, ClientError> {
    let refuse = || {
        ClientError::answer(
            Step::Key,
            "the ephemeral public key is not an uncompressed P-256 point",
        )
    };
    if sec1.len() != POINT_LEN || sec1.first() != Some(&0x04) {
        return Err(refuse());
    }
    p256::PublicKey::from_sec1_bytes(sec1).map_err(|_| refuse())
}

/// RFC 5649 unwrap of `wrapped` under `kek`; the result must be an AES-256 key.
fn unwrap(kek: &[u8; 32], wrapped: &[u8]) -> Result<Zeroizing<[u8; 32]>, ClientError> {
    let cipher = KwpAes256::new_from_slice(kek)
        .map_err(|_| ClientError::answer(Step::Key, "the agreed key is not 32 bytes"))?;
    let mut key = Zeroizing::new([0u8; 32]);
    let len = cipher
        .unwrap_key(wrapped, key.as_mut_slice())
        .map_err(|_| {
            ClientError::answer(
                Step::Key,
                "the key does not unwrap with this workload's key (integrity check failed)",
            )
        })?
        .len();
    if len != key.len() {
        return Err(ClientError::answer(
            Step::Key,
            format!("the unwrapped key is {len} bytes, expected 32"),
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::DecodePublicKey;
    use rand::RngCore;
    use rand::rngs::OsRng;

    const KEY: [u8; 32] = [0x5a; 32];

    /// What the broker's HSM does: a one-time key pair, ECDH with `workload`'s public key
    /// (from its SPKI), the X coordinate as the key-encryption key, RFC 5649 wrap of `key`.
    fn answer_with(
        workload: &EphemeralKey,
        name: &str,
        version: u32,
        key: &[u8],
    ) -> pb::ReleasedKey {
        let hsm = p256::SecretKey::random(&mut OsRng);
        let public = p256::PublicKey::from_public_key_der(workload.spki_der()).unwrap();
        let shared = p256::ecdh::diffie_hellman(hsm.to_nonzero_scalar(), public.as_affine());
        let kek = KwpAes256::new_from_slice(shared.raw_secret_bytes()).unwrap();
        let mut wrapped = vec![0u8; key.len().div_ceil(8) * 8 + 8];
        kek.wrap_key(key, &mut wrapped).unwrap();
        pb::ReleasedKey {
            name: name.to_string(),
            version,
            ephemeral_public_key: hsm.public_key().to_sec1_bytes().to_vec(),
            wrapped_key: wrapped,
            kdf: RELEASE_KDF.to_string(),
        }
    }

    fn answer(workload: &EphemeralKey, name: &str, version: u32) -> pb::ReleasedKey {
        answer_with(workload, name, version, &KEY)
    }

    /// The reason of a refusal at [`Step::Key`].
    fn refusal(result: Result<ReleasedKey, ClientError>) -> String {
        match result {
            Err(ClientError::Answer {
                step: Step::Key,
                reason,
            }) => reason,
            other => panic!("expected a refused answer, got {other:?}"),
        }
    }

    #[test]
    fn an_answer_for_what_was_asked_opens_to_the_key() {
        let workload = EphemeralKey::generate().unwrap();
        for asked in [0, 4] {
            let answer = answer(&workload, "disk/root", 4);
            assert_eq!(answer.ephemeral_public_key.len(), POINT_LEN);
            assert_eq!(answer.wrapped_key.len(), WRAPPED_LEN);
            let released = open_released_key(&workload, "disk/root", asked, answer).unwrap();
            assert_eq!(released.name, "disk/root");
            assert_eq!(released.version, 4);
            assert_eq!(*released.key, KEY);
        }
        // A random key too, not only a constant.
        let mut random = [0u8; 32];
        OsRng.fill_bytes(&mut random);
        let answer = answer_with(&workload, "disk/root", 1, &random);
        let released = open_released_key(&workload, "disk/root", 1, answer).unwrap();
        assert_eq!(*released.key, random);
    }

    #[test]
    fn another_derivation_is_refused() {
        let workload = EphemeralKey::generate().unwrap();
        for kdf in ["", "ecdh-p256-sha256", "ECDH-P256-X", "ecdh-p256-x "] {
            let mut answer = answer(&workload, "disk/root", 1);
            answer.kdf = kdf.to_string();
            let reason = refusal(open_released_key(&workload, "disk/root", 1, answer));
            assert!(reason.contains("unknown key derivation"), "{reason}");
        }
    }

    #[test]
    fn an_answer_for_another_key_or_version_is_refused() {
        let workload = EphemeralKey::generate().unwrap();
        let other = answer(&workload, "disk/other", 1);
        let reason = refusal(open_released_key(&workload, "disk/root", 0, other));
        assert!(reason.contains("disk/other"), "{reason}");

        let other = answer(&workload, "disk/root", 3);
        let reason = refusal(open_released_key(&workload, "disk/root", 2, other));
        assert!(reason.contains("version 3"), "{reason}");
        // A released version is never 0, whatever was asked.
        for asked in [0, 1] {
            let zero = answer(&workload, "disk/root", 0);
            refusal(open_released_key(&workload, "disk/root", asked, zero));
        }
    }

    #[test]
    fn a_public_key_that_is_not_an_uncompressed_point_is_refused() {
        let workload = EphemeralKey::generate().unwrap();
        let good = answer(&workload, "disk/root", 1).ephemeral_public_key;
        let compressed = p256::PublicKey::from_sec1_bytes(&good)
            .unwrap()
            .to_encoded_point(true)
            .as_bytes()
            .to_vec();
        let mut off_curve = good.clone();
        off_curve[64] ^= 1;
        let mut bad_tag = good.clone();
        bad_tag[0] = 0x06;
        let mut identity = vec![0u8; POINT_LEN];
        identity[0] = 0x04;
        let cases = [
            Vec::new(),
            vec![0x00],
            good[..64].to_vec(),
            [good.as_slice(), &[0]].concat(),
            compressed,
            off_curve,
            bad_tag,
            identity,
        ];
        for point in cases {
            let mut answer = answer(&workload, "disk/root", 1);
            answer.ephemeral_public_key = point.clone();
            let reason = refusal(open_released_key(&workload, "disk/root", 1, answer));
            assert!(
                reason.contains("not an uncompressed P-256 point"),
                "{point:?}: {reason}"
            );
        }
    }

    #[test]
    fn a_tampered_or_misshapen_wrapped_key_is_refused() {
        let workload = EphemeralKey::generate().unwrap();
        for at in 0..WRAPPED_LEN {
            let mut answer = answer(&workload, "disk/root", 1);
            answer.wrapped_key[at] ^= 0x01;
            let reason = refusal(open_released_key(&workload, "disk/root", 1, answer));
            assert!(
                reason.contains("integrity check failed"),
                "byte {at}: {reason}"
            );
        }
        for len in [0, 32, 39, 41, 48] {
            let mut answer = answer(&workload, "disk/root", 1);
            answer.wrapped_key.resize(len, 0);
            let reason = refusal(open_released_key(&workload, "disk/root", 1, answer));
            assert!(reason.contains("expected 40"), "{len}: {reason}");
        }
        // A well-wrapped key of another length is not an AES-256 key.
        let short = answer_with(&workload, "disk/root", 1, &[7u8; 25]);
        assert_eq!(short.wrapped_key.len(), WRAPPED_LEN);
        let reason = refusal(open_released_key(&workload, "disk/root", 1, short));
        assert_eq!(reason, "the unwrapped key is 25 bytes, expected 32");
    }

    #[test]
    fn an_answer_for_another_workload_key_does_not_open() {
        let (workload, other) = (
            EphemeralKey::generate().unwrap(),
            EphemeralKey::generate().unwrap(),
        );
        let answer = answer(&other, "disk/root", 1);
        let reason = refusal(open_released_key(&workload, "disk/root", 1, answer));
        assert!(reason.contains("does not unwrap"), "{reason}");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let released = ReleasedKey {
            name: "disk/root".to_string(),
            version: 2,
            key: Zeroizing::new(KEY),
        };
        let text = format!("{released:?} {released:#?}");
        assert!(text.contains("disk/root"), "{text}");
        assert!(!text.contains("90"), "{text}");
        assert!(!text.contains(&hex::encode(KEY)), "{text}");
    }
}
