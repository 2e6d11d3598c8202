//! Unsealing a stream: one chunk at a time, plaintext released only once its chunk
//! authenticates, and EOF only after the final chunk with nothing behind it.

use std::fmt;
use std::io::{self, Read, Write};

use zeroize::{Zeroize, Zeroizing};

use crate::chunk::{ChunkOpener, TAG_LEN};
use crate::context::EncryptionContext;
use crate::error::FormatError;
use crate::header::Header;
use crate::key::DataKey;
use crate::wire;

/// Where the reader is.
#[derive(Debug)]
enum State {
    /// More chunks to come.
    Chunks,
    /// The final chunk is open; what follows must be nothing.
    FinalOpened,
    /// The end, checked.
    End,
    /// Refused; every later call returns the same error.
    Failed(FormatError),
}

/// Reads the plaintext of sealed data whose header has already been read (with
/// [`Header::read_from`]), in constant memory: one chunk buffer.
///
/// Each chunk is a full `chunk size + 16` bytes, except the final one, which is shorter:
/// the reader takes a chunk that ends with the data as the final one. Plaintext arrives
/// chunk by chunk, each authenticated before any of it is returned; the data as a whole
/// is complete and unaltered only once `read` returns `Ok(0)` (or
/// [`UnsealReader::next_chunk`] `None`, or [`UnsealReader::copy_to`] its total). Errors
/// hold a [`FormatError`] (see [`FormatError::from_io`]); other I/O errors of the inner
/// reader pass through and the call may be retried.
///
/// Three ways out, which mix freely:
/// - [`Read`]: the plaintext is copied into the caller's buffer, except that a buffer
///   that holds a whole chunk, given at a chunk boundary, receives it straight from the
///   cipher, with no copy;
/// - [`UnsealReader::next_chunk`]: each chunk's plaintext, lent from the reader's own
///   buffer where it was opened;
/// - [`UnsealReader::copy_to`]: every chunk's plaintext written from that buffer to a
///   [`Write`].
pub struct UnsealReader<R: Read> {
    inner: R,
    opener: ChunkOpener,
    /// One sealed chunk, opened in place; always `chunk size + 16` long.
    buf: Zeroizing<Vec<u8>>,
    chunk_size: usize,
    /// Sealed bytes read into `buf` so far.
    filled: usize,
    /// The plaintext not yet returned: `buf[start..end]`.
    start: usize,
    end: usize,
    /// `buf[..opened]` may still hold plaintext of the chunk opened last, handed out
    /// without being wiped: the next chunk overwrites it, and what it does not is wiped.
    opened: usize,
    state: State,
}

impl<R: Read> UnsealReader<R> {
    /// A reader of the payload that follows `header` in `inner`.
    ///
    /// # Errors
    /// [`FormatError::Crypto`] if the cryptographic library refuses the key.
    pub fn new(
        inner: R,
        header: &Header,
        key: &DataKey,
        context: &EncryptionContext,
    ) -> Result<Self, FormatError> {
        let opener = ChunkOpener::new(header, key, context)?;
        let chunk_size = usize::try_from(header.chunk_size()).unwrap_or(usize::MAX);
        Ok(Self {
            inner,
            opener,
            buf: Zeroizing::new(vec![0; chunk_size.saturating_add(TAG_LEN)]),
            chunk_size,
            filled: 0,
            start: 0,
            end: 0,
            opened: 0,
            state: State::Chunks,
        })
    }

    /// The plaintext of the next chunk, authenticated, lent from the reader's own buffer
    /// where it was opened in place: no copy is made. If a [`Read::read`] left part of a
    /// chunk unread, that part comes first. Never empty: an empty final chunk is skipped.
    ///
    /// `None` means the clean end: the final chunk has been opened and nothing follows
    /// it, so the data is complete and unaltered. The plaintext lent stays in the buffer
    /// until the next call, which overwrites or wipes it (as does dropping the reader).
    ///
    /// # Errors
    /// As [`Read::read`]: an error holding a [`FormatError`] for a refusal (truncation,
    /// a chunk that does not authenticate, trailing data), after which every call
    /// returns it again and the buffer has been wiped; or an I/O error of the inner
    /// reader, after which the call may be retried.
    ///
    /// # Example
    ///
    /// ```
    /// use std::io::Write;
    /// use sealed_format::{DataKey, EncryptionContext, Header, KekKind, NoncePrefix, SealWriter, UnsealReader};
    /// use secrecy::ExposeSecret;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let key = DataKey::generate()?;
    /// let opening = DataKey::from_slice(key.expose_secret())?;
    /// let header = Header::new(KekKind::HsmAesKeyWrap, "disk", 1, 1024, NoncePrefix::random()?, vec![0xAA; 40])?;
    /// let mut writer = SealWriter::new(Vec::new(), &header, key, &EncryptionContext::new())?;
    /// writer.write_all(&[7u8; 3000])?;
    /// let sealed = writer.finish()?;
    ///
    /// let mut input = &sealed[..];
    /// let (header, _) = Header::read_from(&mut input)?;
    /// let mut reader = UnsealReader::new(input, &header, &opening, &EncryptionContext::new())?;
    /// let mut lengths = Vec::new();
    /// while let Some(plaintext) = reader.next_chunk()? {
    ///     lengths.push(plaintext.len()); // authenticated; use it before the next call
    /// }
    /// assert_eq!(lengths, [1024, 1024, 952]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        loop {
            if let State::Failed(err) = &self.state {
                return Err(err.clone().into());
            }
            if self.start < self.end {
                let (start, end) = (self.start, self.end);
                self.start = end;
                return Ok(Some(self.buf.get(start..end).unwrap_or_default()));
            }
            match self.state {
                State::Chunks => self.open_next()?,
                State::FinalOpened => self.check_end()?,
                State::End | State::Failed(_) => return Ok(None),
            }
        }
    }

    /// Writes all the plaintext to `out`, chunk by chunk straight from the reader's
    /// buffer (see [`UnsealReader::next_chunk`]), and returns the number of bytes
    /// written. Only authenticated plaintext is written; when it returns `Ok`, the data
    /// was complete and unaltered. After a refusal, `out` has received the chunks before
    /// the refused one, and must be discarded.
    ///
    /// # Errors
    /// As [`UnsealReader::next_chunk`], and an error of `out`
    /// ([`io::ErrorKind::Interrupted`] aside, which is retried). After an error of
    /// `out` or of the inner reader, calling again resumes where it stopped; the count
    /// then starts again from zero.
    pub fn copy_to<W: Write + ?Sized>(&mut self, out: &mut W) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            if let State::Failed(err) = &self.state {
                return Err(err.clone().into());
            }
            if self.start < self.end {
                let pending = self.buf.get(self.start..self.end).unwrap_or_default();
                match out.write(pending) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            "the output accepted no more plaintext",
                        ));
                    }
                    Ok(n) => {
                        let n = n.min(pending.len());
                        self.start = self.start.saturating_add(n);
                        total = total.saturating_add(n as u64);
                    }
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(err),
                }
                continue;
            }
            match self.state {
                State::Chunks => self.open_next()?,
                State::FinalOpened => self.check_end()?,
                State::End | State::Failed(_) => return Ok(total),
            }
        }
    }

    /// The bytes reserved for a sealed chunk: one, whatever the stream's length.
    #[must_use]
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The inner reader, wherever it stands.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Reads the next sealed chunk into `buf`; returns whether it ended with the data
    /// (it is then the final one). Plaintext of the chunk before that the new one did
    /// not overwrite is wiped, even if reading failed.
    fn read_sealed(&mut self) -> io::Result<bool> {
        let result = wire::fill(&mut self.inner, &mut self.buf, &mut self.filled);
        if let Some(stale) = self.buf.get_mut(self.filled..self.opened) {
            stale.zeroize();
        }
        self.opened = 0;
        result
    }

    /// Reads the next chunk and opens it in place in `buf`.
    fn open_next(&mut self) -> io::Result<()> {
        // A chunk that ends with the data is shorter than a full one, so it is the final.
        let ended = self.read_sealed()?;
        let sealed = self.buf.get_mut(..self.filled).unwrap_or_default();
        self.filled = 0;
        match self.opener.open_in_place(sealed, ended) {
            Ok(len) => {
                (self.start, self.end, self.opened) = (0, len, len);
                if ended {
                    self.state = State::FinalOpened;
                }
                Ok(())
            }
            Err(err) => Err(self.fail(err)),
        }
    }

    /// Reads the next chunk and opens it straight into `out`, which holds a whole chunk;
    /// returns the length of its plaintext.
    fn open_next_into(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let ended = self.read_sealed()?;
        let sealed = self.buf.get(..self.filled).unwrap_or_default();
        self.filled = 0;
        match self.opener.open_to(sealed, out, ended) {
            Ok(len) => {
                if ended {
                    self.state = State::FinalOpened;
                }
                Ok(len)
            }
            Err(err) => Err(self.fail(err)),
        }
    }

    /// Checks that nothing follows the final chunk.
    fn check_end(&mut self) -> io::Result<()> {
        let mut probe = [0u8; 1];
        let mut filled = 0;
        if wire::fill(&mut self.inner, &mut probe, &mut filled)? {
            if let Some(stale) = self.buf.get_mut(..self.opened) {
                stale.zeroize();
            }
            self.opened = 0;
            self.state = State::End;
            return Ok(());
        }
        Err(self.fail(FormatError::TrailingData))
    }

    fn fail(&mut self, err: FormatError) -> io::Error {
        self.buf.as_mut_slice().zeroize();
        (self.start, self.end, self.opened) = (0, 0, 0);
        self.state = State::Failed(err.clone());
        err.into()
    }
}

impl<R: Read> Read for UnsealReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if let State::Failed(err) = &self.state {
                return Err(err.clone().into());
            }
            if let Some(plaintext) = self.buf.get_mut(self.start..self.end) {
                if !plaintext.is_empty() {
                    let n = plaintext.len().min(out.len());
                    let (given, _) = plaintext.split_at_mut(n);
                    let (dest, _) = out.split_at_mut(n);
                    dest.copy_from_slice(given);
                    given.zeroize();
                    self.start += n;
                    return Ok(n);
                }
            }
            match self.state {
                // A whole chunk fits: open it straight into `out`, with no copy.
                State::Chunks if out.len() >= self.chunk_size => {
                    let n = self.open_next_into(out)?;
                    if n > 0 {
                        return Ok(n);
                    }
                }
                State::Chunks => self.open_next()?,
                State::FinalOpened => self.check_end()?,
                State::End | State::Failed(_) => return Ok(0),
            }
        }
    }
}

impl<R: Read> fmt::Debug for UnsealReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnsealReader")
            .field("opener", &self.opener)
            .field("pending", &self.end.saturating_sub(self.start))
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
impl<R: Read> UnsealReader<R> {
    /// The whole chunk buffer, to check what is left in it.
    pub(crate) fn buffer(&self) -> &[u8] {
        &self.buf
    }
}
