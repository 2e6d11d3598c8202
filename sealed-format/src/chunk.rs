//! One chunk at a time: STREAM over AES-256-GCM, for callers that frame chunks themselves
//! (the broker's streaming RPCs). [`SealWriter`](crate::SealWriter) and
//! [`UnsealReader`](crate::UnsealReader) are built on these.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::context::EncryptionContext;
use crate::error::FormatError;
use crate::header::{Header, NoncePrefix};
use crate::key::DataKey;

/// The length of the GCM tag that ends every sealed chunk.
pub const TAG_LEN: usize = 16;
/// The label that starts the associated data of every chunk.
const AAD_LABEL: &[u8] = b"keybroker sealed v1";

/// The associated data of every chunk of an envelope:
/// SHA-256(label ‖ u32 len(bound) ‖ bound ‖ canonical context), with `bound` the header
/// without its wrapping ([`crate::Header::bound_bytes`]).
fn associated_data(header_bytes: &[u8], context: &EncryptionContext) -> [u8; 32] {
    // At most a few hundred bytes.
    let header_len = u32::try_from(header_bytes.len()).unwrap_or(u32::MAX);
    let mut hash = Sha256::new();
    hash.update(AAD_LABEL);
    hash.update(header_len.to_be_bytes());
    hash.update(header_bytes);
    hash.update(context.encode());
    hash.finalize().into()
}

/// nonce_i = prefix(7) ‖ u32 i ‖ u8 last.
pub(crate) fn chunk_nonce(prefix: NoncePrefix, index: u32, last: bool) -> Nonce {
    let [p0, p1, p2, p3, p4, p5, p6] = *prefix.as_bytes();
    let [i0, i1, i2, i3] = index.to_be_bytes();
    Nonce::assume_unique_for_key([p0, p1, p2, p3, p4, p5, p6, i0, i1, i2, i3, u8::from(last)])
}

/// What sealing and opening share: the key, the associated data, the position.
struct ChunkCipher {
    key: LessSafeKey,
    aad: [u8; 32],
    prefix: NoncePrefix,
    chunk_size: usize,
    next_index: u32,
    finished: bool,
}

impl ChunkCipher {
    fn new(
        header: &Header,
        key: &DataKey,
        context: &EncryptionContext,
    ) -> Result<Self, FormatError> {
        let unbound = UnboundKey::new(&AES_256_GCM, key.expose_secret())
            .map_err(|_| FormatError::Crypto("AES-256-GCM refused the data key"))?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            aad: associated_data(&header.bound_bytes(), context),
            prefix: header.nonce_prefix(),
            chunk_size: usize::try_from(header.chunk_size()).unwrap_or(usize::MAX),
            next_index: 0,
            finished: false,
        })
    }

    /// The index of the next chunk, if another chunk may come.
    fn next_index(&self) -> Result<u32, FormatError> {
        if self.finished {
            return Err(FormatError::TrailingData);
        }
        // At most u32::MAX chunks: indices 0 ..= u32::MAX - 1.
        if self.next_index == u32::MAX {
            return Err(FormatError::TooManyChunks);
        }
        Ok(self.next_index)
    }

    fn advance(&mut self, last: bool) {
        self.next_index = self.next_index.saturating_add(1);
        self.finished = last;
    }

    fn aad(&self) -> Aad<[u8; 32]> {
        Aad::from(self.aad)
    }
}

impl fmt::Debug for ChunkCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkCipher")
            .field("key", &"[REDACTED]")
            .field("chunk_size", &self.chunk_size)
            .field("next_index", &self.next_index)
            .field("finished", &self.finished)
            .finish()
    }
}

/// Seals the chunks of one envelope, in order.
#[derive(Debug)]
pub struct ChunkSealer {
    cipher: ChunkCipher,
}

impl ChunkSealer {
    /// A sealer for the envelope with this header and context. It takes the data key:
    /// a data key seals one envelope, so that no (key, nonce) pair is ever used twice.
    ///
    /// # Errors
    /// [`FormatError::Crypto`] if the cryptographic library refuses the key.
    pub fn new(
        header: &Header,
        key: DataKey,
        context: &EncryptionContext,
    ) -> Result<Self, FormatError> {
        Ok(Self {
            cipher: ChunkCipher::new(header, &key, context)?,
        })
    }

    /// Seals the next chunk: `ciphertext ‖ tag`. Every chunk but the last holds exactly
    /// the chunk size; the last holds less (possibly nothing).
    ///
    /// # Errors
    /// [`FormatError::ChunkLength`] for a chunk of the wrong length,
    /// [`FormatError::TrailingData`] after the last chunk,
    /// [`FormatError::TooManyChunks`] past `u32::MAX` chunks. The sealer is unchanged.
    pub fn seal_chunk(&mut self, plaintext: &[u8], last: bool) -> Result<Vec<u8>, FormatError> {
        let mut buf = Zeroizing::new(Vec::with_capacity(plaintext.len().saturating_add(TAG_LEN)));
        buf.extend_from_slice(plaintext);
        self.seal_in_place(&mut buf, last)?;
        Ok(std::mem::take(&mut *buf))
    }

    /// Seals the plaintext in `buf` in place and appends the tag, so that `buf` then holds
    /// the sealed chunk, `ciphertext ‖ tag`. Give `buf` room for the tag beforehand
    /// ([`Vec::with_capacity`] of the chunk size plus [`TAG_LEN`]), or growing it may leave
    /// a copy of ciphertext (never plaintext) behind.
    ///
    /// # Errors
    /// As [`ChunkSealer::seal_chunk`]; a chunk of the wrong length or place leaves `buf`
    /// and the sealer unchanged, the plaintext still in `buf`: wiping it is the caller's
    /// business.
    pub fn seal_in_place(&mut self, buf: &mut Vec<u8>, last: bool) -> Result<(), FormatError> {
        let tag = self.seal_in_place_separate_tag(buf, last)?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Seals the plaintext in `in_out` in place, turning it into the ciphertext, and
    /// returns the tag that must follow it: the sealed chunk is `in_out ‖ tag`. For a
    /// caller whose buffer already has room after the plaintext (as
    /// [`SealWriter`](crate::SealWriter)'s has), nothing is copied or allocated.
    ///
    /// # Errors
    /// As [`ChunkSealer::seal_chunk`]; a chunk of the wrong length or place leaves
    /// `in_out` and the sealer unchanged.
    pub fn seal_in_place_separate_tag(
        &mut self,
        in_out: &mut [u8],
        last: bool,
    ) -> Result<[u8; TAG_LEN], FormatError> {
        let index = self.check(in_out.len(), last)?;
        let nonce = chunk_nonce(self.cipher.prefix, index, last);
        let tag = self
            .cipher
            .key
            .seal_in_place_separate_tag(nonce, self.cipher.aad(), in_out)
            .map_err(|_| FormatError::Crypto("AES-256-GCM failed to seal a chunk"))?;
        // Sealed: this nonce is used, whatever happens next.
        self.cipher.advance(last);
        <[u8; TAG_LEN]>::try_from(tag.as_ref())
            .map_err(|_| FormatError::Crypto("AES-256-GCM gave a tag of the wrong length"))
    }

    /// Seals `buf[..len]` in place and writes its tag after it, in `buf[len..len + 16]`;
    /// returns the length of the sealed chunk, `len + 16`. The sealer advances only on
    /// success.
    pub(crate) fn seal_in_buffer(
        &mut self,
        buf: &mut [u8],
        len: usize,
        last: bool,
    ) -> Result<usize, FormatError> {
        let index = self.check(len, last)?;
        let sealed_len = len.saturating_add(TAG_LEN);
        let Some(sealed) = buf.get_mut(..sealed_len) else {
            return Err(FormatError::ChunkLength { index, len, last });
        };
        let Some((plaintext, tag_room)) = sealed.split_at_mut_checked(len) else {
            return Err(FormatError::ChunkLength { index, len, last });
        };
        let tag = self.seal_in_place_separate_tag(plaintext, last)?;
        tag_room.copy_from_slice(&tag);
        Ok(sealed_len)
    }

    /// Seals `plaintext` into `out` (`ciphertext ‖ tag`, exactly `plaintext.len() + 16`
    /// bytes) in one pass, leaving `plaintext` as it is: no copy of the plaintext is
    /// made. The sealer advances only on success.
    pub(crate) fn seal_to(
        &mut self,
        plaintext: &[u8],
        out: &mut [u8],
        last: bool,
    ) -> Result<(), FormatError> {
        let index = self.check(plaintext.len(), last)?;
        let (ciphertext, tag) = match out.split_at_mut_checked(plaintext.len()) {
            Some((ciphertext, tag)) if tag.len() == TAG_LEN => (ciphertext, tag),
            _ => {
                return Err(FormatError::ChunkLength {
                    index,
                    len: out.len(),
                    last,
                });
            }
        };
        let nonce = chunk_nonce(self.cipher.prefix, index, last);
        self.cipher
            .key
            .seal_out_of_place_scatter(nonce, self.cipher.aad(), plaintext, ciphertext, &[], tag)
            .map_err(|_| FormatError::Crypto("AES-256-GCM failed to seal a chunk"))?;
        self.cipher.advance(last);
        Ok(())
    }

    /// The index of the next chunk, if a plaintext of `len` bytes fits its place.
    fn check(&self, len: usize, last: bool) -> Result<u32, FormatError> {
        let index = self.cipher.next_index()?;
        let fits = if last {
            len < self.cipher.chunk_size
        } else {
            len == self.cipher.chunk_size
        };
        if !fits {
            return Err(FormatError::ChunkLength { index, len, last });
        }
        Ok(index)
    }

    /// Whether the last chunk has been sealed.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.cipher.finished
    }
}

/// Opens the chunks of one envelope, in order; a chunk that fails leaves the position
/// where it was, so no chunk can be skipped.
#[derive(Debug)]
pub struct ChunkOpener {
    cipher: ChunkCipher,
}

impl ChunkOpener {
    /// An opener for the envelope with this header, data key and context.
    ///
    /// # Errors
    /// [`FormatError::Crypto`] if the cryptographic library refuses the key.
    pub fn new(
        header: &Header,
        key: &DataKey,
        context: &EncryptionContext,
    ) -> Result<Self, FormatError> {
        Ok(Self {
            cipher: ChunkCipher::new(header, key, context)?,
        })
    }

    /// Opens the next sealed chunk (`ciphertext ‖ tag`) and returns its plaintext. A
    /// chunk is final exactly when it is shorter than the chunk size plus the tag; `last`
    /// says which the caller expects, and the length must agree.
    ///
    /// # Errors
    /// [`FormatError::ChunkAuthentication`] if it does not open,
    /// [`FormatError::Truncated`] for a final chunk shorter than a tag,
    /// [`FormatError::ChunkLength`] for a length that disagrees with `last`,
    /// [`FormatError::TrailingData`] after the final chunk,
    /// [`FormatError::TooManyChunks`] past `u32::MAX` chunks.
    pub fn open_chunk(
        &mut self,
        sealed: &[u8],
        last: bool,
    ) -> Result<Zeroizing<Vec<u8>>, FormatError> {
        let mut buf = Zeroizing::new(sealed.to_vec());
        let len = self.open_in_place(&mut buf, last)?;
        buf.truncate(len);
        Ok(buf)
    }

    /// Opens the next sealed chunk (`ciphertext ‖ tag`) in place, without a copy: on
    /// success the first `n` bytes of `sealed` are its plaintext, and `n` (its length
    /// less the tag) is returned. The rules and errors are those of
    /// [`ChunkOpener::open_chunk`].
    ///
    /// A chunk that fails authentication leaves `sealed` wiped, so that no
    /// unauthenticated plaintext is left in it; a refusal before decryption (its length,
    /// its place) leaves it as it was. Either way the opener stays where it was, so no
    /// chunk can be skipped. On success the plaintext is the caller's to wipe.
    ///
    /// # Errors
    /// As [`ChunkOpener::open_chunk`].
    pub fn open_in_place(&mut self, sealed: &mut [u8], last: bool) -> Result<usize, FormatError> {
        let index = self.check(sealed.len(), last)?;
        let nonce = chunk_nonce(self.cipher.prefix, index, last);
        match self
            .cipher
            .key
            .open_in_place(nonce, self.cipher.aad(), sealed)
        {
            Ok(plaintext) => {
                let plaintext_len = plaintext.len();
                self.cipher.advance(last);
                Ok(plaintext_len)
            }
            Err(_) => {
                sealed.zeroize();
                Err(FormatError::ChunkAuthentication { index, last })
            }
        }
    }

    /// Opens `sealed` into `out` in one pass, leaving `sealed` as it is: the plaintext
    /// (`n` bytes, returned) lands in `out[..n]`, which must be long enough. On failure
    /// `out[..n]` is wiped, since it may hold unauthenticated plaintext.
    pub(crate) fn open_to(
        &mut self,
        sealed: &[u8],
        out: &mut [u8],
        last: bool,
    ) -> Result<usize, FormatError> {
        let index = self.check(sealed.len(), last)?;
        let plaintext_len = sealed.len().saturating_sub(TAG_LEN);
        let (Some((ciphertext, tag)), Some(plaintext)) = (
            sealed.split_at_checked(plaintext_len),
            out.get_mut(..plaintext_len),
        ) else {
            return Err(FormatError::ChunkLength {
                index,
                len: sealed.len(),
                last,
            });
        };
        let nonce = chunk_nonce(self.cipher.prefix, index, last);
        match self.cipher.key.open_separate_gather(
            nonce,
            self.cipher.aad(),
            ciphertext,
            tag,
            plaintext,
        ) {
            Ok(()) => {
                self.cipher.advance(last);
                Ok(plaintext_len)
            }
            Err(_) => {
                plaintext.zeroize();
                Err(FormatError::ChunkAuthentication { index, last })
            }
        }
    }

    /// The index of the next chunk, if a sealed chunk of `len` bytes fits its place.
    fn check(&self, len: usize, last: bool) -> Result<u32, FormatError> {
        let index = self.cipher.next_index()?;
        let full = self.cipher.chunk_size.saturating_add(TAG_LEN);
        if last && len < TAG_LEN {
            return Err(FormatError::Truncated);
        }
        if (last && len >= full) || (!last && len != full) {
            return Err(FormatError::ChunkLength { index, len, last });
        }
        Ok(index)
    }

    /// Whether the final chunk has been opened.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.cipher.finished
    }
}

#[cfg(test)]
impl ChunkSealer {
    /// Skips ahead, to test the limit on the number of chunks without sealing 2^32.
    pub(crate) fn skip_to(&mut self, index: u32) {
        self.cipher.next_index = index;
    }
}

#[cfg(test)]
impl ChunkOpener {
    pub(crate) fn skip_to(&mut self, index: u32) {
        self.cipher.next_index = index;
    }
}
