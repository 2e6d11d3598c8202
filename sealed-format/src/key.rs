//! The data key: 32 random bytes, one per envelope, wiped when dropped.

use std::fmt;

use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox};

use crate::error::FormatError;

/// An AES-256-GCM data key. Not `Clone`: sealing consumes it, so one key seals one
/// envelope. Its `Debug` never shows the bytes, and they are wiped on drop.
pub struct DataKey(SecretBox<[u8; 32]>);

impl DataKey {
    /// Its length in bytes.
    pub const LEN: usize = 32;

    /// A fresh random key.
    ///
    /// # Errors
    /// [`FormatError::Crypto`] if the system has no randomness to give.
    pub fn generate() -> Result<Self, FormatError> {
        let mut key = SecretBox::<[u8; 32]>::default();
        aws_lc_rs::rand::fill(key.expose_secret_mut())
            .map_err(|_| FormatError::Crypto("no random bytes for the data key"))?;
        Ok(Self(key))
    }

    /// A key from its bytes (an unwrapped or unsealed blob); the caller wipes `bytes`.
    ///
    /// # Errors
    /// [`FormatError::DataKeyLength`] unless `bytes` is 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, FormatError> {
        if bytes.len() != Self::LEN {
            return Err(FormatError::DataKeyLength(bytes.len()));
        }
        let mut key = SecretBox::<[u8; 32]>::default();
        key.expose_secret_mut().copy_from_slice(bytes);
        Ok(Self(key))
    }
}

impl ExposeSecret<[u8; 32]> for DataKey {
    fn expose_secret(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}
