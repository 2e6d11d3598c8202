//! The one error type of the format: every refusal, named precisely.

use std::io;

use crate::header::{MAX_BODY_LEN, MAX_CHUNK_SIZE, MAX_KEY_NAME_LEN, MIN_CHUNK_SIZE};

/// Why sealed data, a header or an encryption context was refused, or why sealing failed.
///
/// Messages never contain key material or plaintext. Streaming readers and writers
/// return these inside an [`io::Error`]; [`FormatError::from_io`] gets them back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The data does not start with the magic `"KBSE"`.
    #[error("not Keybroker sealed data: it does not start with \"KBSE\"")]
    BadMagic,
    /// The format version byte is not one this build reads.
    #[error("unknown sealed-data format version {0} (this build reads version 1)")]
    UnknownVersion(u8),
    /// The header length field is over the limit.
    #[error("the header length field says {0} bytes, more than the limit of {MAX_BODY_LEN}")]
    HeaderTooLong(u32),
    /// The header length field differs from the length of the fields it covers.
    #[error(
        "the header length field ({declared} bytes) does not match the length of the header's fields"
    )]
    HeaderLengthMismatch {
        /// The length the field declares.
        declared: u32,
    },
    /// The key-encryption key kind byte is unknown.
    #[error(
        "unknown key-encryption key kind {0:#04x} (this build knows 0x01, an HSM AES-256 wrapping key; 0x02, a TPM; 0x03, an HSM AES-256 encryption key)"
    )]
    UnknownKekKind(u8),
    /// The key name is empty, too long or not UTF-8.
    #[error("invalid key name: {0}")]
    InvalidKeyName(KeyNameProblem),
    /// The key version is 0.
    #[error("invalid key version 0: key versions start at 1")]
    InvalidKeyVersion,
    /// The chunk size is not a power of two in the allowed range.
    #[error(
        "invalid chunk size {0}: it must be a power of two from {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}"
    )]
    InvalidChunkSize(u32),
    /// The nonce scheme byte is unknown.
    #[error("unknown nonce scheme {0:#04x} (this build knows 0x01, STREAM)")]
    UnknownNonceScheme(u8),
    /// The wrapped data key is empty or longer than 65,535 bytes.
    #[error("invalid wrapped key: it must hold 1 to 65535 bytes, not {0}")]
    WrappedKeyLength(usize),
    /// The encryption context has too many entries.
    #[error("the encryption context has {0} entries, more than the limit of 64")]
    ContextTooManyEntries(usize),
    /// An encryption context key is empty or too long.
    #[error("an encryption context key is {0} bytes long: keys hold 1 to 128 bytes")]
    ContextKeyLength(usize),
    /// An encryption context value is too long.
    #[error(
        "the encryption context value of {key:?} is {len} bytes long, more than the limit of 1024"
    )]
    ContextValueLength {
        /// The entry's key.
        key: String,
        /// The value's length in bytes.
        len: usize,
    },
    /// A data key of the wrong length (an unwrapped or unsealed blob that is not 32 bytes).
    #[error("a data key is 32 bytes, not {0}")]
    DataKeyLength(usize),
    /// The data ends before the final chunk: inside the header, at a chunk boundary, or
    /// with fewer bytes left than a tag.
    #[error("the sealed data ends before its final chunk (truncated)")]
    Truncated,
    /// A chunk did not open: reordered, swapped, altered, or sealed under another key,
    /// header or encryption context. For the final chunk, truncation inside it is
    /// indistinguishable from these and is reported here too.
    #[error("{}", authentication_message(*.index, *.last))]
    ChunkAuthentication {
        /// The chunk's index, from 0.
        index: u32,
        /// Whether it was opened as the final chunk.
        last: bool,
    },
    /// Something follows the final chunk.
    #[error("data follows the final chunk")]
    TrailingData,
    /// A chunk handed to [`ChunkSealer`](crate::ChunkSealer) or
    /// [`ChunkOpener`](crate::ChunkOpener) has the wrong length for its place.
    #[error("{}", length_message(*.index, *.len, *.last))]
    ChunkLength {
        /// The chunk's index, from 0.
        index: u32,
        /// Its length in bytes (plaintext when sealing, sealed when opening).
        len: usize,
        /// Whether it was marked final.
        last: bool,
    },
    /// The stream would need more than `u32::MAX` chunks.
    #[error("the sealed data would have more than 4294967295 chunks")]
    TooManyChunks,
    /// The cryptographic library refused an operation (no randomness, a key refused).
    #[error("the cryptographic library failed: {0}")]
    Crypto(&'static str),
}

/// What is wrong with a key name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyNameProblem {
    /// Zero bytes long.
    #[error("it is empty")]
    Empty,
    /// Over 256 bytes.
    #[error("it is longer than {MAX_KEY_NAME_LEN} bytes")]
    TooLong,
    /// Not valid UTF-8.
    #[error("it is not UTF-8")]
    NotUtf8,
}

fn authentication_message(index: u32, last: bool) -> String {
    if last {
        format!(
            "chunk {index}, the final one, failed authentication: the sealed data is truncated, \
             or the data, its header, the key or the encryption context differ from what was sealed"
        )
    } else {
        format!(
            "chunk {index} failed authentication: the data, its header, the key or the \
             encryption context differ from what was sealed"
        )
    }
}

fn length_message(index: u32, len: usize, last: bool) -> String {
    let place = if last { "final" } else { "non-final" };
    format!(
        "chunk {index} has the wrong length for a {place} chunk ({len} bytes): every chunk but \
         the final one holds exactly the chunk size, and the final one holds less"
    )
}

impl FormatError {
    /// The `FormatError` inside an [`io::Error`] returned by
    /// [`SealWriter`](crate::SealWriter), [`UnsealReader`](crate::UnsealReader) or
    /// [`Header::read_from`](crate::Header::read_from), if it holds one.
    #[must_use]
    pub fn from_io(err: &io::Error) -> Option<&FormatError> {
        err.get_ref()?.downcast_ref()
    }
}

impl From<FormatError> for io::Error {
    fn from(err: FormatError) -> Self {
        let kind = match err {
            FormatError::Truncated => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, err)
    }
}
