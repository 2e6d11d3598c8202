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
//! - [`SealWriter`] and [`UnsealReader`]: streaming, over any `Write` / `Read`.
//! - [`ChunkSealer`] and [`ChunkOpener`]: one chunk at a time, for callers that frame
//!   chunks themselves (streaming RPCs).
//! - [`FormatError`]: every refusal, by name.
//!
//! # The format, byte by byte
//!
//! All integers are big-endian (network order). Sealed data is a header followed by the
//! payload.
//!
//! ## Header
//!
//! | bytes | field | contents |
//! |---|---|---|
//! | 4 | magic | `"KBSE"` (`4b 42 53 45`) |
//! | 1 | format version | `0x01`; any other value is refused right after the magic ([`FormatError::UnknownVersion`]) |
//! | 4 | header length | u32: the number of bytes of the fields below, kek kind through wrapped key; at most 70,000, and exactly their length |
//! | 1 | kek kind | `0x01`: an HSM AES-256 key-encryption key; the data key is wrapped with RFC 5649 (AES key wrap with padding) inside the HSM. `0x02`: the data key is sealed by the TPM to a PCR policy. Other values: [`FormatError::UnknownKekKind`] |
//! | 2 + n | key name | u16 length n, then n bytes of UTF-8; 1 ≤ n ≤ 256 |
//! | 4 | key version | u32, at least 1 |
//! | 4 | chunk size | u32: plaintext bytes per chunk, a power of two from 1,024 to 16,777,216 |
//! | 1 | nonce scheme | `0x01`: STREAM, the only scheme |
//! | 7 | nonce prefix | random, fresh for every envelope |
//! | 2 + n | wrapped key | u16 length n, then the wrapped data key (or the TPM sealed blob); 1 ≤ n ≤ 65,535 |
//!
//! The header length must equal the length of the fields it covers: no bytes may follow
//! the wrapped key inside it. Each field is checked in the order above, and every length
//! against its limit before anything of that length is read or allocated. So a header
//! has exactly one encoding, and re-encoding a parsed header gives back its bytes.
//!
//! ## Encryption context
//!
//! A map of UTF-8 strings to UTF-8 strings: at most 64 entries, keys of 1 to 128 bytes,
//! values of 0 to 1,024 bytes. It is not stored in the envelope. Its canonical encoding
//! is a u16 count, then for each entry in ascending bytewise order of keys:
//! u16 key length ‖ key ‖ u16 value length ‖ value.
//!
//! ## Associated data
//!
//! Every chunk has the same associated data:
//!
//! ```text
//! bound = magic ‖ format version ‖ u16 len(key name) ‖ key name ‖ chunk size
//!         ‖ nonce scheme ‖ nonce prefix
//! AAD   = SHA-256( "keybroker sealed v1" ‖ u32 len(bound) ‖ bound ‖ canonical context )
//! ```
//!
//! where the 19-byte label is ASCII without a terminator ([`Header::bound_bytes`]). Each
//! chunk thus authenticates the format, the key's name, the chunk size, the nonce scheme
//! and prefix, and the context. The rest of the header, the *wrapping* (kek kind, key
//! version, wrapped key), is authenticated by the key-encryption key when the data key
//! is unwrapped: RFC 5649's integrity check in the HSM, or the TPM's sealed-object
//! integrity; and the data key it gives is the only one under which the chunks open. So
//! every header byte is authenticated, and the wrapping can be replaced under a newer
//! key version without touching the payload ([`Header::rewrapped`]).
//!
//! ## Payload
//!
//! The plaintext is cut into chunks of exactly `chunk size` bytes, followed by one final
//! chunk of 0 to `chunk size − 1` bytes: when the plaintext length is a multiple of the
//! chunk size, 0 included, the final chunk is empty. Chunk `i` (from 0) is
//!
//! ```text
//! nonce_i  = nonce prefix (7) ‖ u32 i ‖ u8 last      last = 0x01 for the final chunk, else 0x00
//! sealed_i = AES-256-GCM(data key, nonce_i, AAD, plaintext_i) = ciphertext_i ‖ tag_i (16 bytes)
//! ```
//!
//! The sealed chunks follow the header back to back, with no framing: every chunk but
//! the final one is `chunk size + 16` bytes long, and the final one is shorter (16 bytes
//! when empty). A reader knows a chunk is final exactly when it is shorter than
//! `chunk size + 16` bytes. There are at most `u32::MAX` chunks (indices up to
//! 4,294,967,294).
//!
//! ## What a reader refuses
//!
//! - The data ends before a final chunk — inside the header, at a chunk boundary, or
//!   with fewer than 16 bytes after the last boundary: [`FormatError::Truncated`].
//! - A chunk does not open — reordered, swapped, dropped, altered, or sealed under another
//!   key, header or context: [`FormatError::ChunkAuthentication`] with its index. The data
//!   carries no length, so data cut inside a chunk leaves a shorter chunk that a reader
//!   must take as the final one; it fails to open as such, and the error (with
//!   `last: true`) names truncation as one of the causes.
//! - For the same reason, bytes appended to a byte stream move where the final chunk
//!   seems to end, and fail as [`FormatError::ChunkAuthentication`]. Where the caller
//!   frames chunks ([`ChunkOpener`]), anything after the final chunk is
//!   [`FormatError::TrailingData`]; [`UnsealReader`] also reports it for data that
//!   arrives after its inner reader signalled the end.
//! - More than `u32::MAX` chunks: [`FormatError::TooManyChunks`].
//!
//! Plaintext is released one authenticated chunk at a time; the whole is complete and
//! unaltered only once the reader reports the end without error.
//!
//! ## Keys and nonces
//!
//! A data key seals one envelope ([`ChunkSealer::new`] and [`SealWriter::new`] consume
//! it), so no nonce is ever used twice under one key. Re-wrapping changes only the
//! wrapping, which is outside the associated data: the payload is left as it is and
//! nothing is encrypted again, so no nonce is reused.
//!
//! # Worked example
//!
//! Data key `00 01 02 … 1f`, nonce prefix `a0 a1 a2 a3 a4 a5 a6`, kek kind HSM, key name
//! `"disk"`, key version 3, chunk size 1,024, wrapped key 40 bytes of `aa`, context
//! `{"app": "billing"}`, plaintext `"hello, sealed world"` (19 bytes: one chunk, the
//! final one). The sealed data is 109 bytes (the test `tests/golden.rs` holds them):
//!
//! ```text
//! offset  bytes                                           field
//!      0  4b 42 53 45                                     magic "KBSE"
//!      4  01                                              format version 1
//!      5  00 00 00 41                                     header length 65 (offsets 9 to 73)
//!      9  01                                              kek kind: HSM AES-256, RFC 5649
//!     10  00 04                                           key name length 4
//!     12  64 69 73 6b                                     key name "disk"
//!     16  00 00 00 03                                     key version 3
//!     20  00 00 04 00                                     chunk size 1024
//!     24  01                                              nonce scheme STREAM
//!     25  a0 a1 a2 a3 a4 a5 a6                            nonce prefix
//!     32  00 28                                           wrapped key length 40
//!     34  aa aa … aa (40 bytes)                           wrapped key
//!     74  1f 04 25 72 d7 2a c0 b3 66 04 b4 4a ab ae cc    chunk 0 ciphertext (19 bytes)
//!         37 75 67 4f
//!     93  55 17 06 67 ec 5f 18 79 9d 33 b3 dd d4 01 e9 40 chunk 0 tag
//!    109  (end)
//!
//! canonical context   00 01  00 03 61 70 70  00 07 62 69 6c 6c 69 6e 67
//!                     (1 entry; "app"; "billing")
//! bound header        4b 42 53 45  01  00 04 64 69 73 6b  00 00 04 00  01  a0 a1 a2 a3 a4 a5 a6
//!                     (magic, version, key name, chunk size, nonce scheme, nonce prefix: 25 bytes)
//! AAD                 SHA-256("keybroker sealed v1" ‖ 00 00 00 19 ‖ bound header ‖ context)
//!                   = a4 aa 2a 91 b4 f4 d3 04 2e da d1 38 78 c7 f3 4a
//!                     8c 3a d0 3a 86 38 ed c1 b2 d6 ba 94 4d 12 25 86
//! nonce_0             a0 a1 a2 a3 a4 a5 a6  00 00 00 00  01   (index 0, final)
//! ```
//!
//! As one hex string:
//!
//! ```text
//! 4b42534501000000410100046469736b000000030000040001a0a1a2a3a4a5a60028aaaaaaaaaaaaaaaa
//! aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1f042572d72ac0b36604
//! b44aabaecc3775674f55170667ec5f18799d33b3ddd401e940
//! ```
//!
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
