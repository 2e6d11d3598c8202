//! Unsealing a stream: one chunk at a time, plaintext released only once its chunk
//! authenticates, and EOF only after the final chunk with nothing behind it.

use std::fmt;
use std::io::{self, Read};

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
/// is complete and unaltered only once `read` returns `Ok(0)`. Errors hold a
/// [`FormatError`] (see [`FormatError::from_io`]); other I/O errors of the inner reader
/// pass through and the read may be retried.
pub struct UnsealReader<R: Read> {
    inner: R,
    opener: ChunkOpener,
    /// One sealed chunk, opened in place; always `chunk size + 16` long.
    buf: Zeroizing<Vec<u8>>,
    /// Sealed bytes read into `buf` so far.
    filled: usize,
    /// The plaintext not yet returned: `buf[start..end]`.
    start: usize,
    end: usize,
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
            filled: 0,
            start: 0,
            end: 0,
            state: State::Chunks,
        })
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

    /// Reads and opens the next chunk into `buf`.
    fn next_chunk(&mut self) -> io::Result<()> {
        let ended = wire::fill(&mut self.inner, &mut self.buf, &mut self.filled)?;
        // A chunk that ends with the data is shorter than a full one, so it is the final.
        let sealed = self.buf.get_mut(..self.filled).unwrap_or_default();
        self.filled = 0;
        match self.opener.open_in_place(sealed, ended) {
            Ok(len) => {
                (self.start, self.end) = (0, len);
                if ended {
                    self.state = State::FinalOpened;
                }
                Ok(())
            }
            Err(err) => Err(self.fail(err)),
        }
    }

    /// Checks that nothing follows the final chunk.
    fn check_end(&mut self) -> io::Result<()> {
        let mut probe = [0u8; 1];
        let mut filled = 0;
        if wire::fill(&mut self.inner, &mut probe, &mut filled)? {
            self.state = State::End;
            return Ok(());
        }
        Err(self.fail(FormatError::TrailingData))
    }

    fn fail(&mut self, err: FormatError) -> io::Error {
        self.buf.as_mut_slice().zeroize();
        (self.start, self.end) = (0, 0);
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
                State::Chunks => self.next_chunk()?,
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
