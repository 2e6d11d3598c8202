//! The chunk-aligned, zero-copy paths: `SealWriter::seal_from`, `chunk_buffer` and
//! `commit`, and `UnsealReader::next_chunk` and `copy_to`, and the one-pass paths of
//! `write` and `read` for whole chunks. They give the same bytes as the copying paths,
//! interoperate with them both ways, and refuse everything the copying paths refuse.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{self, Read, Write};

use common::{billing, format_error, header_len, pattern, unseal_with};
use sealed_format::{
    DataKey, EncryptionContext, FormatError, Header, KekKind, NoncePrefix, SealWriter, TAG_LEN,
    UnsealReader,
};

const CHUNK: usize = 1024;
const SEALED_CHUNK: usize = CHUNK + TAG_LEN;

/// The sizes where chunking can go wrong.
fn sizes() -> [usize; 8] {
    [
        0,
        1,
        CHUNK - 1,
        CHUNK,
        CHUNK + 1,
        3 * CHUNK,
        3 * CHUNK + 5,
        40 * CHUNK + 999,
    ]
}

/// A fixed header and key, so that every way of sealing must give the same bytes.
fn fixed_header() -> Header {
    Header::new(
        KekKind::HsmAesKeyWrap,
        "disk",
        3,
        CHUNK as u32,
        NoncePrefix::from_bytes([9, 8, 7, 6, 5, 4, 3]),
        vec![0xAA; 40],
    )
    .unwrap()
}

fn key() -> DataKey {
    DataKey::from_slice(&[0x5c; 32]).unwrap()
}

fn writer() -> SealWriter<Vec<u8>> {
    SealWriter::new(Vec::new(), &fixed_header(), key(), &billing()).unwrap()
}

/// Sealed with `write_all`, `step` bytes at a time.
fn seal_by_write(plaintext: &[u8], step: usize) -> Vec<u8> {
    let mut writer = writer();
    for piece in plaintext.chunks(step) {
        writer.write_all(piece).unwrap();
    }
    writer.finish().unwrap()
}

/// Sealed with `seal_from`, the reader giving at most `step` bytes per `read`.
fn seal_by_seal_from(plaintext: &[u8], step: usize) -> Vec<u8> {
    let mut writer = writer();
    let mut source = Trickle::new(plaintext.to_vec(), step);
    assert_eq!(
        writer.seal_from(&mut source).unwrap(),
        plaintext.len() as u64
    );
    writer.finish().unwrap()
}

/// Sealed by filling `chunk_buffer` and committing, at most `step` bytes at a time.
fn seal_by_commit(plaintext: &[u8], step: usize) -> Vec<u8> {
    let mut writer = writer();
    let mut rest = plaintext;
    while !rest.is_empty() {
        let room = writer.chunk_buffer();
        assert!(!room.is_empty());
        let n = room.len().min(step).min(rest.len());
        room[..n].copy_from_slice(&rest[..n]);
        writer.commit(n).unwrap();
        rest = &rest[n..];
    }
    writer.finish().unwrap()
}

/// The payload reader of an envelope.
fn reader(envelope: &[u8]) -> UnsealReader<&[u8]> {
    reader_with(envelope, &billing())
}

fn reader_with<'a>(envelope: &'a [u8], context: &EncryptionContext) -> UnsealReader<&'a [u8]> {
    let mut input = envelope;
    let (header, _) = Header::read_from(&mut input).unwrap();
    UnsealReader::new(input, &header, &key(), context).unwrap()
}

/// Every chunk through `next_chunk`; each is one whole chunk but the final one.
fn open_by_next_chunk(envelope: &[u8]) -> Result<Vec<u8>, FormatError> {
    let mut reader = reader(envelope);
    let mut out = Vec::new();
    loop {
        match reader.next_chunk() {
            Ok(Some(plaintext)) => {
                assert!(!plaintext.is_empty());
                assert!(plaintext.len() <= CHUNK);
                if plaintext.len() < CHUNK {
                    // Only the final chunk is short: the end must come next.
                    assert!(out.len() % CHUNK == 0);
                }
                out.extend_from_slice(plaintext);
            }
            Ok(None) => {
                // The end stays the end.
                assert!(reader.next_chunk().unwrap().is_none());
                assert_eq!(reader.read(&mut [0; 10]).unwrap(), 0);
                return Ok(out);
            }
            Err(err) => {
                // A refusal stays a refusal.
                let again = reader.next_chunk().unwrap_err();
                assert_eq!(FormatError::from_io(&again), FormatError::from_io(&err));
                return Err(format_error(err));
            }
        }
    }
}

fn open_by_copy_to(envelope: &[u8]) -> Result<Vec<u8>, FormatError> {
    let mut reader = reader(envelope);
    let mut out = Vec::new();
    let n = reader.copy_to(&mut out).map_err(format_error)?;
    assert_eq!(n, out.len() as u64);
    Ok(out)
}

/// A reader that gives at most `step` bytes per call, and is interrupted every third
/// call.
struct Trickle {
    data: Vec<u8>,
    position: usize,
    step: usize,
    calls: usize,
}

impl Trickle {
    fn new(data: Vec<u8>, step: usize) -> Self {
        Self {
            data,
            position: 0,
            step,
            calls: 0,
        }
    }
}

impl Read for Trickle {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls % 3 == 0 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = out
            .len()
            .min(self.step)
            .min(self.data.len() - self.position);
        out[..n].copy_from_slice(&self.data[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

#[test]
fn every_way_of_sealing_gives_the_same_bytes() {
    for len in sizes() {
        let plaintext = pattern(len);
        let expected = seal_by_write(&plaintext, 7);
        // Header, full chunks, then the final chunk: always shorter, empty if the
        // plaintext ends at a chunk boundary.
        assert_eq!(
            expected.len(),
            header_len(&expected) + (len / CHUNK) * SEALED_CHUNK + len % CHUNK + TAG_LEN,
            "{len} bytes"
        );
        for step in [1, 100, CHUNK - 1, CHUNK, CHUNK + 1, 64 * 1024] {
            assert!(
                seal_by_write(&plaintext, step) == expected,
                "write {len}/{step}"
            );
            assert!(
                seal_by_seal_from(&plaintext, step) == expected,
                "seal_from {len}/{step}"
            );
            assert!(
                seal_by_commit(&plaintext, step) == expected,
                "commit {len}/{step}"
            );
        }
    }
}

#[test]
fn round_trips_both_ways_between_old_and_new() {
    for len in sizes() {
        let plaintext = pattern(len);
        let by_write = seal_by_write(&plaintext, 333);
        let by_seal_from = seal_by_seal_from(&plaintext, 4096);
        for envelope in [&by_write, &by_seal_from] {
            // Through `read`, in small steps (copies) and in whole chunks (one pass).
            for step in [1, 333, CHUNK, 3 * CHUNK + 7] {
                let opened = unseal_with(envelope, &key(), &billing(), step).unwrap();
                assert!(opened == plaintext, "read {len}/{step}");
            }
            assert!(open_by_next_chunk(envelope).unwrap() == plaintext, "{len}");
            assert!(open_by_copy_to(envelope).unwrap() == plaintext, "{len}");
        }
    }
}

#[test]
fn an_input_that_ends_at_a_chunk_boundary_gets_an_empty_final_chunk() {
    for len in [0, CHUNK, 2 * CHUNK] {
        let envelope = seal_by_seal_from(&pattern(len), 64 * 1024);
        let payload = envelope.len() - header_len(&envelope);
        assert_eq!(payload, (len / CHUNK) * SEALED_CHUNK + TAG_LEN);
        let mut reader = reader(&envelope);
        for _ in 0..len / CHUNK {
            assert_eq!(reader.next_chunk().unwrap().unwrap().len(), CHUNK);
        }
        // The empty final chunk is skipped: the end comes next.
        assert!(reader.next_chunk().unwrap().is_none());
    }
}

#[test]
fn seal_from_mixes_with_write() {
    let plaintext = pattern(5 * CHUNK + 321);
    let expected = seal_by_write(&plaintext, 1000);
    let mut writer = writer();
    writer.write_all(&plaintext[..100]).unwrap();
    let mut middle = &plaintext[100..3 * CHUNK + 50];
    assert_eq!(
        writer.seal_from(&mut middle).unwrap(),
        (3 * CHUNK - 50) as u64
    );
    // A second source continues where the first stopped.
    let mut rest = &plaintext[3 * CHUNK + 50..4 * CHUNK];
    writer.seal_from(&mut rest).unwrap();
    let room = writer.chunk_buffer();
    room[..21].copy_from_slice(&plaintext[4 * CHUNK..4 * CHUNK + 21]);
    writer.commit(21).unwrap();
    writer.write_all(&plaintext[4 * CHUNK + 21..]).unwrap();
    assert!(writer.finish().unwrap() == expected);
}

/// Gives `data`, but pauses (`WouldBlock`) once at each position in `pauses`.
struct Pausing {
    data: Vec<u8>,
    position: usize,
    pauses: Vec<usize>,
}

impl Read for Pausing {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pauses.first() == Some(&self.position) {
            self.pauses.remove(0);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let stop = self.pauses.first().copied().unwrap_or(self.data.len());
        let n = out.len().min(stop - self.position);
        out[..n].copy_from_slice(&self.data[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

#[test]
fn seal_from_resumes_after_the_reader_pauses() {
    let plaintext = pattern(4 * CHUNK + 10);
    let mut source = Pausing {
        data: plaintext.clone(),
        position: 0,
        pauses: vec![0, 500, CHUNK, 2 * CHUNK + 3, 4 * CHUNK + 10],
    };
    let mut writer = writer();
    let mut total = 0;
    let mut pauses = 0;
    loop {
        match writer.seal_from(&mut source) {
            Ok(n) => {
                total += n;
                break;
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => pauses += 1,
            Err(err) => panic!("{err}"),
        }
    }
    assert_eq!(pauses, 5);
    // Each call counts only what it read; nothing was lost across the pauses.
    assert!(total <= plaintext.len() as u64);
    assert!(writer.finish().unwrap() == seal_by_write(&plaintext, 64 * 1024));
}

#[test]
fn commit_refuses_more_than_the_room_left() {
    let plaintext = pattern(2 * CHUNK + 3);
    let mut writer = writer();
    writer.write_all(&plaintext[..10]).unwrap();
    assert_eq!(writer.chunk_buffer().len(), CHUNK - 10);
    let err = writer.commit(CHUNK - 9).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    // Unchanged, and still usable.
    assert_eq!(writer.chunk_buffer().len(), CHUNK - 10);
    writer.commit(0).unwrap();
    writer.write_all(&plaintext[10..]).unwrap();
    assert!(writer.finish().unwrap() == seal_by_write(&plaintext, 5));
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
fn a_failed_output_breaks_seal_from_and_commit() {
    let header_len = fixed_header().encode().len();
    let mut writer = SealWriter::new(
        Failing {
            budget: header_len + 100,
        },
        &fixed_header(),
        key(),
        &billing(),
    )
    .unwrap();
    let err = writer.seal_from(&mut &pattern(3 * CHUNK)[..]).unwrap_err();
    assert_eq!(err.to_string(), "disk full");
    for err in [
        writer.seal_from(&mut &[1u8; 10][..]).unwrap_err(),
        writer.commit(1).unwrap_err(),
        writer.write(&[1]).unwrap_err(),
    ] {
        assert!(err.to_string().contains("incomplete"), "{err}");
    }
    assert!(writer.finish().is_err());
}

/// The envelope of the refusal tests: 3 full chunks and a final one of 100 bytes.
fn envelope() -> (Vec<u8>, usize) {
    let envelope = seal_by_write(&pattern(3 * CHUNK + 100), 1000);
    let header = header_len(&envelope);
    (envelope, header)
}

fn auth(index: u32, last: bool) -> Result<Vec<u8>, FormatError> {
    Err(FormatError::ChunkAuthentication { index, last })
}

/// Both new ways of opening give the same refusal as `read` does.
fn refused(envelope: &[u8]) -> Result<Vec<u8>, FormatError> {
    let by_next_chunk = open_by_next_chunk(envelope);
    assert_eq!(open_by_copy_to(envelope), by_next_chunk);
    for step in [100, CHUNK] {
        assert_eq!(
            unseal_with(envelope, &key(), &billing(), step),
            by_next_chunk
        );
    }
    by_next_chunk
}

#[test]
fn refusals_through_next_chunk_and_copy_to() {
    let (envelope, header) = envelope();
    assert!(refused(&envelope).is_ok());

    // Truncated at a chunk boundary, inside the final tag, inside a chunk.
    for (cut, expected) in [
        (header, Err(FormatError::Truncated)),
        (header + 2 * SEALED_CHUNK, Err(FormatError::Truncated)),
        (envelope.len() - 100 - TAG_LEN, Err(FormatError::Truncated)),
        (envelope.len() - 1, auth(3, true)),
        (header + SEALED_CHUNK + 500, auth(1, true)),
    ] {
        assert_eq!(refused(&envelope[..cut]), expected, "cut at {cut}");
    }

    // Two chunks swapped.
    let mut swapped = envelope.clone();
    swapped[header..header + 2 * SEALED_CHUNK].rotate_left(SEALED_CHUNK);
    assert_eq!(refused(&swapped), auth(0, false));

    // A flipped bit in every chunk, in its ciphertext and in its tag.
    for (offset, index, last) in [
        (header + 5, 0, false),
        (header + SEALED_CHUNK + CHUNK + 3, 1, false),
        (header + 2 * SEALED_CHUNK + 900, 2, false),
        (envelope.len() - 1, 3, true),
    ] {
        let mut flipped = envelope.clone();
        flipped[offset] ^= 0x10;
        assert_eq!(refused(&flipped), auth(index, last), "at {offset}");
    }

    // Bytes appended to the byte stream move where the final chunk seems to end.
    let mut appended = envelope.clone();
    appended.extend_from_slice(b"more");
    assert_eq!(refused(&appended), auth(3, true));
}

#[test]
fn the_wrong_context_is_refused_through_next_chunk() {
    let (envelope, _) = envelope();
    let mut reader = reader_with(&envelope, &common::context(&[("app", "payroll")]));
    let err = reader.next_chunk().unwrap_err();
    assert_eq!(
        FormatError::from_io(&err),
        Some(&FormatError::ChunkAuthentication {
            index: 0,
            last: false
        })
    );
}

/// Gives `data`, then a false end (`Ok(0)`) at `false_end`, then the rest.
struct FalseEnd {
    data: Vec<u8>,
    position: usize,
    false_end: Option<usize>,
}

impl Read for FalseEnd {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.false_end == Some(self.position) {
            self.false_end = None;
            return Ok(0);
        }
        let stop = self.false_end.unwrap_or(self.data.len());
        let n = out.len().min(stop - self.position);
        out[..n].copy_from_slice(&self.data[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

#[test]
fn data_after_the_final_chunk_is_trailing_data_through_next_chunk() {
    let (mut envelope, header) = envelope();
    let end = envelope.len();
    envelope.extend_from_slice(b"more");
    let mut input = FalseEnd {
        data: envelope,
        position: header,
        false_end: Some(end),
    };
    let (parsed, _) = Header::parse(&input.data).unwrap();
    let mut reader = UnsealReader::new(&mut input, &parsed, &key(), &billing()).unwrap();
    let mut opened = 0;
    let err = loop {
        match reader.next_chunk() {
            Ok(Some(plaintext)) => opened += plaintext.len(),
            Ok(None) => panic!("trailing data was not noticed"),
            Err(err) => break err,
        }
    };
    // Every chunk authenticated; what follows the final one is refused.
    assert_eq!(opened, 3 * CHUNK + 100);
    assert_eq!(FormatError::from_io(&err), Some(&FormatError::TrailingData));
    let again = reader.copy_to(&mut io::sink()).unwrap_err();
    assert_eq!(
        FormatError::from_io(&again),
        Some(&FormatError::TrailingData)
    );
}

#[test]
fn a_refused_chunk_read_whole_leaves_the_callers_buffer_wiped() {
    let (mut envelope, header) = envelope();
    envelope[header + SEALED_CHUNK + 7] ^= 1;
    let mut reader = reader(&envelope);
    let mut buf = vec![0xEE; 2 * CHUNK];
    // Chunk 0 is opened straight into the buffer...
    assert_eq!(reader.read(&mut buf).unwrap(), CHUNK);
    assert!(buf[..CHUNK] == pattern(CHUNK)[..]);
    // ...and chunk 1, which fails, leaves no unauthenticated plaintext in it.
    let err = reader.read(&mut buf).unwrap_err();
    assert_eq!(
        FormatError::from_io(&err),
        Some(&FormatError::ChunkAuthentication {
            index: 1,
            last: false
        })
    );
    assert!(buf[..CHUNK].iter().all(|&b| b == 0));
    assert!(buf[CHUNK..].iter().all(|&b| b == 0xEE));
}

#[test]
fn read_and_next_chunk_mix() {
    let plaintext = pattern(3 * CHUNK + 100);
    let envelope = seal_by_write(&plaintext, 1000);
    let mut reader = reader(&envelope);
    let mut head = [0u8; 100];
    reader.read_exact(&mut head).unwrap();
    // The rest of chunk 0 first, then whole chunks.
    let rest = reader.next_chunk().unwrap().unwrap().to_vec();
    assert_eq!(rest.len(), CHUNK - 100);
    let mut whole = vec![0u8; CHUNK];
    reader.read_exact(&mut whole).unwrap();
    let mut out = head.to_vec();
    out.extend_from_slice(&rest);
    out.extend_from_slice(&whole);
    let mut tail = Vec::new();
    reader.copy_to(&mut tail).unwrap();
    out.extend_from_slice(&tail);
    assert!(out == plaintext);
}

/// Accepts at most `step` bytes per write, and fails once after `fail_at` bytes.
struct Choppy {
    out: Vec<u8>,
    step: usize,
    fail_at: Option<usize>,
}

impl Write for Choppy {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(at) = self.fail_at {
            if self.out.len() >= at {
                self.fail_at = None;
                return Err(io::Error::other("full for now"));
            }
        }
        let n = data.len().min(self.step);
        self.out.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn copy_to_resumes_after_the_output_fails() {
    let plaintext = pattern(3 * CHUNK + 100);
    let envelope = seal_by_write(&plaintext, 1000);
    let mut reader = reader(&envelope);
    let mut out = Choppy {
        out: Vec::new(),
        step: 300,
        fail_at: Some(CHUNK + 600),
    };
    let err = reader.copy_to(&mut out).unwrap_err();
    assert_eq!(err.to_string(), "full for now");
    let first = out.out.len() as u64;
    let rest = reader.copy_to(&mut out).unwrap();
    assert_eq!(first + rest, plaintext.len() as u64);
    assert!(out.out == plaintext);
}
