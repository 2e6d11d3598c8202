//! Unit tests of what the public API cannot reach: the chunk-count limit, the nonce
//! layout, the messages, and readers and writers that fail or pause.

use std::io::{self, Read, Write};

use secrecy::ExposeSecret;

use crate::chunk::{ChunkOpener, ChunkSealer, chunk_nonce};
use crate::{
    DataKey, EncryptionContext, FormatError, Header, KekKind, NoncePrefix, SealWriter, UnsealReader,
};

fn header() -> Header {
    let prefix = NoncePrefix::from_bytes([1, 2, 3, 4, 5, 6, 7]);
    Header::new(KekKind::TpmSealed, "k", 1, 1024, prefix, vec![9; 8]).unwrap()
}

fn keys() -> (DataKey, DataKey) {
    let key = DataKey::generate().unwrap();
    let copy = DataKey::from_slice(key.expose_secret()).unwrap();
    (key, copy)
}

#[test]
fn the_nonce_is_prefix_index_last() {
    let prefix = NoncePrefix::from_bytes([1, 2, 3, 4, 5, 6, 7]);
    let nonce = chunk_nonce(prefix, 0x0a0b_0c0d, true);
    assert_eq!(
        nonce.as_ref(),
        &[1, 2, 3, 4, 5, 6, 7, 0x0a, 0x0b, 0x0c, 0x0d, 1]
    );
    assert_eq!(chunk_nonce(prefix, 0, false).as_ref()[7..], [0, 0, 0, 0, 0]);
}

#[test]
fn at_most_u32_max_chunks() {
    let context = EncryptionContext::new();
    let (sealing, opening) = keys();
    let mut sealer = ChunkSealer::new(&header(), sealing, &context).unwrap();
    sealer.skip_to(u32::MAX - 2);
    let full = sealer.seal_chunk(&[7; 1024], false).unwrap();
    let last = sealer.seal_chunk(&[8; 1024], false).unwrap();
    // Index u32::MAX would be chunk number 2^32.
    assert_eq!(
        sealer.seal_chunk(&[], true),
        Err(FormatError::TooManyChunks)
    );

    let mut opener = ChunkOpener::new(&header(), &opening, &context).unwrap();
    opener.skip_to(u32::MAX - 2);
    assert_eq!(*opener.open_chunk(&full, false).unwrap(), [7; 1024]);
    assert_eq!(*opener.open_chunk(&last, false).unwrap(), [8; 1024]);
    assert_eq!(
        opener.open_chunk(&[0; 16], true),
        Err(FormatError::TooManyChunks)
    );
}

#[test]
fn the_largest_index_is_sealed_and_opened() {
    let context = EncryptionContext::new();
    let (sealing, opening) = keys();
    let mut sealer = ChunkSealer::new(&header(), sealing, &context).unwrap();
    sealer.skip_to(u32::MAX - 1);
    let last = sealer.seal_chunk(b"end", true).unwrap();
    let mut opener = ChunkOpener::new(&header(), &opening, &context).unwrap();
    opener.skip_to(u32::MAX - 1);
    assert_eq!(*opener.open_chunk(&last, true).unwrap(), *b"end");
}

#[test]
fn messages() {
    let cases = [
        (
            FormatError::ChunkAuthentication {
                index: 3,
                last: false,
            },
            "chunk 3 failed authentication: the data, its header, the key or the encryption \
             context differ from what was sealed",
        ),
        (
            FormatError::ChunkAuthentication {
                index: 3,
                last: true,
            },
            "chunk 3, the final one, failed authentication: the sealed data is truncated, or \
             the data, its header, the key or the encryption context differ from what was sealed",
        ),
        (
            FormatError::UnknownVersion(2),
            "unknown sealed-data format version 2 (this build reads version 1)",
        ),
        (
            FormatError::Truncated,
            "the sealed data ends before its final chunk (truncated)",
        ),
        (FormatError::TrailingData, "data follows the final chunk"),
        (
            FormatError::UnknownKekKind(4),
            "unknown key-encryption key kind 0x04 (this build knows 0x01, an HSM AES-256 \
             wrapping key; 0x02, a TPM; 0x03, an HSM AES-256 encryption key)",
        ),
        (
            FormatError::InvalidChunkSize(1000),
            "invalid chunk size 1000: it must be a power of two from 1024 to 16777216",
        ),
    ];
    for (err, message) in cases {
        assert_eq!(err.to_string(), message);
    }
    let io: io::Error = FormatError::Truncated.into();
    assert_eq!(io.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(FormatError::from_io(&io), Some(&FormatError::Truncated));
    assert_eq!(FormatError::from_io(&io::Error::other("x")), None);
}

/// Returns its bytes a few at a time, with an interruption, a pause (`WouldBlock`) and,
/// optionally, a false end (`Ok(0)`) at a given position.
struct Stuttering {
    data: Vec<u8>,
    position: usize,
    calls: usize,
    false_end_at: Option<usize>,
}

impl Stuttering {
    fn new(data: Vec<u8>) -> Self {
        Self {
            data,
            position: 0,
            calls: 0,
            false_end_at: None,
        }
    }
}

impl Read for Stuttering {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        match self.calls % 5 {
            1 => return Err(io::ErrorKind::Interrupted.into()),
            3 => return Err(io::ErrorKind::WouldBlock.into()),
            _ => {}
        }
        if self.false_end_at == Some(self.position) {
            self.false_end_at = None;
            return Ok(0);
        }
        let end = self
            .data
            .len()
            .min(self.position + 700)
            .min(self.position + out.len());
        let end = self
            .false_end_at
            .map_or(end, |stop| end.min(stop.max(self.position)));
        let n = end - self.position;
        out[..n].copy_from_slice(&self.data[self.position..end]);
        self.position = end;
        Ok(n)
    }
}

fn seal(plaintext: &[u8]) -> (Vec<u8>, DataKey) {
    let (sealing, opening) = keys();
    let mut writer =
        SealWriter::new(Vec::new(), &header(), sealing, &EncryptionContext::new()).unwrap();
    writer.write_all(plaintext).unwrap();
    (writer.finish().unwrap(), opening)
}

/// Reads to the end, retrying after `WouldBlock` as a non-blocking caller would.
fn read_all<R: Read>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 333];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
}

fn read_header(input: &mut Stuttering) -> Header {
    loop {
        match Header::read_from(input) {
            Ok((header, _)) => return header,
            // A pause inside the header loses what was read: start over (test only).
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => input.position = 0,
            Err(err) => panic!("{err}"),
        }
    }
}

#[test]
fn a_reader_that_pauses_and_is_interrupted() {
    let plaintext: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let (envelope, key) = seal(&plaintext);
    let mut input = Stuttering::new(envelope);
    let header = read_header(&mut input);
    let mut reader = UnsealReader::new(input, &header, &key, &EncryptionContext::new()).unwrap();
    assert_eq!(read_all(&mut reader).unwrap(), plaintext);
}

#[test]
fn data_after_a_false_end_is_trailing_data() {
    let (mut envelope, key) = seal(b"payload");
    let end = envelope.len();
    envelope.extend_from_slice(b"more");
    let mut input = Stuttering::new(envelope);
    input.false_end_at = Some(end);
    let header = read_header(&mut input);
    let mut reader = UnsealReader::new(input, &header, &key, &EncryptionContext::new()).unwrap();
    let err = read_all(&mut reader).unwrap_err();
    assert_eq!(FormatError::from_io(&err), Some(&FormatError::TrailingData));
}

/// Accepts `budget` bytes, then fails.
struct Failing {
    budget: usize,
}

impl Write for Failing {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.budget == 0 {
            return Err(io::Error::other("disk full"));
        }
        let n = data.len().min(self.budget);
        self.budget -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_writer_that_failed_refuses_everything_after() {
    let (key, _) = keys();
    let context = EncryptionContext::new();
    let mut writer = SealWriter::new(Failing { budget: 100 }, &header(), key, &context).unwrap();
    assert!(
        writer.write_all(&[0; 1000]).is_ok(),
        "one chunk is buffered, not written"
    );
    assert_eq!(
        writer.write_all(&[0; 100]).unwrap_err().to_string(),
        "disk full"
    );
    let err = writer.write(&[0; 1]).unwrap_err();
    assert!(err.to_string().contains("incomplete"), "{err}");
    assert!(writer.flush().is_err());
    assert!(writer.finish().is_err());
}

#[test]
fn a_header_that_cannot_be_written() {
    let (key, _) = keys();
    let context = EncryptionContext::new();
    let err = SealWriter::new(Failing { budget: 0 }, &header(), key, &context).unwrap_err();
    assert_eq!(err.to_string(), "disk full");
}
