//! Sealing a stream: header first, then each chunk as soon as it is full.

use std::fmt;
use std::io::{self, Write};

use zeroize::{Zeroize, Zeroizing};

use crate::chunk::{ChunkSealer, TAG_LEN};
use crate::context::EncryptionContext;
use crate::header::Header;
use crate::key::DataKey;

/// Seals everything written to it into `W`, in constant memory: one chunk buffer.
///
/// Call [`SealWriter::finish`] to write the final chunk; a writer dropped without it
/// leaves sealed data that every reader refuses as truncated. After an error the writer
/// refuses every call, since what `W` holds is then incomplete.
pub struct SealWriter<W: Write> {
    inner: W,
    sealer: ChunkSealer,
    /// Plaintext of the chunk being filled; sealed in place, with room for the tag.
    buf: Zeroizing<Vec<u8>>,
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
            buf: Zeroizing::new(Vec::with_capacity(chunk_size.saturating_add(TAG_LEN))),
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

    /// Seals the buffer as the next chunk and writes it out.
    fn emit(&mut self, last: bool) -> io::Result<()> {
        self.check_usable()?;
        let result = match self.sealer.seal_in_place(&mut self.buf, last) {
            Ok(()) => {
                let written = self.inner.write_all(&self.buf);
                // Sealed in place, the plaintext is gone: the buffer holds ciphertext,
                // which needs no wiping (wiping every chunk byte by byte cost 15% of
                // sealing, docs/performance.md).
                self.buf.clear();
                written
            }
            Err(e) => {
                // Perhaps still plaintext.
                self.buf.zeroize();
                Err(io::Error::from(e))
            }
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
        let room = self.chunk_size.saturating_sub(self.buf.len());
        let taken = data.get(..room.min(data.len())).unwrap_or_default();
        self.buf.extend_from_slice(taken);
        if self.buf.len() >= self.chunk_size {
            self.emit(false)?;
        }
        Ok(taken.len())
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
            .field("buffered", &self.buf.len())
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}
