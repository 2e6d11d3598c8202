//! The chunk-level API, for callers that frame chunks themselves: it interoperates with
//! the streaming writer and reader, and refuses misuse.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{billing, header, key_pair, pattern};
use sealed_format::{
    ChunkOpener, ChunkSealer, EncryptionContext, FormatError, Header, TAG_LEN, UnsealReader,
};
use std::io::Read;

const CHUNK: usize = 1024;

/// Seals `plaintext` chunk by chunk with a `ChunkSealer`.
fn seal_chunks(sealer: &mut ChunkSealer, plaintext: &[u8]) -> Vec<Vec<u8>> {
    let full = plaintext.len() / CHUNK;
    let mut chunks: Vec<Vec<u8>> = plaintext
        .chunks_exact(CHUNK)
        .map(|chunk| sealer.seal_chunk(chunk, false).unwrap())
        .collect();
    chunks.push(sealer.seal_chunk(&plaintext[full * CHUNK..], true).unwrap());
    chunks
}

#[test]
fn chunks_sealed_one_by_one_read_as_a_stream() {
    let header = header(CHUNK as u32);
    let (sealing, opening) = key_pair();
    let plaintext = pattern(5 * CHUNK + 77);
    let mut sealer = ChunkSealer::new(&header, sealing, &billing()).unwrap();
    let chunks = seal_chunks(&mut sealer, &plaintext);
    assert!(sealer.is_finished());
    let stream = chunks.concat();
    let mut reader = UnsealReader::new(&stream[..], &header, &opening, &billing()).unwrap();
    let mut unsealed = Vec::new();
    reader.read_to_end(&mut unsealed).unwrap();
    assert_eq!(unsealed, plaintext);
}

#[test]
fn a_stream_opened_chunk_by_chunk() {
    let (envelope, key) = common::seal(CHUNK as u32, &pattern(2 * CHUNK));
    let (header, start) = Header::parse(&envelope).unwrap();
    let mut opener = ChunkOpener::new(&header, &key, &billing()).unwrap();
    let payload = &envelope[start..];
    let sealed: Vec<&[u8]> = payload.chunks(CHUNK + TAG_LEN).collect();
    assert_eq!(sealed.len(), 3);
    assert_eq!(
        *opener.open_chunk(sealed[0], false).unwrap(),
        pattern(CHUNK)
    );
    assert_eq!(opener.open_chunk(sealed[1], false).unwrap().len(), CHUNK);
    assert!(!opener.is_finished());
    assert!(opener.open_chunk(sealed[2], true).unwrap().is_empty());
    assert!(opener.is_finished());
    // Anything after the final chunk, even a valid chunk, is trailing data.
    assert_eq!(
        opener.open_chunk(sealed[2], true),
        Err(FormatError::TrailingData)
    );
    assert_eq!(
        opener.open_chunk(sealed[0], false),
        Err(FormatError::TrailingData)
    );
}

#[test]
fn a_final_chunk_of_another_envelope_after_the_final_chunk() {
    let header = header(CHUNK as u32);
    let (sealing, opening) = key_pair();
    let mut sealer = ChunkSealer::new(&header, sealing, &billing()).unwrap();
    let chunks = seal_chunks(&mut sealer, b"short");
    let (other, _) = common::seal(CHUNK as u32, b"other");
    let other_final = &other[common::header_len(&other)..];
    let mut opener = ChunkOpener::new(&header, &opening, &billing()).unwrap();
    assert_eq!(&*opener.open_chunk(&chunks[0], true).unwrap(), b"short");
    assert_eq!(
        opener.open_chunk(other_final, true),
        Err(FormatError::TrailingData)
    );
}

#[test]
fn a_failed_chunk_can_be_neither_skipped_nor_used() {
    let header = header(CHUNK as u32);
    let (sealing, opening) = key_pair();
    let mut sealer = ChunkSealer::new(&header, sealing, &billing()).unwrap();
    let chunks = seal_chunks(&mut sealer, &pattern(2 * CHUNK + 1));
    let mut opener = ChunkOpener::new(&header, &opening, &billing()).unwrap();
    let auth = |index| Err(FormatError::ChunkAuthentication { index, last: false });
    assert_eq!(opener.open_chunk(&chunks[1], false), auth(0));
    let mut flipped = chunks[0].clone();
    flipped[3] ^= 4;
    assert_eq!(opener.open_chunk(&flipped, false), auth(0));
    // The position did not move: chunk 0 itself still opens, then chunk 1.
    assert!(opener.open_chunk(&chunks[0], false).is_ok());
    assert!(opener.open_chunk(&chunks[1], false).is_ok());
    assert_eq!(opener.open_chunk(&chunks[2], true).unwrap().len(), 1);
}

#[test]
fn chunk_lengths_are_enforced_when_sealing() {
    let header = header(CHUNK as u32);
    let (sealing, _) = key_pair();
    let mut sealer = ChunkSealer::new(&header, sealing, &EncryptionContext::new()).unwrap();
    let length = |len, last| {
        Err(FormatError::ChunkLength {
            index: 0,
            len,
            last,
        })
    };
    assert_eq!(
        sealer.seal_chunk(&[0; CHUNK - 1], false),
        length(CHUNK - 1, false)
    );
    assert_eq!(
        sealer.seal_chunk(&[0; CHUNK + 1], false),
        length(CHUNK + 1, false)
    );
    assert_eq!(sealer.seal_chunk(&[], false), length(0, false));
    assert_eq!(sealer.seal_chunk(&[0; CHUNK], true), length(CHUNK, true));
    assert_eq!(
        sealer.seal_chunk(&[0; CHUNK], false).unwrap().len(),
        CHUNK + TAG_LEN
    );
    assert_eq!(sealer.seal_chunk(&[], true).unwrap().len(), TAG_LEN);
    assert_eq!(sealer.seal_chunk(&[], true), Err(FormatError::TrailingData));
}

#[test]
fn chunk_lengths_are_enforced_when_opening() {
    let header = header(CHUNK as u32);
    let (_, opening) = key_pair();
    let mut opener = ChunkOpener::new(&header, &opening, &billing()).unwrap();
    let full = CHUNK + TAG_LEN;
    let length = |len, last| {
        Err(FormatError::ChunkLength {
            index: 0,
            len,
            last,
        })
    };
    assert_eq!(
        opener.open_chunk(&vec![0; full - 1], false),
        length(full - 1, false)
    );
    assert_eq!(
        opener.open_chunk(&vec![0; full + 1], false),
        length(full + 1, false)
    );
    assert_eq!(opener.open_chunk(&vec![0; full], true), length(full, true));
    assert_eq!(
        opener.open_chunk(&[0; TAG_LEN - 1], true),
        Err(FormatError::Truncated)
    );
    assert_eq!(opener.open_chunk(&[], true), Err(FormatError::Truncated));
    assert_eq!(
        opener.open_chunk(&[0; TAG_LEN], true),
        Err(FormatError::ChunkAuthentication {
            index: 0,
            last: true
        })
    );
}

#[test]
fn debug_shows_no_key_and_no_plaintext() {
    let header = header(CHUNK as u32);
    let (sealing, opening) = key_pair();
    let sealer = ChunkSealer::new(&header, sealing, &billing()).unwrap();
    let opener = ChunkOpener::new(&header, &opening, &billing()).unwrap();
    let mut writer =
        sealed_format::SealWriter::new(Vec::new(), &header, opening_copy(&opening), &billing())
            .unwrap();
    std::io::Write::write_all(&mut writer, b"SECRET PLAINTEXT").unwrap();
    let shown = format!("{sealer:?} {opener:?} {writer:?} {opening:?} {header:?}");
    assert!(shown.contains("REDACTED"), "{shown}");
    assert!(!shown.contains("SECRET"), "{shown}");
    let key_bytes = format!("{:?}", secrecy::ExposeSecret::expose_secret(&opening));
    assert!(
        !shown.contains(&key_bytes[1..key_bytes.len() - 1]),
        "{shown}"
    );
}

fn opening_copy(key: &sealed_format::DataKey) -> sealed_format::DataKey {
    sealed_format::DataKey::from_slice(secrecy::ExposeSecret::expose_secret(key)).unwrap()
}
