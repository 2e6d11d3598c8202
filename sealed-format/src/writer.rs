//! Sealing a stream: header first, then each chunk as soon as it is full.

use std::fmt;
use std::io::{self, Read, Write};

use zeroize::{Zeroize, Zeroizing};

use crate::chunk::{ChunkSealer, TAG_LEN};
use crate::context::EncryptionContext;
use crate::header::Header;
use crate::key::DataKey;
use crate::wire;

/// Seals everything written to it into `W`, in constant memory: one chunk buffer.
///
/// Call [`SealWriter::finish`] to write the final chunk; a writer dropped without it
/// leaves sealed data that every reader refuses as truncated. After an error the writer
/// refuses every call, since what `W` holds is then incomplete.
///
/// Three ways in, which mix freely and give the same bytes:
/// - [`Write`]: the plaintext is copied into the chunk buffer, except that a whole chunk
///   written at a chunk boundary is sealed straight from the caller's slice into the
///   buffer in one pass, with no copy;
/// - [`SealWriter::seal_from`]: a [`Read`] fills the chunk buffer directly, as
///   [`std::io::copy`] would with a buffer of its own and a copy more;
/// - [`SealWriter::chunk_buffer`] and [`SealWriter::commit`]: the caller fills the chunk
///   buffer itself.
pub struct SealWriter<W: Write> {
    inner: W,
    sealer: ChunkSealer,
    /// Always `chunk size + 16` bytes long: `buf[..filled]` is the plaintext of the chunk
    /// being filled. Sealed in place, with its tag written after it; afterwards the
    /// buffer holds only ciphertext, which needs no wiping.
    buf: Zeroizing<Vec<u8>>,
    filled: usize,
    chunk_size: usize,
    broken: bool,
}

impl<W: Write> SealWriter<W> {
    /// Writes the header to `inner` and returns a writer for the payload. It takes the
    /// data key: one data key seals one envelope.
    ///
    /// # Errors
    /// An I/O error of `inner`, or one holding a [`FormatError`](crate::FormatError).
    pub fn new(
        mut inner: W,
        header: &Header,
        key: DataKey,
        context: &EncryptionContext,
    ) -> io::Result<Self> {
        let sealer = ChunkSealer::new(header, key, context)?;
        inner.write_all(&header.encode())?;
        let chunk_size = usize::try_from(header.chunk_size()).unwrap_or(usize::MAX);
        Ok(Self {
            inner,
            sealer,
            buf: Zeroizing::new(vec![0; chunk_size.saturating_add(TAG_LEN)]),
            filled: 0,
            chunk_size,
            broken: false,
        })
    }

    /// Seals the buffered plaintext as the final chunk, writes it, flushes, and returns
    /// the inner writer.
    ///
    /// # Errors
    /// An I/O error of the inner writer, or the error that broke this writer before.
    pub fn finish(mut self) -> io::Result<W> {
        self.emit(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }

    /// Reads `reader` to its end straight into the chunk buffer, sealing each chunk in
    /// place and writing it out as soon as it is full: the plaintext is copied once,
    /// by `reader` itself, and never again. Returns the number of bytes read.
    ///
    /// What is left after the last full chunk stays buffered, as after [`Write::write`]:
    /// more may be written, and [`SealWriter::finish`] seals it as the final chunk. A
    /// plaintext that ends exactly at a chunk boundary is thus followed by an empty final
    /// chunk, as the format requires.
    ///
    /// # Errors
    /// An error of `reader` (but [`io::ErrorKind::Interrupted`], which is retried) is
    /// returned as it is, and the writer stays usable: what was read before it is
    /// buffered or sealed, and nothing is lost, so the call may be repeated (after
    /// [`io::ErrorKind::WouldBlock`], say). An error of the inner writer breaks the writer,
    /// as for [`Write::write`].
    ///
    /// # Example
    ///
    /// ```
    /// use sealed_format::{DataKey, EncryptionContext, Header, KekKind, NoncePrefix, SealWriter};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let header = Header::new(KekKind::HsmAesKeyWrap, "disk", 1, 1024, NoncePrefix::random()?, vec![0xAA; 40])?;
    /// let mut writer = SealWriter::new(Vec::new(), &header, DataKey::generate()?, &EncryptionContext::new())?;
    /// let mut file = &[7u8; 3000][..]; // any `Read`: a `File`, a socket
    /// assert_eq!(writer.seal_from(&mut file)?, 3000);
    /// let sealed = writer.finish()?;
    /// // The header, two full chunks and a final one of 952 bytes, each with its tag.
    /// assert_eq!(sealed.len(), header.encode().len() + 2 * (1024 + 16) + 952 + 16);
    /// # Ok(())
    /// # }
    /// ```
    pub fn seal_from<R: Read + ?Sized>(&mut self, reader: &mut R) -> io::Result<u64> {
        self.check_usable()?;
        let mut total = 0u64;
        loop {
            let before = self.filled;
            let space = self.buf.get_mut(..self.chunk_size).unwrap_or_default();
            let outcome = wire::fill(reader, space, &mut self.filled);
            total = total.saturating_add(self.filled.saturating_sub(before) as u64);
            let ended = outcome?;
            if self.filled >= self.chunk_size {
                self.emit(false)?;
            }
            if ended {
                return Ok(total);
            }
        }
    }

    /// The room left in the chunk being filled, for the caller to write plaintext into
    /// directly; then [`SealWriter::commit`] says how much of it, from the start, was
    /// filled. Never empty while the writer is usable: a chunk is sealed as soon as it
    /// is full. What it holds beforehand is unspecified (zeros, or ciphertext already
    /// written out); never plaintext.
    ///
    /// Plaintext left in it uncommitted stays in the buffer, which is wiped when the
    /// writer is dropped; a later [`Write::write`], [`SealWriter::seal_from`] or
    /// [`SealWriter::chunk_buffer`] writes over it.
    pub fn chunk_buffer(&mut self) -> &mut [u8] {
        self.buf
            .get_mut(self.filled..self.chunk_size)
            .unwrap_or_default()
    }

    /// Takes the first `len` bytes of [`SealWriter::chunk_buffer`] as the next plaintext;
    /// if that fills the chunk, seals it in place and writes it out. `commit(0)` does
    /// nothing.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] if `len` is longer than the chunk buffer was (the
    /// writer is then unchanged), the error that broke this writer before, or an error
    /// of the inner writer, which breaks it.
    pub fn commit(&mut self, len: usize) -> io::Result<()> {
        self.check_usable()?;
        let room = self.chunk_size.saturating_sub(self.filled);
        if len > room {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{len} bytes committed, but only {room} remained in the chunk buffer"),
            ));
        }
        self.filled = self.filled.saturating_add(len);
        if self.filled >= self.chunk_size {
            self.emit(false)?;
        }
        Ok(())
    }

    /// The inner writer, for a caller that drains what has been written so far (a
    /// streaming RPC that sends each sealed chunk as it is made). Writing to it directly
    /// corrupts the envelope.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The bytes reserved for plaintext and its tag: one chunk, whatever the stream's
    /// length.
    #[must_use]
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Seals the buffered plaintext in place as the next chunk and writes it out.
    fn emit(&mut self, last: bool) -> io::Result<()> {
        self.check_usable()?;
        let len = self.filled;
        self.filled = 0;
        let result = match self.sealer.seal_in_buffer(&mut self.buf, len, last) {
            // Sealed in place, the plaintext is gone: the buffer holds ciphertext, which
            // needs no wiping (wiping every chunk byte by byte cost 15% of sealing,
            // docs/performance.md).
            Ok(sealed_len) => self
                .inner
                .write_all(self.buf.get(..sealed_len).unwrap_or_default()),
            Err(e) => {
                // Perhaps still plaintext.
                self.buf.as_mut_slice().zeroize();
                Err(io::Error::from(e))
            }
        };
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    /// Seals a whole chunk of the caller's, at a chunk boundary, from `plaintext` into
    /// the buffer in one pass, and writes it out.
    fn emit_from(&mut self, plaintext: &[u8]) -> io::Result<()> {
        let sealed_len = plaintext.len().saturating_add(TAG_LEN);
        let out = self.buf.get_mut(..sealed_len).unwrap_or_default();
        let result = match self.sealer.seal_to(plaintext, out, false) {
            Ok(()) => self.inner.write_all(out),
            // Nothing was sealed; the buffer holds no plaintext.
            Err(e) => Err(io::Error::from(e)),
        };
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    fn check_usable(&self) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other(
                "an earlier error left the sealed data incomplete",
            ));
        }
        Ok(())
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.check_usable()?;
        if self.filled == 0 {
            if let Some(whole) = data.get(..self.chunk_size) {
                self.emit_from(whole)?;
                return Ok(whole.len());
            }
        }
        let space = self.chunk_buffer();
        let n = space.len().min(data.len());
        if let (Some(dest), Some(src)) = (space.get_mut(..n), data.get(..n)) {
            dest.copy_from_slice(src);
        }
        self.filled = self.filled.saturating_add(n);
        if self.filled >= self.chunk_size {
            self.emit(false)?;
        }
        Ok(n)
    }

    /// Flushes the inner writer. The chunk being filled stays buffered: only full
    /// chunks and the final one can be sealed.
    fn flush(&mut self) -> io::Result<()> {
        self.check_usable()?;
        self.inner.flush()
    }
}

impl<W: Write> fmt::Debug for SealWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealWriter")
            .field("sealer", &self.sealer)
            .field("buffered", &self.filled)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
impl<W: Write> SealWriter<W> {
    /// The whole chunk buffer, to check what is left in it.
    pub(crate) fn buffer(&self) -> &[u8] {
        &self.buf
    }
}
