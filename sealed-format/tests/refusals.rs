//! Every way sealed data can be wrong, each refused with its exact error.
//!
//! The envelope under test: 1 KiB chunks, 3 full chunks and a final one of 100 bytes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{billing, context, header_len, key_pair, seal, unseal, unseal_with};
use sealed_format::{FormatError, KeyNameProblem, TAG_LEN};

const CHUNK: usize = 1024;
const SEALED_CHUNK: usize = CHUNK + TAG_LEN;
const PLAINTEXT_LEN: usize = 3 * CHUNK + 100;

/// What unsealing gives: the plaintext, or the refusal.
type Outcome = Result<Vec<u8>, FormatError>;

fn auth(index: u32, last: bool) -> Outcome {
    Err(FormatError::ChunkAuthentication { index, last })
}

fn envelope() -> (Vec<u8>, sealed_format::DataKey, usize) {
    let (envelope, key) = seal(CHUNK as u32, &common::pattern(PLAINTEXT_LEN));
    let header = header_len(&envelope);
    (envelope, key, header)
}

#[test]
fn truncation_anywhere() {
    let (envelope, key, header) = envelope();
    assert_eq!(
        unseal(&envelope, &key).unwrap(),
        common::pattern(PLAINTEXT_LEN)
    );
    for cut in 0..envelope.len() {
        let result = unseal(&envelope[..cut], &key);
        if cut < header {
            assert_eq!(
                result,
                Err(FormatError::Truncated),
                "cut inside the header at {cut}"
            );
            continue;
        }
        let (index, into_chunk) = ((cut - header) / SEALED_CHUNK, (cut - header) % SEALED_CHUNK);
        if into_chunk < TAG_LEN {
            // At a chunk boundary, or too little left for a tag.
            assert_eq!(result, Err(FormatError::Truncated), "cut at {cut}");
        } else {
            // A shorter chunk is the final one: what is left of a cut chunk cannot
            // authenticate as a final chunk, which the error says may mean truncation.
            assert_eq!(result, auth(index as u32, true), "cut at {cut}");
        }
    }
}

#[test]
fn a_swapped_pair_of_chunks() {
    let (envelope, key, header) = envelope();
    for first in 0..2 {
        let mut swapped = envelope.clone();
        let a = header + first * SEALED_CHUNK;
        let b = a + SEALED_CHUNK;
        swapped[a..b + SEALED_CHUNK].rotate_left(SEALED_CHUNK);
        assert_eq!(unseal(&swapped, &key), auth(first as u32, false));
    }
}

#[test]
fn a_dropped_chunk() {
    let (envelope, key, header) = envelope();
    let mut dropped = envelope.clone();
    dropped.drain(header + SEALED_CHUNK..header + 2 * SEALED_CHUNK);
    assert_eq!(unseal(&dropped, &key), auth(1, false));
}

#[test]
fn an_appended_copy_of_a_chunk() {
    let (mut envelope, key, header) = envelope();
    let copy = envelope[header..header + SEALED_CHUNK].to_vec();
    envelope.extend_from_slice(&copy);
    // The final chunk is no longer shorter than a full one where it stands.
    assert_eq!(unseal(&envelope, &key), auth(3, false));
}

#[test]
fn an_appended_final_chunk_of_another_envelope() {
    let (mut envelope, key, _) = envelope();
    let (other, _) = seal(CHUNK as u32, b"another envelope");
    let other_final = &other[header_len(&other)..];
    envelope.extend_from_slice(other_final);
    assert_eq!(unseal(&envelope, &key), auth(3, true));
}

#[test]
fn a_flipped_bit_in_each_chunk_and_tag() {
    let (envelope, key, header) = envelope();
    let final_start = header + 3 * SEALED_CHUNK;
    for index in 0..4 {
        let start = header + index * SEALED_CHUNK;
        let end = if index == 3 {
            envelope.len()
        } else {
            start + SEALED_CHUNK
        };
        let last = start == final_start;
        for at in [
            start,
            (start + end) / 2,
            end - TAG_LEN - 1,
            end - TAG_LEN,
            end - 1,
        ] {
            for bit in [0, 7] {
                let mut flipped = envelope.clone();
                flipped[at] ^= 1 << bit;
                assert_eq!(
                    unseal(&flipped, &key),
                    auth(index as u32, last),
                    "byte {at}"
                );
            }
        }
    }
}

#[test]
fn a_wrong_key() {
    let (envelope, _, _) = envelope();
    let (other, _) = key_pair();
    assert_eq!(unseal(&envelope, &other), auth(0, false));
}

#[test]
fn a_wrong_missing_or_extra_context_entry() {
    let (envelope, key, _) = envelope();
    for wrong in [
        context(&[("app", "billing"), ("tenant", "acme-corp")]),
        context(&[("app", "billing")]),
        context(&[("app", "billing"), ("tenant", "acme"), ("region", "eu")]),
        context(&[("app", "billing"), ("Tenant", "acme")]),
        context(&[]),
    ] {
        assert_eq!(unseal_with(&envelope, &key, &wrong, 4096), auth(0, false));
    }
    assert!(unseal_with(&envelope, &key, &billing(), 4096).is_ok());
}

/// Byte offsets of the header fields of `common::header`: key name "disk", 40-byte
/// wrapped key.
mod at {
    pub const VERSION: usize = 4;
    pub const LENGTH: usize = 5;
    pub const KEK: usize = 9;
    pub const NAME_LEN: usize = 10;
    pub const NAME: usize = 12;
    pub const KEY_VERSION: usize = 16;
    pub const CHUNK_SIZE: usize = 20;
    pub const SCHEME: usize = 24;
    pub const PREFIX: usize = 25;
    pub const WRAPPED_LEN: usize = 32;
    pub const WRAPPED: usize = 34;
    pub const END: usize = 74;
}

fn with(envelope: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut changed = envelope.to_vec();
    changed[at..at + bytes.len()].copy_from_slice(bytes);
    changed
}

#[test]
fn every_header_field() {
    let (envelope, key, header) = envelope();
    assert_eq!(header, at::END);
    let body = (at::END - at::KEK) as u32;
    let cases: Vec<(&str, usize, Vec<u8>, Outcome)> = vec![
        ("magic", 0, b"KBSF".to_vec(), Err(FormatError::BadMagic)),
        ("magic", 0, b"kbse".to_vec(), Err(FormatError::BadMagic)),
        (
            "version 2",
            at::VERSION,
            vec![2],
            Err(FormatError::UnknownVersion(2)),
        ),
        (
            "version 0",
            at::VERSION,
            vec![0],
            Err(FormatError::UnknownVersion(0)),
        ),
        (
            "length + 1",
            at::LENGTH,
            (body + 1).to_be_bytes().to_vec(),
            Err(FormatError::HeaderLengthMismatch { declared: body + 1 }),
        ),
        (
            "length - 1",
            at::LENGTH,
            (body - 1).to_be_bytes().to_vec(),
            Err(FormatError::HeaderLengthMismatch { declared: body - 1 }),
        ),
        (
            "length 0",
            at::LENGTH,
            0u32.to_be_bytes().to_vec(),
            Err(FormatError::HeaderLengthMismatch { declared: 0 }),
        ),
        (
            "length 70001",
            at::LENGTH,
            70_001u32.to_be_bytes().to_vec(),
            Err(FormatError::HeaderTooLong(70_001)),
        ),
        (
            "length max",
            at::LENGTH,
            u32::MAX.to_be_bytes().to_vec(),
            Err(FormatError::HeaderTooLong(u32::MAX)),
        ),
        (
            "kek 0",
            at::KEK,
            vec![0],
            Err(FormatError::UnknownKekKind(0)),
        ),
        (
            "kek 4",
            at::KEK,
            vec![4],
            Err(FormatError::UnknownKekKind(4)),
        ),
        // The wrapping (KEK kind, key version, wrapped key) is authenticated by the
        // key-encryption key when the data key is unwrapped, not by the chunks: with the
        // same data key, the payload still opens (that is what Rewrap relies on).
        (
            "kek TPM",
            at::KEK,
            vec![2],
            Ok(common::pattern(PLAINTEXT_LEN)),
        ),
        (
            "name length 0",
            at::NAME_LEN,
            vec![0, 0],
            Err(FormatError::InvalidKeyName(KeyNameProblem::Empty)),
        ),
        (
            "name length 257",
            at::NAME_LEN,
            vec![1, 1],
            Err(FormatError::InvalidKeyName(KeyNameProblem::TooLong)),
        ),
        (
            "name length 256",
            at::NAME_LEN,
            vec![1, 0],
            Err(FormatError::HeaderLengthMismatch { declared: body }),
        ),
        // "disk\0", then every later field shifted by one byte.
        (
            "name length 5",
            at::NAME_LEN,
            vec![0, 5],
            Err(FormatError::InvalidChunkSize(0x0004_0001)),
        ),
        (
            "name not UTF-8",
            at::NAME + 1,
            vec![0xff],
            Err(FormatError::InvalidKeyName(KeyNameProblem::NotUtf8)),
        ),
        ("name disc", at::NAME + 3, b"c".to_vec(), auth(0, false)),
        (
            "key version 0",
            at::KEY_VERSION,
            vec![0, 0, 0, 0],
            Err(FormatError::InvalidKeyVersion),
        ),
        (
            "key version 4",
            at::KEY_VERSION,
            vec![0, 0, 0, 4],
            Ok(common::pattern(PLAINTEXT_LEN)),
        ),
        (
            "chunk size 2048",
            at::CHUNK_SIZE,
            2048u32.to_be_bytes().to_vec(),
            auth(0, false),
        ),
        (
            "chunk size 1025",
            at::CHUNK_SIZE,
            1025u32.to_be_bytes().to_vec(),
            Err(FormatError::InvalidChunkSize(1025)),
        ),
        (
            "chunk size 512",
            at::CHUNK_SIZE,
            512u32.to_be_bytes().to_vec(),
            Err(FormatError::InvalidChunkSize(512)),
        ),
        (
            "chunk size 0",
            at::CHUNK_SIZE,
            0u32.to_be_bytes().to_vec(),
            Err(FormatError::InvalidChunkSize(0)),
        ),
        (
            "chunk size 32 MiB",
            at::CHUNK_SIZE,
            (32u32 << 20).to_be_bytes().to_vec(),
            Err(FormatError::InvalidChunkSize(32 << 20)),
        ),
        (
            "nonce scheme 2",
            at::SCHEME,
            vec![2],
            Err(FormatError::UnknownNonceScheme(2)),
        ),
        (
            "nonce scheme 0",
            at::SCHEME,
            vec![0],
            Err(FormatError::UnknownNonceScheme(0)),
        ),
        (
            "nonce prefix",
            at::PREFIX + 6,
            vec![envelope[at::PREFIX + 6] ^ 0x80],
            auth(0, false),
        ),
        (
            "wrapped length 0",
            at::WRAPPED_LEN,
            vec![0, 0],
            Err(FormatError::WrappedKeyLength(0)),
        ),
        (
            "wrapped length 41",
            at::WRAPPED_LEN,
            vec![0, 41],
            Err(FormatError::HeaderLengthMismatch { declared: body }),
        ),
        (
            "wrapped length 39",
            at::WRAPPED_LEN,
            vec![0, 39],
            Err(FormatError::HeaderLengthMismatch { declared: body }),
        ),
        (
            "wrapped key",
            at::WRAPPED + 39,
            vec![0xAB],
            Ok(common::pattern(PLAINTEXT_LEN)),
        ),
    ];
    for (field, offset, bytes, expected) in cases {
        assert_eq!(
            unseal(&with(&envelope, offset, &bytes), &key),
            expected,
            "{field}"
        );
    }
}

#[test]
fn every_bit_of_the_header_matters_but_the_wrapping() {
    let (envelope, key, header) = envelope();
    let wrapping = |at: usize| {
        at == at::KEK || (at::KEY_VERSION..at::CHUNK_SIZE).contains(&at) || at >= at::WRAPPED
    };
    for at in (0..header).filter(|&at| !wrapping(at)) {
        for bit in 0..8 {
            let mut flipped = envelope.clone();
            flipped[at] ^= 1 << bit;
            assert!(unseal(&flipped, &key).is_err(), "bit {bit} of byte {at}");
        }
    }
}

#[test]
fn a_rewrapped_header_opens_the_same_payload_and_only_with_the_same_data_key() {
    let (envelope, key, header_end) = envelope();
    let (header, _) = sealed_format::Header::parse(&envelope).unwrap();
    let newer = header
        .rewrapped(header.kek(), header.key_version() + 1, vec![0x55; 40])
        .unwrap();
    let mut rewrapped = newer.encode();
    rewrapped.extend_from_slice(&envelope[header_end..]);
    assert_eq!(
        unseal(&rewrapped, &key).unwrap(),
        common::pattern(PLAINTEXT_LEN)
    );
    let (other, _) = key_pair();
    assert_eq!(unseal(&rewrapped, &other), auth(0, false));
}
