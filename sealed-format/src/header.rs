//! The header: what names the key-encryption key, the wrapped data key and the chunking.
//! Parsing is strict, so every header has exactly one encoding.

use std::fmt;
use std::io::{self, Read};

use crate::error::{FormatError, KeyNameProblem};
use crate::wire::{self, Cursor};

/// The first four bytes of sealed data.
pub const MAGIC: [u8; 4] = *b"KBSE";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 0x01;
/// The most bytes the header length field may declare.
pub const MAX_BODY_LEN: u32 = 70_000;
/// The longest key name, in bytes.
pub const MAX_KEY_NAME_LEN: usize = 256;
/// The smallest chunk size.
pub const MIN_CHUNK_SIZE: u32 = 1024;
/// The largest chunk size.
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// The longest wrapped key (or TPM sealed blob), in bytes.
pub const MAX_WRAPPED_KEY_LEN: usize = u16::MAX as usize;
/// The nonce scheme byte of STREAM, the only scheme.
const NONCE_SCHEME_STREAM: u8 = 0x01;
/// Magic, version and header length: the bytes before those the length counts.
const PREAMBLE_LEN: usize = 4 + 1 + 4;

/// What protects the data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KekKind {
    /// `0x01`: an HSM AES-256 key-encryption key; the data key is wrapped with RFC 5649
    /// (AES key wrap with padding) inside the HSM.
    HsmAesKeyWrap,
    /// `0x02`: the data key is sealed by the TPM to a PCR policy.
    TpmSealed,
    /// `0x03`: an HSM AES-256 encryption key (`Encrypt`); the data key is encrypted inside
    /// the HSM with AES-256-GCM under it, with the caller's associated data. The wrapped
    /// key is the 12-byte nonce, then the 32-byte ciphertext and its 16-byte tag.
    HsmAesGcm,
}

impl KekKind {
    /// The byte that stands for this kind in the header.
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            Self::HsmAesKeyWrap => 0x01,
            Self::TpmSealed => 0x02,
            Self::HsmAesGcm => 0x03,
        }
    }

    /// The kind a header byte stands for.
    ///
    /// # Errors
    /// [`FormatError::UnknownKekKind`] for any byte but `0x01`, `0x02` and `0x03`.
    pub const fn from_code(code: u8) -> Result<Self, FormatError> {
        match code {
            0x01 => Ok(Self::HsmAesKeyWrap),
            0x02 => Ok(Self::TpmSealed),
            0x03 => Ok(Self::HsmAesGcm),
            other => Err(FormatError::UnknownKekKind(other)),
        }
    }
}

/// The 7 random bytes that start every chunk's nonce in one envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoncePrefix([u8; 7]);

impl NoncePrefix {
    /// Its length in bytes.
    pub const LEN: usize = 7;

    /// A fresh random prefix.
    ///
    /// # Errors
    /// [`FormatError::Crypto`] if the system has no randomness to give.
    pub fn random() -> Result<Self, FormatError> {
        let mut bytes = [0u8; Self::LEN];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| FormatError::Crypto("no random bytes for the nonce prefix"))?;
        Ok(Self(bytes))
    }

    /// A given prefix (test vectors, or one read from a header).
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 7]) -> Self {
        Self(bytes)
    }

    /// Its bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 7] {
        &self.0
    }
}

/// A validated header. Its fields can only be set through [`Header::new`] or
/// [`Header::parse`], so every `Header` encodes to bytes that parse back to it.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    kek: KekKind,
    key_name: String,
    key_version: u32,
    chunk_size: u32,
    nonce_prefix: NoncePrefix,
    wrapped_key: Vec<u8>,
}

impl Header {
    /// A header, checked against the format's limits.
    ///
    /// # Errors
    /// [`FormatError::InvalidKeyName`], [`FormatError::InvalidKeyVersion`],
    /// [`FormatError::InvalidChunkSize`] or [`FormatError::WrappedKeyLength`].
    pub fn new(
        kek: KekKind,
        key_name: impl Into<String>,
        key_version: u32,
        chunk_size: u32,
        nonce_prefix: NoncePrefix,
        wrapped_key: Vec<u8>,
    ) -> Result<Self, FormatError> {
        let key_name = key_name.into();
        check_key_name_len(key_name.len())?;
        check_key_version(key_version)?;
        check_chunk_size(chunk_size)?;
        check_wrapped_key_len(wrapped_key.len())?;
        Ok(Self {
            kek,
            key_name,
            key_version,
            chunk_size,
            nonce_prefix,
            wrapped_key,
        })
    }

    /// What protects the data key.
    #[must_use]
    pub fn kek(&self) -> KekKind {
        self.kek
    }

    /// The name of the key-encryption key.
    #[must_use]
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The version of the key-encryption key, from 1.
    #[must_use]
    pub fn key_version(&self) -> u32 {
        self.key_version
    }

    /// Plaintext bytes per chunk.
    #[must_use]
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// The nonce prefix of every chunk.
    #[must_use]
    pub fn nonce_prefix(&self) -> NoncePrefix {
        self.nonce_prefix
    }

    /// The wrapped data key, or the TPM sealed blob.
    #[must_use]
    pub fn wrapped_key(&self) -> &[u8] {
        &self.wrapped_key
    }

    /// What every chunk authenticates of the header: the magic, the format version, the
    /// key name (length-prefixed), the chunk size, the nonce scheme and the nonce prefix.
    ///
    /// The rest, the *wrapping* (KEK kind, key version, wrapped key), is authenticated by
    /// the key-encryption key instead: RFC 5649's integrity check in the HSM, or the TPM's
    /// sealed-object integrity, and the data key it yields is the only one under which the
    /// chunks open. That is what lets `Rewrap` replace the wrapping under a newer key
    /// version without touching the payload ([`Header::rewrapped`]).
    #[must_use]
    pub fn bound_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.key_name.len());
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT_VERSION);
        wire::put_u16_prefixed(&mut out, self.key_name.as_bytes());
        out.extend_from_slice(&self.chunk_size.to_be_bytes());
        out.push(NONCE_SCHEME_STREAM);
        out.extend_from_slice(self.nonce_prefix.as_bytes());
        out
    }

    /// This header with another wrapping of the same data key (a newer key version, or
    /// another KEK kind): the chunks written under this header open under the new one.
    ///
    /// # Errors
    /// As [`Header::new`] for the new fields.
    pub fn rewrapped(
        &self,
        kek: KekKind,
        key_version: u32,
        wrapped_key: Vec<u8>,
    ) -> Result<Header, FormatError> {
        Header::new(
            kek,
            self.key_name.clone(),
            key_version,
            self.chunk_size,
            self.nonce_prefix,
            wrapped_key,
        )
    }

    /// The header's bytes, from the magic through the wrapped key.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(32 + self.key_name.len() + self.wrapped_key.len());
        body.push(self.kek.code());
        wire::put_u16_prefixed(&mut body, self.key_name.as_bytes());
        body.extend_from_slice(&self.key_version.to_be_bytes());
        body.extend_from_slice(&self.chunk_size.to_be_bytes());
        body.push(NONCE_SCHEME_STREAM);
        body.extend_from_slice(self.nonce_prefix.as_bytes());
        wire::put_u16_prefixed(&mut body, &self.wrapped_key);
        // At most 65,812 bytes: the limits of the fields keep it far below u32::MAX.
        let body_len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(PREAMBLE_LEN + body.len());
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&body_len.to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parses the header at the start of `bytes`, which may go on with the payload.
    /// Returns the header and the number of bytes it takes.
    ///
    /// # Errors
    /// [`FormatError::Truncated`] if `bytes` ends inside the header; otherwise the
    /// error of the first field that is wrong, in the order of the fields.
    pub fn parse(bytes: &[u8]) -> Result<(Self, usize), FormatError> {
        let body_len = parse_preamble(bytes)?;
        let total = PREAMBLE_LEN + body_len;
        let body = bytes
            .get(PREAMBLE_LEN..total)
            .ok_or(FormatError::Truncated)?;
        Ok((parse_body(body)?, total))
    }

    /// Reads a header off the front of `reader`, leaving it at the first chunk. Returns
    /// the header and its raw bytes. Reads nothing past the header, and allocates only
    /// after checking the declared length against the limit.
    ///
    /// # Errors
    /// An I/O error of `reader`, or one holding a [`FormatError`] (see
    /// [`FormatError::from_io`]); the end of the data inside the header is
    /// [`FormatError::Truncated`]. A `WouldBlock` or other I/O error loses what was read
    /// of the header: give it a blocking reader.
    pub fn read_from<R: Read + ?Sized>(reader: &mut R) -> io::Result<(Self, Vec<u8>)> {
        let mut raw = vec![0u8; PREAMBLE_LEN];
        let mut filled = 0;
        wire::fill(reader, &mut raw, &mut filled)?;
        let body_len = parse_preamble(raw.get(..filled).unwrap_or_default())?;
        raw.resize(PREAMBLE_LEN + body_len, 0);
        if wire::fill(reader, &mut raw, &mut filled)? {
            return Err(FormatError::Truncated.into());
        }
        let header = parse_body(raw.get(PREAMBLE_LEN..).unwrap_or_default())?;
        Ok((header, raw))
    }
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("kek", &self.kek)
            .field("key_name", &self.key_name)
            .field("key_version", &self.key_version)
            .field("chunk_size", &self.chunk_size)
            .field("nonce_prefix", &self.nonce_prefix)
            .field("wrapped_key_len", &self.wrapped_key.len())
            .finish()
    }
}

/// Checks magic, version and header length (in that order); returns the body length.
/// `bytes` may be shorter than the preamble: a prefix of the magic is `Truncated`, any
/// other start is `BadMagic`.
fn parse_preamble(bytes: &[u8]) -> Result<usize, FormatError> {
    let mut cursor = Cursor::new(bytes);
    match cursor.array::<4>() {
        Some(magic) if magic == MAGIC => {}
        None if MAGIC.starts_with(bytes) => return Err(FormatError::Truncated),
        _ => return Err(FormatError::BadMagic),
    }
    let version = cursor.u8().ok_or(FormatError::Truncated)?;
    if version != FORMAT_VERSION {
        return Err(FormatError::UnknownVersion(version));
    }
    let body_len = cursor.u32().ok_or(FormatError::Truncated)?;
    if body_len > MAX_BODY_LEN {
        return Err(FormatError::HeaderTooLong(body_len));
    }
    usize::try_from(body_len).map_err(|_| FormatError::HeaderTooLong(body_len))
}

/// Parses the fields the header length covers; `body` is exactly that long.
fn parse_body(body: &[u8]) -> Result<Header, FormatError> {
    let declared = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let short = || FormatError::HeaderLengthMismatch { declared };
    let mut cursor = Cursor::new(body);

    let kek = KekKind::from_code(cursor.u8().ok_or_else(short)?)?;
    let name_len = usize::from(cursor.u16().ok_or_else(short)?);
    check_key_name_len(name_len)?;
    let name = cursor.take(name_len).ok_or_else(short)?;
    let key_name = std::str::from_utf8(name)
        .map_err(|_| FormatError::InvalidKeyName(KeyNameProblem::NotUtf8))?
        .to_owned();
    let key_version = cursor.u32().ok_or_else(short)?;
    check_key_version(key_version)?;
    let chunk_size = cursor.u32().ok_or_else(short)?;
    check_chunk_size(chunk_size)?;
    let scheme = cursor.u8().ok_or_else(short)?;
    if scheme != NONCE_SCHEME_STREAM {
        return Err(FormatError::UnknownNonceScheme(scheme));
    }
    let nonce_prefix = NoncePrefix(cursor.array().ok_or_else(short)?);
    let wrapped_len = usize::from(cursor.u16().ok_or_else(short)?);
    check_wrapped_key_len(wrapped_len)?;
    let wrapped_key = cursor.take(wrapped_len).ok_or_else(short)?.to_vec();
    if !cursor.is_empty() {
        return Err(short());
    }
    Ok(Header {
        kek,
        key_name,
        key_version,
        chunk_size,
        nonce_prefix,
        wrapped_key,
    })
}

fn check_key_name_len(len: usize) -> Result<(), FormatError> {
    match len {
        0 => Err(FormatError::InvalidKeyName(KeyNameProblem::Empty)),
        1..=MAX_KEY_NAME_LEN => Ok(()),
        _ => Err(FormatError::InvalidKeyName(KeyNameProblem::TooLong)),
    }
}

fn check_key_version(version: u32) -> Result<(), FormatError> {
    if version == 0 {
        return Err(FormatError::InvalidKeyVersion);
    }
    Ok(())
}

fn check_chunk_size(size: u32) -> Result<(), FormatError> {
    if size.is_power_of_two() && (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size) {
        return Ok(());
    }
    Err(FormatError::InvalidChunkSize(size))
}

fn check_wrapped_key_len(len: usize) -> Result<(), FormatError> {
    if (1..=MAX_WRAPPED_KEY_LEN).contains(&len) {
        return Ok(());
    }
    Err(FormatError::WrappedKeyLength(len))
}
