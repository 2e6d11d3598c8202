//! Big-endian reading and writing, bounds-checked: a short read is `None`, never a panic.

use std::io::{self, Read};

/// Reads fields off the front of a byte slice.
pub(crate) struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// The next `len` bytes, or `None` if fewer remain.
    pub(crate) fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.rest.split_at_checked(len)?;
        self.rest = tail;
        Some(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        let [byte] = self.array()?;
        Some(byte)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

/// Appends `bytes` after its length as a u16. Callers have checked the length against
/// limits far below `u16::MAX`; were it ever over, the length saturates and the result
/// fails to parse rather than reading as something else.
pub(crate) fn put_u16_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Reads into `buf[*filled..]` until it is full or the reader ends; `*filled` counts what
/// has arrived, so a call cut short by an error can be resumed. Returns whether the
/// reader ended.
pub(crate) fn fill<R: Read + ?Sized>(
    reader: &mut R,
    buf: &mut [u8],
    filled: &mut usize,
) -> io::Result<bool> {
    loop {
        let Some(space) = buf.get_mut(*filled..) else {
            return Ok(false);
        };
        if space.is_empty() {
            return Ok(false);
        }
        match reader.read(space) {
            Ok(0) => return Ok(true),
            Ok(n) => *filled = filled.saturating_add(n).min(buf.len()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}
