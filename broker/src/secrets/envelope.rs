//! A secret version at rest: the value encrypted with AES-256-GCM under its own data key,
//! with the secret's name and version as associated data, so that a ciphertext moved to
//! another row or version does not decrypt. The data key itself is stored only wrapped by
//! the key-encryption key in the HSM (`super::Secrets`).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use hsm_backend::DataKey;
use zeroize::Zeroizing;

use crate::error::{BrokerError, Result};

/// The label that starts the associated data of every version.
const AAD_LABEL: &[u8] = b"keybroker secret at rest v1";

/// The associated data of `name`'s version `version`: the label, the name after its
/// length (2 bytes, big-endian), the version (8 bytes, big-endian).
fn aad(name: &str, version: u32) -> Result<Vec<u8>> {
    let len = u16::try_from(name.len())
        .map_err(|_| BrokerError::InvalidArgument("name: too long".into()))?;
    Ok([
        AAD_LABEL,
        &len.to_be_bytes(),
        name.as_bytes(),
        &u64::from(version).to_be_bytes(),
    ]
    .concat())
}

fn key(data_key: &DataKey) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, data_key.expose())
        .map(LessSafeKey::new)
        .map_err(|_| BrokerError::Internal("AES-256-GCM key".into()))
}

/// `value` encrypted under `data_key` for `name`'s version `version`: (nonce, ciphertext
/// with its tag).
///
/// # Errors
/// [`BrokerError::InvalidArgument`] for a name over 65,535 bytes.
pub fn seal(
    data_key: &DataKey,
    name: &str,
    version: u32,
    value: &[u8],
) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce)
        .map_err(|_| BrokerError::Internal("no random nonce".into()))?;
    let mut sealed = value.to_vec();
    key(data_key)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(name, version)?),
            &mut sealed,
        )
        .map_err(|_| BrokerError::Internal("AES-256-GCM seal".into()))?;
    Ok((nonce.to_vec(), sealed))
}

/// The value [`seal`] encrypted.
///
/// # Errors
/// [`BrokerError::IntegrityFailure`] when the nonce, ciphertext, name or version is not
/// the one it was sealed with, or the data key is another.
pub fn open(
    data_key: &DataKey,
    name: &str,
    version: u32,
    nonce: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let altered = || {
        BrokerError::IntegrityFailure(format!(
            "secret {name:?} version {version} is altered at rest"
        ))
    };
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| altered())?;
    let mut buffer = Zeroizing::new(ciphertext.to_vec());
    let plaintext_len = key(data_key)?
        .open_in_place(nonce, Aad::from(aad(name, version)?), &mut buffer)
        .map_err(|_| altered())?
        .len();
    buffer.truncate(plaintext_len);
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use secrecy::SecretBox;

    use super::*;

    fn data_key(byte: u8) -> DataKey {
        DataKey::new(SecretBox::new(Box::new([byte; 32])))
    }

    #[test]
    fn a_version_opens_only_as_itself_under_its_own_data_key() {
        let (nonce, sealed) = seal(&data_key(1), "db", 2, b"hunter2").unwrap();
        assert_eq!(sealed.len(), 7 + 16);
        let opened = open(&data_key(1), "db", 2, &nonce, &sealed).unwrap();
        assert_eq!(opened.as_slice(), b"hunter2");
        for (key, name, version) in [(2, "db", 2), (1, "dc", 2), (1, "db", 3)] {
            let err = open(&data_key(key), name, version, &nonce, &sealed).unwrap_err();
            assert!(matches!(err, BrokerError::IntegrityFailure(_)), "{err:?}");
        }
        let mut tampered = sealed.clone();
        tampered[0] ^= 1;
        assert!(open(&data_key(1), "db", 2, &nonce, &tampered).is_err());
        assert!(open(&data_key(1), "db", 2, &nonce[..11], &sealed).is_err());
        // Every seal has its own nonce.
        let (again, _) = seal(&data_key(1), "db", 2, b"hunter2").unwrap();
        assert_ne!(again, nonce);
    }
}
