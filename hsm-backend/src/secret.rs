//! Secret byte buffers handed to callers: zeroed on drop, redacted in `Debug`.

use secrecy::SecretSlice;
use zeroize::Zeroize;

/// Plaintext or key bytes returned by the backend.
pub type SecretBytes = SecretSlice<u8>;

/// Moves a buffer into a [`SecretBytes`] and zeroes the original allocation, which a
/// plain `into_boxed_slice` could free unzeroed when it shrinks.
pub(crate) fn into_secret(mut bytes: Vec<u8>) -> SecretBytes {
    let secret = SecretSlice::from(bytes.as_slice().to_vec());
    bytes.zeroize();
    secret
}
