//! The sealed-data ("envelope") format of Keybroker, version 1: one format for the
//! broker's Seal and Unseal, the workload client and the CLI. Pure logic: bytes and keys
//! in, bytes out; wrapping the data key (HSM, TPM) is the caller's business.
//!
//! A fresh 32-byte data key encrypts the payload with AES-256-GCM in chunks (the STREAM
//! construction of Hoang, Reyhanitabar, Rogaway and Vizár), so data of any length is
//! sealed and unsealed in constant memory. The header names the key-encryption key and
//! carries the wrapped data key; every chunk authenticates the whole header and an
//! encryption context that the caller supplies again to unseal.
//!
//! - [`Header`], [`EncryptionContext`], [`DataKey`]: the parts, validated on creation.
//! - [`SealWriter`] and [`UnsealReader`]: streaming, over any `Write` / `Read`. Besides
//!   `Write` and `Read`, which copy the plaintext unless it comes in whole chunks, they
//!   let a caller work in the writer's or the reader's own chunk buffer, so that no
//!   further copy is made:
//!   [`SealWriter::seal_from`] (a `Read` fills it), [`SealWriter::chunk_buffer`] and
//!   [`SealWriter::commit`] (the caller fills it), [`UnsealReader::next_chunk`] (each
//!   chunk's plaintext, lent where it was opened) and [`UnsealReader::copy_to`].
//! - [`ChunkSealer`] and [`ChunkOpener`]: one chunk at a time, for callers that frame
//!   chunks themselves (streaming RPCs), in place too
//!   ([`ChunkSealer::seal_in_place_separate_tag`], [`ChunkOpener::open_in_place`]).
//! - [`FormatError`]: every refusal, by name.
//!
#![doc = include_str!("../../docs/sealing-format.md")]
//! # Example
//!
//! ```
//! use std::io::{Read, Write};
//! use sealed_format::{DataKey, EncryptionContext, Header, KekKind, NoncePrefix, SealWriter, UnsealReader};
//! use secrecy::ExposeSecret;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = DataKey::generate()?;
//! let wrapped = key.expose_secret().to_vec(); // in Keybroker: wrapped by the HSM or TPM
//! let header = Header::new(KekKind::HsmAesKeyWrap, "disk", 3, 64 * 1024, NoncePrefix::random()?, wrapped)?;
//! let mut context = EncryptionContext::new();
//! context.insert("app", "billing")?;
//!
//! let mut writer = SealWriter::new(Vec::new(), &header, key, &context)?;
//! writer.write_all(b"attack at dawn")?;
//! let sealed = writer.finish()?;
//!
//! let mut input = &sealed[..];
//! let (header, _) = Header::read_from(&mut input)?;
//! let key = DataKey::from_slice(header.wrapped_key())?; // in Keybroker: unwrapped
//! let mut plaintext = Vec::new();
//! UnsealReader::new(input, &header, &key, &context)?.read_to_end(&mut plaintext)?;
//! assert_eq!(plaintext, b"attack at dawn");
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

mod chunk;
mod context;
mod error;
mod header;
mod key;
mod reader;
mod wire;
mod writer;

#[cfg(test)]
mod in_place_tests;
#[cfg(test)]
mod tests;

pub use chunk::{ChunkOpener, ChunkSealer, TAG_LEN};
pub use context::EncryptionContext;
pub use error::{FormatError, KeyNameProblem};
pub use header::{
    FORMAT_VERSION, Header, KekKind, MAGIC, MAX_BODY_LEN, MAX_CHUNK_SIZE, MAX_KEY_NAME_LEN,
    MAX_WRAPPED_KEY_LEN, MIN_CHUNK_SIZE, NoncePrefix,
};
pub use key::DataKey;
pub use reader::UnsealReader;
pub use writer::SealWriter;
